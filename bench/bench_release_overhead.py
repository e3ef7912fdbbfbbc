"""Release overhead: a release whose steps do nothing vs a bare workflow running the same
activities, same server, same run.

The release: artifact digest given (no build), no tests, no provenance, docs-only paths (the
policy asks for no gate), deploy target `command` with `true` — so every remaining cost is
signoff's orchestration: the policy evaluation, reading the current deployment, the deploy,
the signed decision records, search-attribute upserts, status bookkeeping.

The baseline: a bare workflow that runs, one after another, as many no-op activities and no-op
local activities as the release actually ran — counted from the release's own history
(ActivityTaskScheduled events, and local-activity markers) — so the ratio is what signoff's
logic and real step work cost on top of the Temporal activity round trips it needs anyway.
A stricter second baseline runs the same activities as two concurrent chains (the steps, and
the decision records, which signoff appends from a background outbox while the steps go on),
so the release cannot look cheap merely because it overlaps work the sequential baseline
does not. Runs rotate release/bare/two-chain so drift in machine load hits all three.

    python bench/bench_release_overhead.py [--quick] [--runs N]

Target (issue 10): median wall-time ratio ≤ 1.3. Writes bench/results/release_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    BareActivitiesWorkflow,
    Deadline,
    Row,
    bounded,
    dev_server,
    isolate_env,
    noop_activity,
    ratio,
    release_spec,
    summary_ms,
    write_result,
)

TARGET_RATIO = 1.3


async def activities_of(handle: Any) -> tuple[Counter[str], int]:
    """Regular activities by type, and the number of local activities, from the history."""
    from temporalio.api.enums.v1 import EventType

    regular: Counter[str] = Counter()
    local = 0
    history = await handle.fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            regular[event.activity_task_scheduled_event_attributes.activity_type.name] += 1
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and "local_activity" in event.marker_recorded_event_attributes.marker_name:
            local += 1
    return regular, local


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from workers.registry import all_activities, all_workflows
    from workers.worker import build_worker

    deadline = Deadline(args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="bench-overhead-")
    isolate_env(str(Path(tmp.name) / "state"))
    settings = Settings.from_env()
    task_queue = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    spec = release_spec()

    async with dev_server() as env:
        client = env.client
        worker = build_worker(
            client,
            settings,
            task_queue=task_queue,
            workflows=[*all_workflows(), BareActivitiesWorkflow],
            activities=[*all_activities(settings), noop_activity],
        )
        async with worker:
            sc = SignoffClient(client, settings=settings, task_queue=task_queue)

            async def release() -> tuple[float, str]:
                rid = f"bench-noop-{uuid.uuid4().hex[:10]}"
                start = time.perf_counter()
                await sc.start_release(spec, release_id=rid)
                await sc.handle(rid).result()
                elapsed = time.perf_counter() - start
                return elapsed, rid

            async def bare(counts: list[int]) -> float:
                start = time.perf_counter()
                handle = await client.start_workflow(
                    BareActivitiesWorkflow.run, counts, id=f"bench-bare-acts-{uuid.uuid4().hex[:10]}", task_queue=task_queue
                )
                await handle.result()
                return time.perf_counter() - start

            # Calibrate: what a no-op release actually runs (and warm up both paths).
            _, rid = await bounded(release(), 120, "the first no-op release")
            status = await sc.status(rid)
            if status.phase.value != "succeeded" or status.gates:
                raise SystemExit(f"the no-op release ended {status.phase.value} with gates {status.gates}: {status.reason}")
            regular, local = await activities_of(sc.handle(rid))
            counts = [sum(regular.values()), local]
            records = regular.get("append_decision", 0) + regular.get("append_decisions", 0)  # single and batched appends
            two_chains = [counts[0] - records, local, records]  # steps | decision records, concurrently
            await bounded(bare(counts), 120, "the first bare workflow")
            await bounded(bare(two_chains), 120, "the first two-chain bare workflow")

            ours_s: list[float] = []
            bare_s: list[float] = []
            chains_s: list[float] = []
            for i in range(args.runs):
                if deadline.expired:
                    break
                order = ["ours", "bare", "chains"]
                order = order[i % 3 :] + order[: i % 3]  # rotate so load drift hits all three
                for which in order:
                    if which == "ours":
                        t, rid = await bounded(release(), 120, "a no-op release")
                        ours_s.append(t)
                    elif which == "bare":
                        bare_s.append(await bounded(bare(counts), 120, "a bare workflow"))
                    else:
                        chains_s.append(await bounded(bare(two_chains), 120, "a two-chain bare workflow"))
            last_regular, last_local = await activities_of(sc.handle(rid))
            final = await sc.status(rid)

    tmp.cleanup()
    s_ours, s_bare, s_chains = summary_ms(ours_s), summary_ms(bare_s), summary_ms(chains_s)
    result = {
        "benchmark": "release overhead: no-op release vs bare workflow running the same number of no-op activities",
        "runs": len(ours_s),
        "release_activities": {"regular_by_type": dict(sorted(regular.items())), "local": local, "total": counts[0] + counts[1]},
        "last_release": {"phase": final.phase.value, "regular": sum(last_regular.values()), "local": last_local},
        "baseline_activities": {"regular": counts[0], "local": counts[1]},
        "signoff_release": s_ours,
        "bare_workflow": s_bare,
        "median_ratio": ratio(s_ours["median_ms"], s_bare["median_ms"]),
        "p99_ratio": ratio(s_ours["p99_ms"], s_bare["p99_ms"]),
        "bare_two_chains": {"steps_chain": two_chains[0], "local": two_chains[1], "records_chain": two_chains[2], **s_chains},
        "median_ratio_vs_two_chains": ratio(s_ours["median_ms"], s_chains["median_ms"]),
        "target_median_ratio": TARGET_RATIO,
    }
    result["meets_target"] = result["median_ratio"] <= TARGET_RATIO
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="no-op release vs bare workflow with the same activities")
    parser.add_argument("--quick", action="store_true", help="8 runs each instead of 30")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--out", default=None, help="results file (default bench/results/release_overhead.json)")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 8 if args.quick else 30
    result = asyncio.run(run(args))
    acts = result["release_activities"]
    print(f"release overhead over {result['runs']} runs each; a no-op release ran {acts['total']} activities "
          f"({acts['regular_by_type']}, local {acts['local']})")
    print(Row("signoff no-op release (start → result)", result["signoff_release"]).line())
    print(Row(f"bare workflow, {acts['total']} no-op activities (baseline)", result["bare_workflow"]).line())
    chains = result["bare_two_chains"]
    print(Row(f"bare, {chains['steps_chain']} steps ‖ {chains['records_chain']} records (stricter)", chains).line())
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  median ratio {result['median_ratio']:.2f} (target ≤ {TARGET_RATIO}: {verdict})   p99 ratio {result['p99_ratio']:.2f}"
          f"   vs the two-chain floor {result['median_ratio_vs_two_chains']:.2f}")
    write_result("release_overhead", result, args.out)


if __name__ == "__main__":
    main()
