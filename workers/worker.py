"""The Temporal worker process: workflows + activities on one task queue, with metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from typing import Any, Callable

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from signoff.config import Settings
from signoff.errors import TemporalUnreachable
from workers.registry import all_activities, all_workflows

log = logging.getLogger("signoff.worker")


def workflow_runner() -> Any:
    """The sandbox every signoff workflow runs in. `cryptography` (and PyJWT over it) are passed
    through: gates verify signatures in workflow code, and its Rust bindings must be the one
    copy the process loaded (a second, sandboxed import aborts the interpreter)."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "jwt", "yaml"))


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


def metrics_runtime(bind: str) -> Runtime:
    """Temporal SDK runtime metrics exported for Prometheus on `bind` (host:port)."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None, schedules: bool = False) -> None:
    bind = os.environ.get("SIGNOFF_WORKER_METRICS", "127.0.0.1:9464")
    from signoff.client import temporal_connection_options

    try:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            data_converter=pydantic_data_converter,
            runtime=metrics_runtime(bind) if bind else None,
            **temporal_connection_options(settings),
        )
    except RuntimeError as e:
        raise TemporalUnreachable(f"cannot reach Temporal at {settings.temporal_address}; is `signoff dev` running?") from e
    options: dict[str, Any] = {}
    cache = os.environ.get("SIGNOFF_MAX_CACHED_WORKFLOWS")
    if cache:
        # Releases waiting at gates beyond the cache are replayed from history when an approval
        # arrives; a larger cache trades memory (~50 KiB per release) for that replay.
        options["max_cached_workflows"] = int(cache)
    if schedules:
        from workers.schedules import ensure_schedules

        log.info("schedules %s are set", ", ".join(await ensure_schedules(client, settings)))
    worker = build_worker(client, settings, **options)
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
