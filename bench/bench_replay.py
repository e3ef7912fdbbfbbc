"""Replay cost per history size, and the workflow-cache size it implies.

Why: a release evicted from the worker's workflow cache is rebuilt on its next workflow task
(an approval, a reminder, an abort) by creating a fresh sandboxed instance and replaying its
whole history. That cost is what turned 10,000 waiting releases into a cliff (issue 18). This
benchmark measures it on real histories, so the cache size and the sandbox settings are picked
from figures instead of guessed.

1. On a real dev server with a real worker, releases wait at a gate that never closes
   (`required` above the directory's size) after N accepted approvals each (N = the sizes):
   their histories grow with N like a release that collects attempts for days.
2. Each history is replayed `--rounds` times with the Temporal `Replayer` (one replayer per
   runner, histories streamed through it like a worker's cache misses), alternating between
   * the sandbox as it was before issue 18 (SDK defaults + cryptography/jwt/yaml), the same-run
     baseline, and
   * the strict sandbox (`SIGNOFF_WORKFLOW_SANDBOX=strict`: the SDK sandbox with this round's
     passthrough list, re-importing the workflow definitions per instance), and
   * `shared`, what the worker runs by default (no module executed again per instance), and
   * `sdk_converter`: `shared` on the SDK's pydantic converter instead of signoff's
     (signoff/converter.py, one type adapter per type for the process), its same-run baseline.
   Medians per size, and a least-squares fit `ms = instance + per_event × events` per runner.
3. Memory per cached release: the worker holds `--cached` more waiting releases (cache large
   enough for all), RSS before and after, per release.
4. The cache size: as many releases as fit in `--cache-budget-mib` (default 512 MiB, half the
   1 GiB worker budget of issue 18), so every waiting release up to that count is answered
   from memory, and beyond it each miss costs the measured replay.

    python bench/bench_replay.py [--quick] [--sizes 0,8,24,48] [--rounds R] [--cached C]

Sizes stay below ~70 approvals: the gate's directory then holds that many approvers, and the
`SignoffAwaiting` search attribute listing them all would pass Temporal's 2 KiB limit.

Writes bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Deadline, bounded, dev_server, gated_spec, isolate_env, ratio, write_directory, write_result  # noqa: E402
from bench.bench_capacity import proc_memory  # noqa: E402

CACHE_BUDGET_MIB = 512


def runner_before() -> Any:
    """The sandbox before issue 18: SDK defaults plus the three modules gates need shared."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "jwt", "yaml"))


