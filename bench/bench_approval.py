"""Approval round trip vs a bare Temporal Update round trip, same server, same run.

What is measured: `SignoffClient.submit_approval(ApprovalAttempt)` → `ApprovalResult` on real
releases waiting at a real gate (real ReleaseWorkflow, real activities, real dev server),
where every attempt is a genuine accepted approval: each release's gate needs one more approver
than the directory holds, so it never closes, and each attempt comes from a different
identity (Update ids dedupe (release, gate, identity, decision), so a repeated identity would be
answered from the server's cache and measure nothing).

Baseline, interleaved with it on the same worker: `execute_update` on a trivial workflow whose
Update handler appends to a list and returns (unique Update ids). Attempts alternate
signoff/bare so drift in machine load hits both.

    python bench/bench_approval.py [--quick] [--releases N] [--approvers K]

Target (issue 3): median ratio ≤ 1.5. Writes bench/results/approval.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    BareUpdateWorkflow,
    Deadline,
    Row,
    bounded,
    dev_server,
    gated_spec,
    isolate_env,
    noop_activity,
    ratio,
    summary_ms,
    write_directory,
    write_result,
)

TARGET_RATIO = 1.5


async def wait_awaiting(sc: Any, release_id: str, deadline: Deadline) -> None:
    while True:
        status = await sc.status(release_id)
        if status.phase.value == "awaiting_approval" and status.gates and status.gates[0].state == "open":
            return
        if status.phase.is_final:
            raise SystemExit(f"benchmark release {release_id} ended {status.phase.value}: {status.reason}")
        if deadline.expired:
            raise SystemExit(f"benchmark release {release_id} never reached its gate (still {status.phase.value})")
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from signoff.models import ApprovalAttempt
    from tests.helpers import DIGEST_A
    from workers.registry import all_activities, all_workflows
    from workers.worker import build_worker

    deadline = Deadline(args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="bench-approval-")
    approvers = [f"approver{i:03d}@example.com" for i in range(args.approvers)]
    directory = str(Path(tmp.name) / "approvers.yaml")
    write_directory(directory, approvers)
    isolate_env(str(Path(tmp.name) / "state"), directory_path=directory)
    settings = Settings.from_env()
    task_queue = f"bench-approval-{uuid.uuid4().hex[:8]}"

    async with dev_server() as env:
        client = env.client
        worker = build_worker(
            client,
            settings,
            task_queue=task_queue,
            workflows=[*all_workflows(), BareUpdateWorkflow],
            activities=[*all_activities(settings), noop_activity],
        )
        async with worker:
            sc = SignoffClient(client, settings=settings, task_queue=task_queue)
            spec = gated_spec(required=args.approvers + 1, timeout="P7D")  # never reaches quorum
            n_rel = args.releases + 1  # the first one is for warm-up
            release_ids = [f"bench-approval-{uuid.uuid4().hex[:8]}" for _ in range(n_rel)]
            for rid in release_ids:
                await sc.start_release(spec, release_id=rid)
            for rid in release_ids:
                await wait_awaiting(sc, rid, deadline)
            bare = [
                await client.start_workflow(BareUpdateWorkflow.run, id=f"bench-bare-update-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
                for _ in range(n_rel)
            ]

            # The plan hash each approver reviewed, as the Slack button, the Jira label and
            # `signoff approve --plan` carry it. (Without it the client first asks the release for
            # its current plan: one status query more.)
            plans = {rid: (await sc.status(rid)).plan_sha256 for rid in release_ids}

            async def ours(rid: str, who: str) -> float:
                attempt = ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A, plan=plans[rid], reason="bench")
                start = time.perf_counter()
                result = await sc.submit_approval(attempt)
                elapsed = time.perf_counter() - start
                if not (result.accepted and result.reason.startswith("approval recorded")):
                    raise SystemExit(f"approval by {who} on {rid} was not a real accept: {result.reason}")
                return elapsed

            async def baseline(handle: Any) -> float:
                start = time.perf_counter()
                await handle.execute_update(BareUpdateWorkflow.append, "x", id=f"bare-{uuid.uuid4().hex}")
                return time.perf_counter() - start

            # Warm-up (not counted): first Update on a cold cache, JIT-free but import/conn warm-up.
            for who in approvers[: min(3, len(approvers))]:
                await ours(release_ids[0], who)
                await baseline(bare[0])

            ours_s: list[float] = []
            bare_s: list[float] = []
            started = time.perf_counter()
            i = 0
            for k, who in enumerate(approvers):  # approver-major order spreads attempts across releases
                for r in range(1, n_rel):
                    if deadline.expired:
                        break
                    if i % 2 == 0:
                        ours_s.append(await bounded(ours(release_ids[r], who), 60, "one approval"))
                        bare_s.append(await bounded(baseline(bare[r]), 60, "one bare Update"))
                    else:
                        bare_s.append(await bounded(baseline(bare[r]), 60, "one bare Update"))
                        ours_s.append(await bounded(ours(release_ids[r], who), 60, "one approval"))
                    i += 1
            measuring = time.perf_counter() - started

            # Every attempt was a real, distinct approval: check the releases' own records.
            recorded = 0
            for rid in release_ids[1:]:
                status = await sc.status(rid)
                recorded += len(status.gates[0].approvals)
            for rid in release_ids:
                await sc.abort(rid, identity="dana@example.com", reason="benchmark finished")
            for h in bare:
                await h.signal(BareUpdateWorkflow.finish)

    tmp.cleanup()
    s_ours, s_bare = summary_ms(ours_s), summary_ms(bare_s)
    result = {
        "benchmark": "approval round trip (SignoffClient.submit_approval → ApprovalResult) vs bare Temporal Update round trip",
        "label": args.label,
        "releases": args.releases,
        "approvers_per_release": args.approvers,
        "attempts": len(ours_s),
        "approvals_recorded_by_workflows": recorded,
        "measuring_seconds": round(measuring, 2),
        "signoff_approval": s_ours,
        "bare_update": s_bare,
        "median_ratio": ratio(s_ours["median_ms"], s_bare["median_ms"]),
        "p99_ratio": ratio(s_ours["p99_ms"], s_bare["p99_ms"]),
        "target_median_ratio": TARGET_RATIO,
    }
    result["meets_target"] = result["median_ratio"] <= TARGET_RATIO
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="approval round trip vs bare Update round trip")
    parser.add_argument("--quick", action="store_true", help="fewer releases (about 40 samples)")
    parser.add_argument("--releases", type=int, default=None, help="releases waiting at a gate (default 30, quick 5)")
    parser.add_argument("--approvers", type=int, default=10, help="distinct approvers per release (each approves once)")
    parser.add_argument("--max-seconds", type=float, default=240, help="stop measuring after this long")
    parser.add_argument("--label", default="signoff as committed")
    parser.add_argument("--out", default=None, help="results file (default bench/results/approval.json)")
    args = parser.parse_args()
    if args.releases is None:
        args.releases = 5 if args.quick else 30
    if args.quick:
        args.max_seconds = min(args.max_seconds, 90)

    result = asyncio.run(run(args))
    if result["approvals_recorded_by_workflows"] != result["attempts"]:
        raise SystemExit(f"{result['attempts']} approvals sent but {result['approvals_recorded_by_workflows']} recorded")
    print(f"approval round trip: {result['attempts']} accepted approvals on {args.releases} releases vs as many bare Updates ({result['label']})")
    print(Row("signoff submit_approval → ApprovalResult", result["signoff_approval"]).line())
    print(Row("bare Temporal Update (baseline)", result["bare_update"]).line())
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  median ratio {result['median_ratio']:.2f} (target ≤ {TARGET_RATIO}: {verdict})   p99 ratio {result['p99_ratio']:.2f}")
    write_result("approval", result, args.out)


if __name__ == "__main__":
    main()
