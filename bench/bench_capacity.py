"""Capacity: N releases waiting at gates on one worker — start time, worker RSS, drain time.

Everything is real: the Temporal dev server (in-memory SQLite), one `signoff worker` process
(a subprocess, so its memory can be read from /proc/<pid>/status and nothing of the benchmark
driver counts against it), the default workflow cache, every real activity (policy, directory,
deploy via `true`, the signed audit log; Slack and Jira are off as in a fresh install).

1. start N gated releases (gate `production`: 2 of release-managers) with bounded concurrency,
   at most --max-starting (400) on their way to the gate at once as when releases arrive over a
   day, and wait until visibility counts all N in phase `awaiting_approval`;
2. read the worker's RSS (VmRSS) once all are waiting — target ≤ 1 GiB — and its peak (VmHWM);
3. approve every release (alice and bob, 2 Updates each, bounded concurrency) and wait until
   visibility counts all N `succeeded`; every Update must be a real accept.

Approvers (`--concurrency`, default 8) are a closed loop: each sends its next approval when the
last one is answered. Eight keep the worker and the dev server busy on this 2-core machine (0.85
of a core each through a 10,000 drain), and 32 drained no faster (6.40 vs 7.64 releases/s at
10,000): approvers beyond that only wait in line, and the mean round trip is then approvers ÷
approvals per second (Little's law), which the benchmark prints beside the measured one.

Baseline, same run: the worker's RSS when idle (connected, nothing started), and the
approval round trip of the first releases before load.

    python bench/bench_capacity.py [--quick] [--releases N] [--compare SMALL] [--baseline] [--concurrency C] [--max-minutes M]
                                   [--server-history-cache ENTRIES] [--cache N] [--bare-park]

`--compare SMALL` also runs the whole benchmark at SMALL releases (its own server and worker,
same invocation, after the run at N), and reports the drain-rate ratio N / SMALL (issue 18: ≥ 0.8, so
10,000 waiting releases drain as fast as 500) beside the approval p99 under load (≤ 2 s).

Bounded in time: when the start phase would run past its share of --max-minutes, the
benchmark stops starting, measures at the size it reached and extrapolates linearly — clearly
labelled as such in the output and the JSON. Writes bench/results/capacity.json.

`--baseline` then runs bench/bare.py at N: workflows with the same activities and local
activities before and after the same two-approval gate as the warm-up release's history, and
nothing else, on their own server and worker (same cache size): signoff's drain rate over that
one is the second ratio of issue 18 (≥ 0.67).

`--server-history-cache ENTRIES` sizes the Temporal server's history caches (mutable state and
events, 512 entries by default) on every server of the run: with more open workflows than that, each
Update to a release the server no longer holds is read back from its database first.

`--cache N` runs signoff's worker and the bare one with a workflow cache of N
(SIGNOFF_MAX_CACHED_WORKFLOWS) instead of the default; bench/bench_cache_miss.py uses it to price
one cache miss. `--bare-park` makes the bare workflows continue-as-new when they reach the gate,
so each waits in a run whose history is a handful of events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Deadline, dev_server, gated_spec, isolate_env, summary_ms, write_result  # noqa: E402
from workers.gc_stats import read as gc_read  # noqa: E402

RSS_TARGET_MIB = 1024
DRAIN_RATIO_TARGET = 0.8
APPROVAL_P99_TARGET_MS = 2000.0
BARE_RATIO_TARGET = 0.67


def server_args(args: argparse.Namespace) -> list[str]:
    """The dev server's history caches sized for the workflows in flight (`--server-history-cache`),
    or Temporal's defaults (512 entries per shard; the dev server has one shard). They are the
    Temporal server's own settings (`history.cacheMaxSize`, `history.eventsCacheMaxSize`), which a
    deployment sizes for its open workflows; every server of one invocation gets the same ones."""
    n = args.server_history_cache
    if not n:
        return []
    return ["--dynamic-config-value", f"history.cacheMaxSize={n}", "--dynamic-config-value", f"history.eventsCacheMaxSize={n}"]


def cache_env(args: argparse.Namespace) -> dict[str, str]:
    """`--cache N`: the workflow cache of signoff's worker and the bare one (SIGNOFF_MAX_CACHED_WORKFLOWS);
    unset, both run the worker's default."""
    return {"SIGNOFF_MAX_CACHED_WORKFLOWS": str(args.cache)} if args.cache is not None else {}


def refuse_empty_cache(n: int, flag: str) -> None:
    """A workflow cache below 1 is refused in one sentence (bench_capacity --cache, bench_cache_miss --small)."""
    if n < 1:
        raise SystemExit(f"{flag} must be at least 1 (got {n}): a worker that caches nothing cannot finish a release whose local activity outlasts a task.")


