"""Temporal Schedules signoff keeps: the periodic drift check (`signoff-drift`) and the reaper
(`signoff-reaper`, every SIGNOFF_REAPER_INTERVAL, default 5m, looking back
SIGNOFF_REAPER_LOOKBACK_HOURS, default 168) for releases Temporal ended without an outcome.

Created (or brought up to date) by `signoff dev` and `signoff worker --schedules`; the interval
is SIGNOFF_DRIFT_INTERVAL (default 5m) and SIGNOFF_DRIFT_RUNBOOK names a certified runbook to
start for each new drift. A run that overlaps the previous one is skipped, not queued: the
next tick checks again anyway.
"""

from __future__ import annotations

import os
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleAlreadyRunningError,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import DriftCheck, parse_duration

DRIFT_SCHEDULE_ID = "signoff-drift"


def drift_interval() -> timedelta:
    text = os.environ.get("SIGNOFF_DRIFT_INTERVAL") or "5m"
    value = parse_duration(text)
    if not isinstance(value, timedelta) or value < timedelta(seconds=10):
        raise ConfigError(f"SIGNOFF_DRIFT_INTERVAL={text} is not a duration of at least 10s; write it like 5m or 1h.")
    return value


def drift_schedule(settings: Settings, *, task_queue: str | None = None) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "DriftWorkflow",
            DriftCheck(runbook=os.environ.get("SIGNOFF_DRIFT_RUNBOOK") or None),
            id="signoff-drift-check",
            task_queue=task_queue or settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=drift_interval())]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_drift_schedule(client: Client, settings: Settings, *, task_queue: str | None = None, schedule_id: str = DRIFT_SCHEDULE_ID) -> str:
    """Create the schedule, or update it to the current settings when it exists."""
    wanted = drift_schedule(settings, task_queue=task_queue)
    try:
        await client.create_schedule(schedule_id, wanted)
    except ScheduleAlreadyRunningError:
        existing = client.get_schedule_handle(schedule_id)

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await existing.update(update)
    return schedule_id


REAPER_SCHEDULE_ID = "signoff-reaper"


def reaper_schedule(settings: Settings, *, task_queue: str | None = None) -> Schedule:
    text = os.environ.get("SIGNOFF_REAPER_INTERVAL") or "5m"
    every = parse_duration(text)
    if not isinstance(every, timedelta) or every < timedelta(seconds=10):
        raise ConfigError(f"SIGNOFF_REAPER_INTERVAL={text} is not a duration of at least 10s; write it like 5m or 1h.")
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "ReaperWorkflow",
            float(os.environ.get("SIGNOFF_REAPER_LOOKBACK_HOURS") or 168),
            id="signoff-reaper-run",
            task_queue=task_queue or settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(client: Client, settings: Settings, *, task_queue: str | None = None) -> list[str]:
    """Every schedule signoff keeps, created or brought up to date."""
    made = [await ensure_drift_schedule(client, settings, task_queue=task_queue)]
    for schedule_id, wanted in ((REAPER_SCHEDULE_ID, reaper_schedule(settings, task_queue=task_queue)),):
        try:
            await client.create_schedule(schedule_id, wanted)
        except ScheduleAlreadyRunningError:

            def update(_: ScheduleUpdateInput, wanted: Schedule = wanted) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=wanted)

            await client.get_schedule_handle(schedule_id).update(update)
        made.append(schedule_id)
    return made
