"""The Temporal worker process: workflows + activities on one task queue, with metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from pathlib import Path
from typing import Any, Callable

from temporalio.client import Client
from signoff.converter import data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from signoff.config import Settings
from signoff.errors import ConfigError, TemporalUnreachable
from workers import gc_stats, payload_walks
from workers.registry import all_activities, all_workflows

log = logging.getLogger("signoff.worker")

# Every worker, replayer and benchmark in this process skips the SDK's no-op payload walks
# (workers/payload_walks.py): a quarter of the worker's time with thousands of releases draining.
payload_walks.install()


#: In `strict` mode (SANDBOX_MODES below), the modules shared with the host instead of re-imported
#: into every workflow instance's sandbox. A release evicted from the workflow cache is rebuilt on its next task; each module not in
#: this list is executed again (and, without .pyc files, compiled again) for that instance, so
#: it is paid on every cache miss (bench/bench_replay.py measures it). Only modules that keep no
#: state between workflows and call nothing non-deterministic are listed:
#: * `cryptography`, `jwt`: gates verify signatures in workflow code, and the Rust bindings must
#:   be the one copy the process loaded (a second, sandboxed import aborts the interpreter);
#: * `yaml`, `pydantic`, `pydantic_core`, `annotated_types`: data parsing and validation (the
#:   last three are in recent SDKs' defaults; named so an older SDK shares them too);
#: * `signoff`: our models, gate rules, trust checks and policy input, pure functions of their
#:   arguments (workflows already import them through `imports_passed_through`);
#: * `workflows.gate`, `workflows.canary`, `workflows.outbox`: the workflows' helper classes
#:   (no workflow definitions). Their dataclasses and pydantic model were rebuilt per instance,
#:   the largest part of a miss. They use the workflow API (timers, activities, `workflow.now()`)
#:   only, so sharing them keeps replay deterministic; what it gives up is the sandbox's check
#:   for forbidden calls in them, which tests/test_replay.py and review cover. The workflow
#:   definitions themselves (`workflows.release`, `workflows.runbook`) stay sandboxed.
SANDBOX_PASSTHROUGH = (
    "cryptography",
    "jwt",
    "yaml",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "signoff",
    "workflows.gate",
    "workflows.canary",
    "workflows.outbox",
)


#: The worker's workflow cache, first picked from bench/bench_replay.py (~0.4-0.5 MiB per waiting
#: release then, so 1,000 filled half of the 1 GiB worker budget). Measured on the live worker now
#: (bench/bench_cache_miss.py): a release waiting at its gate holds 160-200 KiB, and with 10,000
#: waiting and 1,000 cached the worker held 459 MiB (peak 556). A release beyond the cache is
#: rebuilt from its history on its next task. Raise it (SIGNOFF_MAX_CACHED_WORKFLOWS) on workers
#: with more memory: a larger cache turns those rebuilds into cache hits.
DEFAULT_MAX_CACHED_WORKFLOWS = 1000


def compile_workflow_modules(state_dir: Path | None = None) -> Path | None:
    """Write the bytecode of the sandboxed workflow modules before the first workflow runs.

    In the strict sandbox (SIGNOFF_WORKFLOW_SANDBOX=strict) every new instance (a release
    started, or one evicted from the cache and replayed) imports its workflow module
    (`workflows.release`, 1,300 lines) afresh. With no `.pyc` beside
    the source — `PYTHONDONTWRITEBYTECODE=1`, a read-only install, a fresh checkout — each of those
    imports compiles the source again: a fifth of the worker's time while 500 releases started,
    and ~40 % of a replay (bench/bench_replay.py). Compiling once here makes every later import a
    read of the cached bytecode. Where the package directory cannot be written, the bytecode goes
    under `state_dir` (`sys.pycache_prefix`, which Python then reads it from). Returns the prefix
    used, or None when the bytecode sits beside the source."""
    import compileall
    import sys

    import workflows

    package = Path(workflows.__file__).resolve().parent
    prefix: Path | None = None
    if sys.pycache_prefix is None and not os.access(package, os.W_OK):
        if state_dir is None:
            return None
        prefix = state_dir / "pycache"
        prefix.mkdir(parents=True, exist_ok=True)
        sys.pycache_prefix = str(prefix)
    # compileall writes even when sys.dont_write_bytecode is set; quiet=2: nothing printed
    compileall.compile_dir(str(package), quiet=2, maxlevels=0)
    return prefix


#: How workflow code runs (SIGNOFF_WORKFLOW_SANDBOX):
#: * `shared` (the default): every workflow instance runs on the modules the worker imported once.
#:   A release evicted from the cache is rebuilt by replaying its history, and nothing else: no
#:   module is executed again for it. bench/bench_replay.py measures the difference: a replay at
#:   the gate costs ~40 % of the sandboxed one and a cached waiting release a quarter of the
#:   memory, which is what lets one worker hold 10,000 waiting releases (issue 18).
#: * `strict`: the SDK's sandbox (with `SANDBOX_PASSTHROUGH` shared). Each instance re-imports the
#:   workflow definitions, and a forbidden call in workflow code (`datetime.now()`, `open`,
#:   `random`, threads...) fails the task at once. It is a development check, not a security
#:   boundary (workflow code is ours, never the agent's): tests/test_replay.py replays every saved
#:   history under it in CI, and `signoff dev` can run with it while workflow code changes.
#: Determinism itself rests on the saved histories replayed in CI under both modes.
SANDBOX_MODES = ("shared", "strict")


def sandbox_mode() -> str:
    """SIGNOFF_WORKFLOW_SANDBOX, or `shared`."""
    raw = os.environ.get("SIGNOFF_WORKFLOW_SANDBOX", "").strip().lower() or "shared"
    if raw not in SANDBOX_MODES:
        raise ConfigError(f"SIGNOFF_WORKFLOW_SANDBOX must be one of {', '.join(SANDBOX_MODES)}, not {raw!r}; unset it for the default (shared).")
    return raw


def workflow_runner(mode: str | None = None) -> Any:
    """The runner for every signoff workflow: `mode`, or SIGNOFF_WORKFLOW_SANDBOX (see SANDBOX_MODES)."""
    from temporalio.worker import UnsandboxedWorkflowRunner
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    if (mode or sandbox_mode()) == "strict":
        return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH))
    return UnsandboxedWorkflowRunner()


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    activities: list[Callable[..., Any]] | None = None,
    workflows: list[type] | None = None,
    **options: Any,
) -> Worker:
    """A worker with every workflow and activity; tests pass fakes for some activities."""
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=workflows if workflows is not None else all_workflows(),
        activities=activities if activities is not None else all_activities(settings),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=16),
        **{"workflow_runner": workflow_runner(), **options},
    )


#: Activities one worker runs at once (SIGNOFF_MAX_CONCURRENT_ACTIVITIES). Workflow tasks and
#: activities share one interpreter: with every release's post-gate activities in flight at once
#: an approval's workflow task waited seconds for its turn (bench/bench_capacity.py). Fewer
#: activities at once leaves the turn to the approvals; the rest wait in Temporal's queue.
DEFAULT_MAX_CONCURRENT_ACTIVITIES = 100


def _whole_number(name: str, default: int, unit: str = "") -> int:
    """The positive whole number in environment variable `name`, or `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number{unit} (1 or more), not {raw!r}; unset it for the default {default}.")
    return int(raw)


def activity_slots() -> int:
    """SIGNOFF_MAX_CONCURRENT_ACTIVITIES, or the default."""
    return _whole_number("SIGNOFF_MAX_CONCURRENT_ACTIVITIES", DEFAULT_MAX_CONCURRENT_ACTIVITIES)


def cache_size() -> int:
    """SIGNOFF_MAX_CACHED_WORKFLOWS, or the measured default."""
    return _whole_number("SIGNOFF_MAX_CACHED_WORKFLOWS", DEFAULT_MAX_CACHED_WORKFLOWS, " of workflows")


def metrics_runtime(bind: str) -> Runtime:
    """Temporal SDK runtime metrics exported for Prometheus on `bind` (host:port)."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None, schedules: bool = False) -> None:
    cache = cache_size()  # a bad setting is refused before anything connects
    gc_stats.install_from_env()
    sandbox_mode()
    slots = activity_slots()
    compile_workflow_modules(settings.state_dir)
    bind = os.environ.get("SIGNOFF_WORKER_METRICS", "127.0.0.1:9464")
    from signoff.client import temporal_connection_options

    try:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            data_converter=data_converter,
            runtime=metrics_runtime(bind) if bind else None,
            **temporal_connection_options(settings),
        )
    except RuntimeError as e:
        raise TemporalUnreachable(f"cannot reach Temporal at {settings.temporal_address}; is `signoff dev` running?") from e
    if schedules:
        from workers.schedules import ensure_schedules

        log.info("schedules %s are set", ", ".join(await ensure_schedules(client, settings)))
    worker = build_worker(client, settings, max_cached_workflows=cache, max_concurrent_activities=slots)
    log.info("worker on task queue %s (metrics on %s)", settings.task_queue, bind)
    from activities.audit import checkpoint_loop

    checkpointer = asyncio.create_task(checkpoint_loop(settings))
    try:
        if stop is None:
            await worker.run()
            return
        async with worker:
            await stop.wait()
    finally:
        checkpointer.cancel()