def runners() -> dict[str, tuple[Any, Any]]:
    """name → (workflow runner, data converter). `sdk_converter` is the default runner on the
    SDK's own pydantic converter (a type adapter built per payload), the same-run baseline of
    signoff's converter (signoff/converter.py); `before` is issue 18's starting point, so it has
    the SDK converter too."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from signoff.converter import data_converter
    from workers.worker import workflow_runner

    return {
        "before": (runner_before(), pydantic_data_converter),
        "strict": (workflow_runner("strict"), data_converter),
        "shared": (workflow_runner("shared"), data_converter),
        "sdk_converter": (workflow_runner("shared"), pydantic_data_converter),
    }


async def wait_at_gate(sc: Any, release_id: str, deadline: Deadline) -> None:
    while True:
        status = await sc.status(release_id)
        if status.phase.value == "awaiting_approval" and status.gates and status.gates[0].state == "open":
            return
        if status.phase.is_final or deadline.expired:
            raise SystemExit(f"benchmark release {release_id} did not wait at its gate ({status.phase.value}: {status.reason})")
        await asyncio.sleep(0.05)


async def grown_history(sc: Any, approvers: list[str], n: int, deadline: Deadline) -> Any:
    """A release at its gate after `n` accepted approvals: its history, still running."""
    from signoff.models import ApprovalAttempt
    from tests.helpers import DIGEST_A

    rid = f"bench-replay-{n}-{uuid.uuid4().hex[:6]}"
    await sc.start_release(gated_spec(required=len(approvers) + 1, timeout="P7D"), release_id=rid)
    await wait_at_gate(sc, rid, deadline)
    for who in approvers[:n]:
        result = await bounded(sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A, reason="bench")), 60, "one approval")
        if not result.accepted:
            raise SystemExit(f"approval by {who} on {rid} was refused: {result.reason}")
    return await sc.handle(rid).fetch_history()


async def replay_times(runner: Any, converter: Any, history: Any, rounds: int) -> list[float]:
    """Seconds per replay of `history`, streamed `rounds + 1` times through one Replayer (the
    first is warm-up: the replayer's own start, not a cache miss)."""
    from temporalio.worker import Replayer

    from workers.registry import all_workflows

    replayer = Replayer(workflows=all_workflows(), data_converter=converter, workflow_runner=runner)

    async def copies() -> AsyncIterator[Any]:
        for _ in range(rounds + 1):
            yield history

    times: list[float] = []
    mark = time.perf_counter()
    async with replayer.workflow_replay_iterator(copies()) as results:
        async for result in results:
            now = time.perf_counter()
            times.append(now - mark)
            mark = now
            if result.replay_failure is not None:
                raise SystemExit(f"replay failed: {result.replay_failure!r}")
    return times[1:]


def fit(points: list[tuple[int, float]]) -> dict[str, float]:
    """Least squares ms = instance + per_event × events."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0
    return {"instance_ms": round(my - slope * mx, 2), "per_event_ms": round(slope, 4)}


async def memory_per_release(sc: Any, count: int, deadline: Deadline) -> dict[str, float]:
    """RSS growth (this process runs the worker) per release held waiting in the cache."""
    import os

    gc.collect()
    before = proc_memory(os.getpid()).get("VmRSS", 0.0)
    ids = [f"bench-replay-mem-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    spec = gated_spec(timeout="P7D")
    sem = asyncio.Semaphore(16)

    async def one(rid: str) -> None:
        async with sem:
            await sc.start_release(spec, release_id=rid)
            await wait_at_gate(sc, rid, deadline)

    await asyncio.gather(*(one(r) for r in ids))
    gc.collect()
    after = proc_memory(os.getpid()).get("VmRSS", 0.0)
    return {"releases": count, "rss_before_mib": before, "rss_after_mib": after, "kib_per_release": round((after - before) * 1024 / count, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from workers.worker import build_worker

    deadline = Deadline(args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="bench-replay-")
    approvers = [f"approver{i:03d}@example.com" for i in range(max(args.sizes))]
    directory = str(Path(tmp.name) / "approvers.yaml")
    write_directory(directory, approvers)
    isolate_env(str(Path(tmp.name) / "state"), directory_path=directory)
    settings = Settings.from_env()
    task_queue = f"bench-replay-{uuid.uuid4().hex[:8]}"

    histories: dict[int, Any] = {}
    async with dev_server() as env:
        async with build_worker(env.client, settings, task_queue=task_queue, max_cached_workflows=args.cached + len(args.sizes) + 10):
            sc = SignoffClient(env.client, settings=settings, task_queue=task_queue)
            for n in args.sizes:
                histories[n] = await grown_history(sc, approvers, n, deadline)
                print(f"  history with {n} approvals: {len(histories[n].events)} events", flush=True)
            memory = await memory_per_release(sc, args.cached, deadline)

    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in args.sizes} for name in runners()}
    for _ in range(args.passes):  # alternate runners so drift in machine load hits all of them
        for n, history in histories.items():
            for name, (runner, converter) in runners().items():
                samples[name][n].extend(await replay_times(runner, converter, history, args.rounds))
    tmp.cleanup()

    events = {n: len(h.events) for n, h in histories.items()}
    per_size = {
        name: {str(n): {"events": events[n], "median_ms": round(statistics.median(s) * 1000, 2), "n": len(s)} for n, s in by_size.items()}
        for name, by_size in samples.items()
    }
    fits = {name: fit([(events[n], statistics.median(s) * 1000) for n, s in by_size.items()]) for name, by_size in samples.items()}
    largest, smallest = str(max(args.sizes)), str(min(args.sizes))
    kib = memory["kib_per_release"]
    cache = pick_cache_size(kib, args.cache_budget_mib)
    return {
        "benchmark": "workflow replay (cache miss) time per history size: sandbox before issue 18 vs strict sandbox vs shared (the default)",
        "label": args.label,
        "sizes_approvals": args.sizes,
        "events": {str(n): e for n, e in events.items()},
        "replays_per_size_per_runner": args.rounds * args.passes,
        "median_ms": per_size,
        "fit": fits,
        "largest_history_ratio_shared_vs_before": ratio(per_size["shared"][largest]["median_ms"], per_size["before"][largest]["median_ms"]),
        "instance_ratio_shared_vs_before": ratio(fits["shared"]["instance_ms"], fits["before"]["instance_ms"]),
        "largest_history_ratio_shared_vs_strict": ratio(per_size["shared"][largest]["median_ms"], per_size["strict"][largest]["median_ms"]),
        "at_gate_ratio_converter_vs_sdk": ratio(per_size["shared"][smallest]["median_ms"], per_size["sdk_converter"][smallest]["median_ms"]),
        "largest_history_ratio_converter_vs_sdk": ratio(per_size["shared"][largest]["median_ms"], per_size["sdk_converter"][largest]["median_ms"]),
        "memory_per_cached_release": memory,
        "cache_budget_mib": args.cache_budget_mib,
        "recommended_max_cached_workflows": cache,
    }


def pick_cache_size(kib_per_release: float, budget_mib: int) -> int:
    """Releases that fit in the budget, rounded down to a thousand (at least 1,000, the SDK's own default)."""
    fits = int(budget_mib * 1024 / max(kib_per_release, 1.0))
    return max(1000, fits // 1000 * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description="replay time per history size; the workflow cache size it implies")
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--sizes", default=None, help="approvals per history, comma-separated (default 0,8,24,48; quick 0,8,24)")
    parser.add_argument("--rounds", type=int, default=None, help="replays per history per runner per pass (default 10, quick 4)")
    parser.add_argument("--passes", type=int, default=2, help="alternating passes over the runners")
    parser.add_argument("--cached", type=int, default=None, help="extra waiting releases for the memory figure (default 300, quick 60)")
    parser.add_argument("--cache-budget-mib", type=int, default=CACHE_BUDGET_MIB)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--label", default="signoff as committed")
    parser.add_argument("--out", default=None, help="results file (default bench/results/replay.json)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in (args.sizes or ("0,8,24" if args.quick else "0,8,24,48")).split(",")]
    args.rounds = args.rounds or (4 if args.quick else 10)
    args.cached = args.cached if args.cached is not None else (60 if args.quick else 300)

    result = asyncio.run(run(args))
    print(f"replay per cache miss ({result['replays_per_size_per_runner']} replays per size and runner, {result['label']}):")
    for n in args.sizes:
        row = {name: result["median_ms"][name][str(n)]["median_ms"] for name in result["median_ms"]}
        print(f"  {n:>4} approvals ({result['events'][str(n)]:>5} events): before {row['before']:8.2f} ms   strict {row['strict']:8.2f} ms   "
              f"shared {row['shared']:8.2f} ms   shared on the SDK's converter {row['sdk_converter']:8.2f} ms")
    for name, f in result["fit"].items():
        print(f"  fit {name:<11} instance {f['instance_ms']:7.2f} ms + {f['per_event_ms']:.4f} ms per event")
    mem = result["memory_per_cached_release"]
    print(f"  memory per cached waiting release: {mem['kib_per_release']} KiB ({mem['releases']} releases)")
    print(f"  shared/before: largest history {result['largest_history_ratio_shared_vs_before']}, instance {result['instance_ratio_shared_vs_before']}; shared/strict {result['largest_history_ratio_shared_vs_strict']}")
    print(f"  signoff's converter / the SDK's (shared runner): at the gate {result['at_gate_ratio_converter_vs_sdk']}, largest history {result['largest_history_ratio_converter_vs_sdk']}")
    print(f"  recommended max_cached_workflows ({result['cache_budget_mib']} MiB budget): {result['recommended_max_cached_workflows']}")
    write_result("replay", result, args.out)


if __name__ == "__main__":
    main()
