"""Shared pieces of the benchmarks: a real Temporal dev server, a real signoff worker, the
same-run baselines (bare workflows), statistics and the results file.

Why a shared module: every benchmark compares signoff against a bare Temporal baseline measured
on the same server in the same run (these machines are shared and noisy, so figures from
different runs are not comparable), and they must all start the server, isolate the state
directory and report numbers the same way.

This module is also imported inside the Temporal workflow sandbox (the bare baseline workflows
live here, so they are sandboxed exactly like ReleaseWorkflow). Keep module-level code to
definitions: heavy imports happen inside functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, AsyncIterator, Callable

from temporalio import activity, workflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")


# --------------------------------------------------------------------------- baselines
# Bare Temporal: what the same server and SDK cost with none of signoff's logic.


@workflow.defn(name="BenchBareUpdateWorkflow")
class BareUpdateWorkflow:
    """A workflow that only holds an Update handler: the floor of an Update round trip."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return len(self.items)

    @workflow.update(name="append")
    async def append(self, item: str) -> list[str]:
        self.items.append(item)
        return self.items[-5:]

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True


@activity.defn(name="bench_noop")
async def noop_activity(n: int) -> int:
    """Does nothing: the baseline activity."""
    return n


@workflow.defn(name="BenchBareActivitiesWorkflow")
class BareActivitiesWorkflow:
    """Runs `regular` no-op activities then `local` no-op local activities, one after another,
    while (optionally) a second chain of `side` no-op activities runs alongside: the floor of a
    release that schedules the same activities and decides nothing. The side chain mirrors the
    release's decision-record outbox, which runs concurrently with its steps."""

    @workflow.run
    async def run(self, counts: list[int]) -> int:
        regular, local = counts[0], counts[1]
        side = counts[2] if len(counts) > 2 else 0

        async def chain(n: int, offset: int) -> None:
            for i in range(n):
                await workflow.execute_activity("bench_noop", offset + i, start_to_close_timeout=timedelta(seconds=30), result_type=int)

        side_task = asyncio.ensure_future(chain(side, 1000)) if side else None
        await chain(regular, 0)
        for i in range(local):
            await workflow.execute_local_activity("bench_noop", i, start_to_close_timeout=timedelta(seconds=30), result_type=int)
        if side_task is not None:
            await side_task
        return regular + local + side


# --------------------------------------------------------------------------- environment


def isolate_env(state_dir: str, *, directory_path: str | None = None) -> None:
    """No benchmark sees the developer's SIGNOFF_*/SLACK_*/JIRA_* settings (so Slack and Jira
    activities are off, as in a fresh install) or writes to ./.signoff."""
    for key in list(os.environ):
        if key.startswith(("SIGNOFF_", "SLACK_", "JIRA_")):
            del os.environ[key]
    os.environ["SIGNOFF_STATE_DIR"] = state_dir
    # As on the dev stack: the example principals, the agent and the gateway have keys, so every
    # request a benchmark sends is signed and verified exactly as in production.
    from signoff.trust.dev import provision_dev

    provision_dev(Path(state_dir), directory_src=Path(directory_path) if directory_path else Path(REPO) / "examples" / "approvers.yaml", agents_src=Path(REPO) / "examples" / "agents.yaml")
    if directory_path:
        os.environ["SIGNOFF_DIRECTORY"] = directory_path


@contextlib.asynccontextmanager
async def dev_server(*, extra_args: list[str] | None = None) -> AsyncIterator[Any]:
    """The real Temporal dev server (in-memory SQLite) with signoff's search attributes, started
    with one retry (tests.helpers.start_dev_server): run_all starts one server right after the
    previous benchmark stopped its own, and a busy machine can miss the SDK's 5 s window."""
    from tests.helpers import start_dev_server

    env = await start_dev_server(extra_args=extra_args)
    try:
        yield env
    finally:
        await env.shutdown()


@contextlib.asynccontextmanager
async def release_stack(state: Path, prom_dir: Path, name: str, *, scrape_interval: str = "1s") -> AsyncIterator[tuple[Any, Any, Any]]:
    """(SignoffClient, PrometheusServer, Settings): a real Prometheus reading the local target's
    file_sd files, the dev server, and a worker with every real activity; the local target's
    processes are stopped at the end whatever happened."""
    from activities.deploy import stop_all
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from tests.prom import PrometheusServer, prometheus_available
    from workers.registry import all_activities, all_workflows
    from workers.worker import build_worker

    if not prometheus_available():
        raise SystemExit("/usr/bin/prometheus is missing; install the Debian package `prometheus`.")
    try:
        with PrometheusServer(prom_dir, file_sd_dir=state / "prometheus" / "targets", scrape_interval=scrape_interval) as prom:
            os.environ["SIGNOFF_PROMETHEUS_URL"] = prom.url
            settings = Settings.from_env()
            task_queue = f"{name}-{os.urandom(4).hex()}"
            async with dev_server() as env:
                worker = build_worker(env.client, settings, task_queue=task_queue, activities=all_activities(settings), workflows=all_workflows())
                async with worker:
                    yield SignoffClient(env.client, settings=settings, task_queue=task_queue), prom, settings
    finally:
        stop_all(state)


def write_directory(path: str, approvers: list[str], *, requester: str = "dana@example.com") -> None:
    """An approver directory: `approvers` in release-managers, the requester in developers."""
    import yaml

    import os
    from pathlib import Path

    from signoff.trust.dev import with_dev_keys

    people = [{"email": e, "name": e.split("@")[0]} for e in [*approvers, requester]]
    doc = {"people": people, "groups": {"release-managers": approvers, "developers": [requester]}}
    state = Path(os.environ.get("SIGNOFF_STATE_DIR") or Path(path).parent / "state")
    with open(path, "w") as f:
        yaml.safe_dump(with_dev_keys(doc, state), f)


def release_spec(**overrides: Any) -> Any:
    """A release that builds nothing, touches docs only (no policy gate) and deploys with `true`."""
    from tests.helpers import release_spec as _spec

    return _spec(**overrides)


def gated_spec(**gate: Any) -> Any:
    from tests.helpers import gated_spec as _gated

    return _gated(**gate)


# --------------------------------------------------------------------------- measuring


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min and max in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


async def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = await fn()
    return time.perf_counter() - start, value


class Deadline:
    """Bounds a benchmark in wall time: `left()` seconds remain, `expired` once spent."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


@dataclass
class Row:
    label: str
    stats: dict[str, float]

    def line(self) -> str:
        s = self.stats
        return f"  {self.label:<46} n={int(s['n']):<5} median {s['median_ms']:9.2f} ms   p99 {s['p99_ms']:9.2f} ms   mean {s['mean_ms']:9.2f} ms"


def machine() -> dict[str, Any]:
    import temporalio

    return {
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_result(name: str, result: dict[str, Any], out: str | None = None) -> str:
    """bench/results/<name>.json, with the machine and the time of the run."""
    path = out or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {**result, "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": machine()}
    with open(path, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    shown = os.path.relpath(path, REPO) if os.path.abspath(path).startswith(REPO + os.sep) else path
    print(f"wrote {shown}")
    return path


async def bounded(coro: Any, seconds: float, what: str) -> Any:
    """Await `coro` for at most `seconds`; a stuck benchmark says what it was waiting for."""
    try:
        return await asyncio.wait_for(coro, timeout=seconds)
    except asyncio.TimeoutError:
        raise SystemExit(f"benchmark stopped: {what} took longer than {seconds:.0f} s") from None