def worker_command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "signoff"  # the real entry point, not a pyenv shim
    if script.exists():
        return [str(script), "worker"]
    return [sys.executable, "-c", "from signoff.cli import main; main()", "worker"]


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used so far (/proc/PID/stat), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def dev_server_pid() -> int | None:
    """The Temporal dev server this process started (a child running `server start-dev`)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError):
            continue
        if ppid == me and b"start-dev" in cmd:
            return int(entry)
    return None


class CpuMeter:
    """CPU seconds the worker and the dev server spend between start() and stop(), per release:
    where a drain's time goes when the machine is saturated (the two share its cores)."""

    def __init__(self, worker_pid: int, gc_file: Path | None = None) -> None:
        self.pids = {"worker": worker_pid, "server": dev_server_pid()}
        self.gc_file = gc_file
        self.at: dict[str, float | None] = {}
        self.gc_at: dict[str, Any] | None = None
        self.wall = 0.0

    def start(self) -> None:
        self.at = {k: cpu_seconds(pid) for k, pid in self.pids.items()}
        self.gc_at = gc_read(self.gc_file) if self.gc_file else None
        self.wall = time.perf_counter()

    def stop(self, releases: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        out: dict[str, Any] = {"wall_seconds": round(wall, 1)}
        for k, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.at.get(k)
            if now is None or then is None:
                out[k] = None
                continue
            used = now - then
            out[k] = {"cpu_seconds": round(used, 1), "cores_busy": round(used / wall, 2) if wall else None,
                      "cpu_ms_per_release": round(used * 1000 / releases, 1) if releases else None}
        if self.gc_file:
            time.sleep(2.5)  # the worker rewrites its collector figures every 2 s (the drain is over: it is idle)
        gc_now = gc_read(self.gc_file) if self.gc_file else None
        if gc_now and self.gc_at:
            spent = sum(gc_now["seconds"]) - sum(self.gc_at["seconds"])
            out["worker_gc"] = {
                "seconds": round(spent, 2),
                "ms_per_release": round(spent * 1000 / releases, 1) if releases else None,
                "full_collections": gc_now["collections"][2] - self.gc_at["collections"][2],
                "full_collection_seconds": round(gc_now["seconds"][2] - self.gc_at["seconds"][2], 2),
                "longest_pause_seconds_so_far": max(gc_now["longest_seconds"]),
            }
        return out


def per_release(drain_cpu: dict[str, Any]) -> str:
    """One line of a CpuMeter's figures: worker (and its collector) and dev server, per release."""
    worker, gc_, server = (drain_cpu.get(k) or {} for k in ("worker", "worker_gc", "server"))
    return f"worker {worker.get('cpu_ms_per_release')} ms (collector {gc_.get('ms_per_release')} ms), dev server {server.get('cpu_ms_per_release')} ms"


async def explain_slow(client: Any, seconds: float, rid: str, who: str, sent_at: float) -> dict[str, Any]:
    """A slow approval and its release's history around it: which workflow tasks, activities
    and markers stood between the Update's arrival and its completion."""
    from temporalio.api.enums.v1 import EventType

    events = []
    async for event in client.get_workflow_handle(rid).fetch_history_events():
        at = event.event_time.seconds + event.event_time.nanos / 1e9 - sent_at
        if -1.0 <= at <= seconds + 1.0:
            events.append(f"{at:+.2f}s {EventType.Name(event.event_type).removeprefix('EVENT_TYPE_')}")
    return {"release": rid, "by": who, "seconds": round(seconds, 2), "events": events[:40]}


async def count(client: Any, query: str) -> int:
    return (await client.count_workflows(query)).count


async def wait_count(client: Any, query: str, target: int, deadline: Deadline, *, what: str, progress: bool = True) -> tuple[int, float]:
    """Poll visibility until `query` counts `target`; returns (count reached, seconds)."""
    start = time.perf_counter()
    last_print = 0.0
    n = 0
    while not deadline.expired:
        n = await count(client, query)
        if n >= target:
            break
        if progress and time.perf_counter() - last_print > 15:
            print(f"    … {n}/{target} {what} after {time.perf_counter() - start:.0f} s", flush=True)
            last_print = time.perf_counter()
        await asyncio.sleep(1.0)
    return n, time.perf_counter() - start


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

    from signoff.client import SignoffClient, _initial_attributes
    from signoff.trust.evidence import start_body
    from signoff.config import Settings
    from signoff.errors import SignoffError
    from signoff.models import ApprovalAttempt, StartRelease
    from tests.helpers import DIGEST_A

    total_deadline = Deadline(args.max_minutes * 60)
    tmp = tempfile.TemporaryDirectory(prefix="bench-capacity-")
    if args.keep:
        tmp._finalizer.detach()  # type: ignore[attr-defined]  # leave it for inspection
    state = Path(tmp.name) / "state"
    isolate_env(str(state))
    directory = state / "dev" / "approvers.yaml"  # the example people with their dev keys, as every request is signed
    task_queue = f"bench-capacity-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env()
    spec = gated_spec(timeout="P7D")
    result: dict[str, Any] = {
        "benchmark": "capacity: releases waiting at gates on one worker (subprocess, default cache)",
        "requested_releases": args.releases,
        "concurrency": args.concurrency,
        "max_starting": args.max_starting,
        "server_history_cache": args.server_history_cache,
        "workflow_cache": args.cache,
    }
    samples: list[dict[str, float]] = []

    async with dev_server(extra_args=server_args(args)) as env:
        client = env.client
        address = client.service_client.config.target_host
        worker_env = {
            **os.environ,
            "SIGNOFF_TEMPORAL_ADDRESS": address,
            "SIGNOFF_TASK_QUEUE": task_queue,
            "SIGNOFF_STATE_DIR": str(state),
            "SIGNOFF_DIRECTORY": str(directory),
            "SIGNOFF_WORKER_METRICS": "",  # no metrics listener: no port conflicts with other runs
            "SIGNOFF_GC_STATS": str(Path(tmp.name) / "gc.json"),  # the collector's pauses (workers/gc_stats.py)
            **cache_env(args),
        }
        log_path = Path(tmp.name) / "worker.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(worker_command(), env=worker_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp.name)
        sampler_stop = asyncio.Event()

        async def sampler() -> None:
            while not sampler_stop.is_set():
                mem = proc_memory(proc.pid)
                if mem:
                    samples.append({"t": round(time.perf_counter() - t0, 1), **mem})
                try:
                    await asyncio.wait_for(sampler_stop.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    pass

        t0 = time.perf_counter()
        sampler_task = asyncio.create_task(sampler())
        try:
            sc = SignoffClient(client, settings=settings, task_queue=task_queue)
            # Baseline: one release through the whole path while idle (worker warm-up too).
            warm = f"bench-cap-warm-{uuid.uuid4().hex[:6]}"
            await sc.start_release(spec, release_id=warm)
            idle_lat: list[float] = []
            plan: str | None = None
            for who in ("alice@example.com", "bob@example.com"):
                for _ in range(100):
                    s = await sc.status(warm)
                    if s.phase.value == "awaiting_approval":
                        break
                    await asyncio.sleep(0.1)
                # Approvers approve the plan they reviewed: the gate notice (Slack button, Jira
                # label, status) shows its hash and the approval carries it. Every release here has
                # the same spec and artifact, so the same plan; one that differed would be refused,
                # listed in approvals_refused, and never drain. (Without a plan the client first asks the
                # release for its current one: a status query more per approval.)
                plan = s.plan_sha256
                t = time.perf_counter()
                r = await sc.submit_approval(ApprovalAttempt(release_id=warm, identity=who, channel="cli", digest=DIGEST_A, plan=plan))
                idle_lat.append(time.perf_counter() - t)
                assert r.accepted, r.reason
            await asyncio.wait_for(sc.handle(warm).result(), timeout=60)
            from bench.bare import plan_from_history

            result["activity_plan"] = plan_from_history([e async for e in client.get_workflow_handle(warm).fetch_history_events()])
            await asyncio.sleep(2)
            result["worker_rss_idle_mib"] = proc_memory(proc.pid).get("VmRSS")
            result["idle_approval_round_trip_ms"] = [round(x * 1000, 1) for x in idle_lat]

            # ---- 1. start N
            prefix = f"bench-cap-{uuid.uuid4().hex[:6]}"
            ids = [f"{prefix}-{i:05d}" for i in range(args.releases)]
            start_budget = Deadline(args.max_minutes * 60 * 0.45)
            started: list[str] = []
            start_lat: list[float] = []
            queue: asyncio.Queue[str] = asyncio.Queue()
            for rid in ids:
                queue.put_nowait(rid)

            arrivals = Arrivals(client, prefix, args.max_starting)

            async def starter() -> None:
                while not queue.empty() and not start_budget.expired:
                    await arrivals.turn(start_budget)
                    if queue.empty():
                        break
                    rid = queue.get_nowait()
                    # signed by the requester like every start (a start without a proof is denied)
                    proof = sc.sign("person", spec.requested_by, action="start_release", subject=rid, body=start_body(spec, str(REPO)))
                    args_ = StartRelease(
                        release_id=rid,
                        spec=spec,
                        base_dir=str(REPO),
                        directory_path=str(settings.directory_path),
                        policy_dir=str(settings.policy_dir),
                        search_attributes=True,
                        proof=proof,
                    )
                    t = time.perf_counter()
                    await client.start_workflow(
                        "ReleaseWorkflow",
                        args_,
                        id=rid,
                        task_queue=task_queue,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        search_attributes=_initial_attributes(spec),
                    )
                    start_lat.append(time.perf_counter() - t)
                    started.append(rid)

            print(f"  starting {args.releases} gated releases ({args.concurrency} concurrent start calls)…", flush=True)
            t_start = time.perf_counter()
            progress = asyncio.create_task(
                wait_count(client, f"WorkflowId STARTS_WITH '{prefix}' AND SignoffPhase = 'awaiting_approval'", args.releases, start_budget, what="waiting at the gate")
            )
            async with arrivals:
                await asyncio.gather(*(starter() for _ in range(args.concurrency)))
            t_calls = time.perf_counter() - t_start
            n = len(started)
            if not progress.done():
                progress.cancel()
            waiting_query = f"WorkflowId STARTS_WITH '{prefix}' AND SignoffPhase = 'awaiting_approval'"
            reached, _ = await wait_count(client, waiting_query, n, Deadline(min(total_deadline.left(), max(120.0, start_budget.left() + 300))), what="waiting at the gate")
            t_waiting = time.perf_counter() - t_start
            truncated = n < args.releases
            print(f"  {reached}/{n} waiting at the gate {t_waiting:.1f} s after the first start (start calls took {t_calls:.1f} s)", flush=True)
            await asyncio.sleep(3)  # let in-flight outbox work (gate notices, records) settle before reading memory
            mem_waiting = proc_memory(proc.pid)
            print(f"  worker RSS with {reached} waiting: {mem_waiting.get('VmRSS')} MiB (peak {mem_waiting.get('VmHWM')} MiB)", flush=True)
            result.update(
                {
                    "releases_started": n,
                    "releases_waiting": reached,
                    "truncated_by_time_budget": truncated,
                    "start_calls_seconds": round(t_calls, 2),
                    "start_to_all_waiting_seconds": round(t_waiting, 2),
                    "start_rate_per_second": round(reached / t_waiting, 2) if t_waiting else None,
                    "start_call_latency": summary_ms(start_lat) if start_lat else None,
                    "worker_rss_all_waiting_mib": mem_waiting.get("VmRSS"),
                    "worker_peak_rss_mib_so_far": mem_waiting.get("VmHWM"),
                }
            )

            # ---- 2. approve all (2 each), then drain
            approve_lat: list[float] = []
            accepted = 0
            refused: list[str] = []
            failed: list[str] = []
            errors: dict[str, int] = {}
            slowest: list[tuple[float, str, str, float]] = []
            work: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
            order = started[:]
            random.Random(1).shuffle(order)  # approvals arrive in no particular order, like people
            for rid in order:
                work.put_nowait((rid, "alice@example.com"))
            for rid in order:
                work.put_nowait((rid, "bob@example.com"))
            approve_deadline = Deadline(max(60.0, total_deadline.left() * 0.6))

            async def approver() -> None:
                nonlocal accepted
                while not work.empty() and not approve_deadline.expired:
                    rid, who = work.get_nowait()
                    attempt = ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A, plan=plan)
                    for tries in range(6):  # a person told "try again" clicks again; same Update id
                        t = time.perf_counter()
                        if approve_deadline.expired:
                            break
                        try:  # the SDK polls an Update's outcome without end: bound each attempt
                            r = await asyncio.wait_for(sc.submit_approval(attempt), timeout=min(60.0, max(5.0, approve_deadline.left())))
                        except (SignoffError, asyncio.TimeoutError) as e:
                            key = str(e)[:160] or "no answer within 60 s"
                            errors[key] = errors.get(key, 0) + 1
                            await asyncio.sleep(1.0 + tries)
                            continue
                        approve_lat.append(time.perf_counter() - t)
                        slowest.append((approve_lat[-1], rid, who, time.time() - approve_lat[-1]))
                        if r.accepted:
                            accepted += 1
                        else:
                            refused.append(f"{rid} {who}: {r.reason}")
                        break
                    else:
                        failed.append(f"{rid} {who}")

            print(f"  approving: {2 * n} approvals ({args.concurrency} concurrent)…", flush=True)
            meter = CpuMeter(proc.pid, Path(worker_env["SIGNOFF_GC_STATS"]))
            meter.start()
            t_approve = time.perf_counter()
            await asyncio.gather(*(approver() for _ in range(args.concurrency)))
            t_approved = time.perf_counter() - t_approve
            done_query = f"WorkflowId STARTS_WITH '{prefix}' AND SignoffPhase = 'succeeded' AND ExecutionStatus = 'Completed'"
            done, _ = await wait_count(client, done_query, n, Deadline(max(30.0, total_deadline.left())), what="succeeded")
            t_drain = time.perf_counter() - t_approve
            drain_cpu = meter.stop(done)
            print(f"  CPU over the drain, per release: {per_release(drain_cpu)}", flush=True)
            mem_end = proc_memory(proc.pid)
            if errors:
                print(f"  approval errors (retried like a person would): {errors}", flush=True)
            print(f"  {accepted}/{2 * n} approvals accepted in {t_approved:.1f} s; {done}/{n} succeeded {t_drain:.1f} s after the first approval", flush=True)

            # Spot-check: releases record exactly the two approvals sent, none lost, none doubled.
            sample_ids = random.Random(2).sample(started, min(20, n))
            exact = 0
            for rid in sample_ids:
                s = await sc.status(rid)
                if s.phase.value == "succeeded" and sorted(a.by for a in s.gates[0].approvals) == ["alice@example.com", "bob@example.com"]:
                    exact += 1
            result["slowest_approvals"] = [await explain_slow(client, *row) for row in sorted(slowest, reverse=True)[:3]]
            others = await count(client, f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Running'")
            audit_lines = sum(1 for _ in open(settings.audit_log)) if settings.audit_log.exists() else 0
            result.update(
                {
                    "approvals_sent": len(approve_lat),
                    "approvals_accepted": accepted,
                    "approvals_refused": refused[:10],
                    "approvals_failed_after_6_tries": failed[:20],
                    "approval_errors_retried": errors,
                    "approve_calls_seconds": round(t_approved, 2),
                    "approval_round_trip_under_load": summary_ms(approve_lat) if approve_lat else None,
                    "approval_queue": approval_queue(len(approve_lat), t_approved, args.concurrency),
                    "approval_to_all_succeeded_seconds": round(t_drain, 2),
                    "drain_rate_per_second": round(done / t_drain, 2) if t_drain else None,
                    "drain_cpu": drain_cpu,
                    "releases_succeeded": done,
                    "releases_still_running": others,
                    "spot_check_exact_two_approvals": f"{exact}/{len(sample_ids)}",
                    "audit_log_records": audit_lines,
                    "worker_rss_end_mib": mem_end.get("VmRSS"),
                    "worker_peak_rss_mib": mem_end.get("VmHWM"),
                }
            )
            if truncated:
                scale = args.releases / max(n, 1)
                result["extrapolated_to_requested"] = {
                    "note": f"LINEAR EXTRAPOLATION from {n} to {args.releases} releases, not measured",
                    "start_to_all_waiting_seconds": round(t_waiting * scale, 1),
                    "approval_to_all_succeeded_seconds": round(t_drain * scale, 1),
                }
        finally:
            sampler_stop.set()
            await sampler_task
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
            lines = log_path.read_text(errors="replace").splitlines()
            markers = ("Failed activation", "deadlock", "Traceback", "ERROR", "WARNING", "failed")
            result["worker_log_problem_counts"] = {m: sum(1 for line in lines if m in line) for m in markers}
            result["worker_log_problem_examples"] = [line[:300] for line in lines if any(m in line for m in markers)][:8]
    result["rss_samples"] = samples[:: max(1, len(samples) // 200)]
    if args.keep:
        print(f"  kept {tmp.name} (worker.log, state/audit)")
    else:
        tmp.cleanup()
    rss = result.get("worker_rss_all_waiting_mib")
    result["target_rss_mib"] = RSS_TARGET_MIB
    result["meets_rss_target"] = rss is not None and rss <= RSS_TARGET_MIB
    return result


class Arrivals:
    """Releases arrive over a day, not in one burst: at most `limit` started workflows of `prefix`
    are on their way to the gate at once (a visibility count, polled every second, says how many
    arrived); the rest of the workflow cache holds the waiting ones."""

    def __init__(self, client: Any, prefix: str, limit: int) -> None:
        self.client, self.prefix, self.limit = client, prefix, limit
        self.started = self.at_gate = 0
        self._poller: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.at_gate = await count(self.client, f"WorkflowId STARTS_WITH '{self.prefix}' AND SignoffPhase = 'awaiting_approval'")
            await asyncio.sleep(1.0)

    async def __aenter__(self) -> "Arrivals":
        self._poller = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._poller is not None:
            self._poller.cancel()

    async def turn(self, deadline: Deadline | None = None) -> None:
        """Wait until one more may start, and count it as started."""
        while self.started - self.at_gate >= self.limit and not (deadline and deadline.expired):
            await asyncio.sleep(0.2)
        self.started += 1


async def in_parallel(concurrency: int, jobs: list[Any], one: Any) -> None:
    """`one(job)` for every job, `concurrency` at a time."""
    pending = iter(jobs)

    async def lane() -> None:
        for job in pending:
            await one(job)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def run_bare(args: argparse.Namespace, plan: dict[str, int]) -> dict[str, Any]:
    """The bare-workflow baseline (bench/bare.py): N workflows with the release's activities and
    local activities before and after a two-approval gate, nothing else, on their own server and
    worker process (same cache size), started and approved with the same concurrency."""
    from bench.bare import NAME

    deadline = Deadline(args.max_minutes * 60)
    result: dict[str, Any] = {"benchmark": "bare-workflow baseline: same activities and gate, no signoff", "activity_plan": plan, "parked_by_continue_as_new": bool(args.bare_park)}
    gc_dir = tempfile.TemporaryDirectory(prefix="bench-bare-gc-")
    gc_file = Path(gc_dir.name) / "gc.json"
    async with dev_server(extra_args=server_args(args)) as env:
        client = env.client
        task_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
        proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.bare import main; main()", client.service_client.config.target_host, task_queue],
            env={**os.environ, "PYTHONPATH": str(REPO), "SIGNOFF_GC_STATS": str(gc_file), **cache_env(args)},
            cwd=str(REPO),
            stdout=subprocess.DEVNULL,
        )
        try:
            prefix = f"bench-bare-{uuid.uuid4().hex[:6]}"
            ids = [f"{prefix}-{i:05d}" for i in range(args.releases)]
            print(f"  bare baseline: starting {len(ids)} workflows…", flush=True)
            t = time.perf_counter()
            async with Arrivals(client, prefix, args.max_starting) as arrivals:

                async def start_one(rid: str) -> None:
                    await arrivals.turn()
                    await client.start_workflow(NAME, {**plan, **({"park": 1} if args.bare_park else {})}, id=rid, task_queue=task_queue)

                await in_parallel(args.concurrency, ids, start_one)
            waiting, _ = await wait_count(client, f"WorkflowId STARTS_WITH '{prefix}' AND SignoffPhase = 'awaiting_approval'", len(ids), deadline, what="bare at the gate")
            result.update({"releases_started": len(ids), "releases_waiting": waiting, "start_to_all_waiting_seconds": round(time.perf_counter() - t, 2),
                           "worker_rss_all_waiting_mib": proc_memory(proc.pid).get("VmRSS")})
            order = ids[:]
            random.Random(1).shuffle(order)
            latencies: list[float] = []

            async def approve(job: tuple[str, str]) -> None:
                t_one = time.perf_counter()
                await client.get_workflow_handle(job[0]).execute_update("approve", job[1], result_type=bool)
                latencies.append(time.perf_counter() - t_one)

            print(f"  bare baseline: approving {2 * len(ids)}…", flush=True)
            meter = CpuMeter(proc.pid, gc_file)
            meter.start()
            t = time.perf_counter()
            await in_parallel(args.concurrency, [(rid, who) for who in ("alice@example.com", "bob@example.com") for rid in order], approve)
            t_approved = time.perf_counter() - t
            done, _ = await wait_count(client, f"WorkflowId STARTS_WITH '{prefix}' AND SignoffPhase = 'succeeded' AND ExecutionStatus = 'Completed'", len(ids), deadline, what="bare succeeded")
            t_drain = time.perf_counter() - t
            drain_cpu = meter.stop(done)
            print(f"  bare baseline: CPU over the drain, per release: {per_release(drain_cpu)}", flush=True)
            sample = random.Random(2).sample(ids, min(20, len(ids)))
            exact = [await client.get_workflow_handle(rid, result_type=list).result() for rid in sample].count(["alice@example.com", "bob@example.com"])
            result.update({"releases_succeeded": done, "approval_to_all_succeeded_seconds": round(t_drain, 2), "drain_rate_per_second": round(done / t_drain, 2), "drain_cpu": drain_cpu,
                           "approval_round_trip_under_load": summary_ms(latencies), "approval_queue": approval_queue(len(latencies), t_approved, args.concurrency),
                           "spot_check_exact_two_approvals": f"{exact}/{len(sample)}"})
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    gc_dir.cleanup()
    return result


def approval_queue(sent: int, seconds: float, approvers: int) -> dict[str, Any]:
    """How fast approvals went through, and the mean round trip a closed loop of `approvers` must
    see at that rate (Little's law: mean = approvers / rate). Once the worker and the server are
    busy, approvers beyond what keeps them busy only wait in line: the round trip then measures the
    line the benchmark forms, not the system."""
    rate = sent / seconds if sent and seconds > 0 else 0.0
    return {
        "approvers": approvers,
        "approvals_per_second": round(rate, 2),
        "little_law_mean_ms": round(approvers / rate * 1000, 1) if rate else None,
    }


def queue_line(queue: dict[str, Any] | None) -> str:
    if not queue or not queue.get("approvals_per_second"):
        return "no approvals went through"
    return (f"{queue['approvers']} approvers at {queue['approvals_per_second']} approvals/s: "
            f"Little's law gives a mean of {queue['little_law_mean_ms']:.0f} ms")


def judge(result: dict[str, Any], small: dict[str, Any] | None) -> None:
    """Issue 18's verdicts: approval p99 under load, and (with --compare) the drain-rate ratio."""
    lat = result.get("approval_round_trip_under_load") or {}
    result["target_approval_p99_ms"] = APPROVAL_P99_TARGET_MS
    result["meets_approval_p99_target"] = bool(lat) and lat["p99_ms"] <= APPROVAL_P99_TARGET_MS
    if small is None:
        return
    keys = ("releases_started", "releases_succeeded", "drain_rate_per_second", "approval_to_all_succeeded_seconds",
            "approval_round_trip_under_load", "approval_queue", "worker_rss_all_waiting_mib", "spot_check_exact_two_approvals", "approvals_accepted", "drain_cpu")
    result["compared_with"] = {k: small.get(k) for k in keys}
    big, base = result.get("drain_rate_per_second"), small.get("drain_rate_per_second")
    result["drain_rate_ratio_vs_compared"] = round(big / base, 3) if big and base else None
    result["target_drain_ratio"] = DRAIN_RATIO_TARGET
    result["meets_drain_ratio_target"] = result["drain_rate_ratio_vs_compared"] is not None and result["drain_rate_ratio_vs_compared"] >= DRAIN_RATIO_TARGET


def bare_at_small(args: argparse.Namespace, bare: dict[str, Any], plan: dict[str, int]) -> dict[str, Any]:
    """The bare workflows at the small size too: how far the drain rate falls from SMALL to N for a
    workflow doing nothing of signoff's (the same activities and gate) on the same server, SDK,
    runner and cache, i.e. what Temporal and this machine allow for that shape."""
    small = asyncio.run(run_bare(argparse.Namespace(**{**vars(args), "releases": args.compare}), plan))
    big, small_rate = bare.get("drain_rate_per_second"), small.get("drain_rate_per_second")
    return {
        "bare_baseline_compared": {k: small.get(k) for k in ("releases_started", "drain_rate_per_second", "approval_to_all_succeeded_seconds", "approval_round_trip_under_load", "approval_queue", "drain_cpu")},
        "bare_drain_rate_ratio_vs_compared": round(big / small_rate, 3) if big and small_rate else None,
    }


def bare_only(args: argparse.Namespace) -> None:
    """`--bare-only`: the bare baseline at N, then at SMALL, in one invocation."""
    last = REPO / "bench" / "results" / "capacity.json"
    plan = json.loads(last.read_text()).get("activity_plan") if last.exists() else None
    if not plan:
        raise SystemExit(f"--bare-only needs the activity plan of a full run in {last}; run bench_capacity.py without it first.")
    bare = asyncio.run(run_bare(args, plan))
    result: dict[str, Any] = {"benchmark": "bare-workflow baseline only: N vs SMALL in one invocation", "activity_plan": plan, "plan_from": str(last.relative_to(REPO)), "bare_baseline": bare}
    if args.compare:
        result.update(bare_at_small(args, bare, plan))
    lat = bare.get("approval_round_trip_under_load") or {}
    print(f"bare workflows at {bare.get('releases_started')}: drain {bare.get('drain_rate_per_second')} releases/s, approval p99 {lat.get('p99_ms')} ms (plan {plan})")
    if args.compare:
        small = result["bare_baseline_compared"]
        print(f"bare workflows at {small.get('releases_started')}: drain {small.get('drain_rate_per_second')} releases/s; ratio {result['bare_drain_rate_ratio_vs_compared']} "
              f"(signoff's target for its own ratio: ≥ {DRAIN_RATIO_TARGET})")
    write_result("capacity_bare", result, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description="N releases waiting at gates on one worker")
    parser.add_argument("--quick", action="store_true", help="500 releases")
    parser.add_argument("--releases", type=int, default=None, help="default 10000 (quick 500)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent start / approval calls, the approvers of the closed loop (default 8: enough to keep the worker and server busy here; more only wait in line)")
    parser.add_argument("--max-starting", type=int, default=400, help="releases on their way to the gate at once (default 400)")
    parser.add_argument("--max-minutes", type=float, default=None, help="overall bound (default 40, quick 8)")
    parser.add_argument("--compare", type=int, default=None, metavar="SMALL", help="first run SMALL releases the same way; report the drain-rate ratio")
    parser.add_argument("--baseline", action="store_true", help="then run the bare-workflow baseline (bench/bare.py) at the same size (and, with --compare, at SMALL too); report the drain-rate ratios")
    parser.add_argument(
        "--server-history-cache", type=int, default=None, metavar="ENTRIES",
        help="size the dev server's history and events caches (Temporal settings) to ENTRIES; default: Temporal's 512",
    )
    parser.add_argument(
        "--cache", type=int, default=None, metavar="N",
        help="the worker's workflow cache (SIGNOFF_MAX_CACHED_WORKFLOWS) for signoff and the bare baseline; default: the worker's default",
    )
    parser.add_argument(
        "--bare-park", action="store_true",
        help="the bare workflows continue-as-new when they reach the gate, so each waits in a run with a short history (what parking a release that way would save)",
    )
    parser.add_argument("--out", default=None, help="results file (default bench/results/capacity.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (worker log, audit log)")
    parser.add_argument(
        "--bare-only", action="store_true",
        help="only the bare-workflow baseline, at N and (with --compare) at SMALL, with the activity plan a real release measured in the last full run (bench/results/capacity.json); writes bench/results/capacity_bare.json",
    )
    args = parser.parse_args()
    if args.cache is not None:
        refuse_empty_cache(args.cache, "--cache")
    if args.releases is None:
        args.releases = 500 if args.quick else 10_000
    if args.max_minutes is None:
        args.max_minutes = 8 if args.quick else 40
    if args.bare_only:
        bare_only(args)
        return
    result = asyncio.run(run(args))
    # The small run after the big one: same invocation, same machine, each on its own server.
    small = asyncio.run(run(argparse.Namespace(**{**vars(args), "releases": args.compare}))) if args.compare else None
    judge(result, small)
    if args.baseline:
        bare = asyncio.run(run_bare(args, result["activity_plan"]))
        result["bare_baseline"] = bare
        ratio_bare = result.get("drain_rate_per_second", 0) / bare["drain_rate_per_second"] if bare.get("drain_rate_per_second") else None
        result["drain_rate_ratio_vs_bare"] = round(ratio_bare, 3) if ratio_bare is not None else None
        result["target_bare_ratio"] = BARE_RATIO_TARGET
        result["meets_bare_ratio_target"] = ratio_bare is not None and ratio_bare >= BARE_RATIO_TARGET
        if args.compare:
            result.update(bare_at_small(args, bare, result["activity_plan"]))
    n = result.get("releases_started", 0)
    print(f"capacity: {n} releases waiting at a gate on one worker" + (" (TRUNCATED by the time budget)" if result.get("truncated_by_time_budget") else "")
          + (f"; server history caches {args.server_history_cache:,} entries" if args.server_history_cache else "; server history caches at Temporal's default")
          + (f"; workflow cache {args.cache:,}" if args.cache is not None else ""))
    print(f"  worker RSS idle {result.get('worker_rss_idle_mib')} MiB → all waiting {result.get('worker_rss_all_waiting_mib')} MiB "
          f"(target ≤ {RSS_TARGET_MIB} MiB: {'meets' if result['meets_rss_target'] else 'MISSES'}); peak {result.get('worker_peak_rss_mib')} MiB")
    print(f"  time to start all and see them waiting: {result.get('start_to_all_waiting_seconds')} s ({result.get('start_rate_per_second')} releases/s)")
    print(f"  time from first approval to all succeeded: {result.get('approval_to_all_succeeded_seconds')} s ({result.get('drain_rate_per_second')} releases/s); "
          f"{result.get('approvals_accepted')}/{result.get('approvals_sent')} approvals accepted, spot check {result.get('spot_check_exact_two_approvals')}")
    lat = result.get("approval_round_trip_under_load")
    if lat:
        print(f"  approval round trip under load: median {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (idle: {result.get('idle_approval_round_trip_ms')} ms); "
              f"{queue_line(result.get('approval_queue'))}")
    if small is not None:
        print(f"  drain rate {result.get('drain_rate_per_second')} releases/s at {n} vs {small.get('drain_rate_per_second')} at {small.get('releases_started')}: "
              f"ratio {result.get('drain_rate_ratio_vs_compared')} (target ≥ {DRAIN_RATIO_TARGET}: {'meets' if result.get('meets_drain_ratio_target') else 'MISSES'})")
    if args.baseline:
        bare = result["bare_baseline"]
        print(f"  bare-workflow baseline at {bare.get('releases_started')}: {bare.get('drain_rate_per_second')} releases/s (plan {bare.get('activity_plan')}); "
              f"signoff / bare = {result.get('drain_rate_ratio_vs_bare')} (target ≥ {BARE_RATIO_TARGET}: {'meets' if result.get('meets_bare_ratio_target') else 'MISSES'})")
        if "bare_baseline_compared" in result:
            bs = result["bare_baseline_compared"]
            print(f"  bare workflows at {bs.get('releases_started')}: {bs.get('drain_rate_per_second')} releases/s; bare at {bare.get('releases_started')} / bare at {bs.get('releases_started')} = "
                  f"{result.get('bare_drain_rate_ratio_vs_compared')} (signoff's own: {result.get('drain_rate_ratio_vs_compared')})")
    if "extrapolated_to_requested" in result:
        x = result["extrapolated_to_requested"]
        print(f"  {x['note']}: start ≈ {x['start_to_all_waiting_seconds']} s, drain ≈ {x['approval_to_all_succeeded_seconds']} s")
    name = "capacity" if not args.quick else "capacity_quick"
    write_result(name, result, args.out)


if __name__ == "__main__":
    main()
