"""Suspend → every in-flight release of the agent stopped, vs aborting each one, same run.

What is measured: N releases of the agent `release-bot` wait at a gate (real ReleaseWorkflow,
real activities, real dev server); one signed `agent suspend` (AgentControlWorkflow: verify,
policy, standing, one visibility query, a signal to each release, each release re-checks the
standing and aborts, closes its gate and writes its records) — time from the request until
every release's workflow has *completed* (records written), so "stopped" is the strict reading.

Baseline, in the same run on the same worker: N releases of the same kind stopped the way one
would without suspension, one signed `release abort` Update per release from on-call, sent
concurrently — time until every one has completed. Rounds alternate suspend/baseline.

    python bench/bench_suspend.py [--quick] [--releases N] [--rounds R]

Target (issue 16): every in-flight release stopped within 10 s for 100 in-flight releases.
Writes bench/results/suspend.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Deadline, bounded, dev_server, isolate_env, ratio, write_result  # noqa: E402

TARGET_SECONDS = 10.0
GATE = {"name": "staging", "required": 2, "from_groups": ["release-managers"], "channels": ["cli"], "timeout": "P7D"}


async def in_flight(sc: Any, n: int, tag: str, deadline: Deadline) -> list[str]:
    """Start n agent releases and wait until every one waits at its gate."""
    from tests.helpers import release_spec

    spec = release_spec(agent={"id": "release-bot", "model": "bench"}, gates=[GATE])
    ids = [f"bench-{tag}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    gate = asyncio.Semaphore(16)

    async def start(rid: str) -> None:
        async with gate:
            await sc.start_release(spec, release_id=rid, base_dir=REPO)

    await asyncio.gather(*(start(r) for r in ids))
    pending = set(ids)
    while pending:
        if deadline.expired:
            raise SystemExit(f"benchmark stopped: {len(pending)} release(s) never reached their gate")
        statuses = await asyncio.gather(*(sc.status(r) for r in list(pending)[:32]))
        for s in statuses:
            if s.phase.is_final:
                raise SystemExit(f"benchmark release {s.release_id} ended {s.phase.value}: {s.reason}")
            if s.phase.value == "awaiting_approval" and s.gates and s.gates[0].state == "open":
                pending.discard(s.release_id)
        await asyncio.sleep(0.1)
    return ids


async def all_completed(client: Any, ids: list[str]) -> list[str]:
    from signoff.models import ReleaseStatus

    results = await asyncio.gather(*(client.get_workflow_handle(r, result_type=ReleaseStatus).result() for r in ids))
    return [s.phase.value for s in results]


async def suspend_round(sc: Any, client: Any, n: int, deadline: Deadline) -> float:
    ids = await in_flight(sc, n, "suspend", deadline)
    start = time.perf_counter()
    result = await sc.control_agent("release-bot", "suspend", identity="carol@example.com", reason="benchmark")
    phases = await bounded(all_completed(client, ids), 300, "the suspended releases ending")
    elapsed = time.perf_counter() - start
    if not set(ids) <= set(result.stopping) or set(phases) != {"aborted"}:
        raise SystemExit(f"suspension did not stop every release: {sorted(set(phases))}, {len(result.stopping)} told")
    await sc.control_agent("release-bot", "resume", identity="carol@example.com", reason="benchmark round over")
    return elapsed


async def abort_round(sc: Any, client: Any, n: int, deadline: Deadline) -> float:
    ids = await in_flight(sc, n, "abort", deadline)
    start = time.perf_counter()
    await asyncio.gather(*(sc.abort(r, identity="carol@example.com", reason="benchmark") for r in ids))
    phases = await bounded(all_completed(client, ids), 300, "the aborted releases ending")
    elapsed = time.perf_counter() - start
    if set(phases) != {"aborted"}:
        raise SystemExit(f"the aborts did not stop every release: {sorted(set(phases))}")
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from workers.worker import build_worker

    deadline = Deadline(args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="bench-suspend-")
    isolate_env(str(Path(tmp.name) / "state"))
    settings = Settings.from_env()
    task_queue = f"bench-suspend-{uuid.uuid4().hex[:8]}"
    async with dev_server() as env:
        client = env.client
        async with build_worker(client, settings, task_queue=task_queue):
            sc = SignoffClient(client, settings=settings, task_queue=task_queue)
            await suspend_round(sc, client, 2, deadline)  # warm-up, not counted
            suspend_s: list[float] = []
            abort_s: list[float] = []
            for k in range(args.rounds):
                order = (suspend_round, abort_round) if k % 2 == 0 else (abort_round, suspend_round)
                for fn in order:
                    elapsed = await fn(sc, client, args.releases, deadline)
                    (suspend_s if fn is suspend_round else abort_s).append(elapsed)
                    print(f"  round {k + 1}: {fn.__name__.removesuffix('_round'):<8} {args.releases} releases stopped in {elapsed:6.2f} s", flush=True)
    tmp.cleanup()
    suspend_median, abort_median = statistics.median(suspend_s), statistics.median(abort_s)
    return {
        "releases": args.releases,
        "rounds": args.rounds,
        "suspend_seconds": [round(s, 3) for s in suspend_s],
        "abort_each_seconds": [round(s, 3) for s in abort_s],
        "suspend_median_s": round(suspend_median, 3),
        "abort_each_median_s": round(abort_median, 3),
        "ratio_suspend_to_abort_each": ratio(suspend_median, abort_median),
        "target_s": TARGET_SECONDS,
        "target_met": suspend_median <= TARGET_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 releases, 1 round")
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.releases, args.rounds = min(args.releases, 20), 1
    result = asyncio.run(run(args))
    print(
        f"suspend → {result['releases']} releases stopped: median {result['suspend_median_s']:.2f} s "
        f"(target ≤ {TARGET_SECONDS:.0f} s: {'met' if result['target_met'] else 'NOT met'}); "
        f"one abort each: median {result['abort_each_median_s']:.2f} s; ratio {result['ratio_suspend_to_abort_each']}"
    )
    write_result("suspend_quick" if args.quick else "suspend", result, args.out)


if __name__ == "__main__":
    main()
