"""Drift detection on the real dev server, the real local target (processes on this machine) and
the Slack/Jira stubs: changing what the local target serves behind signoff's back raises exactly
one signed drift record and one incident, however often the check runs, and a reconciling
release clears it. The `signoff-drift` Schedule runs the same check."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from temporalio.client import Client

from activities.artifacts import store_for
from activities.deploy import LocalTarget, stop_all
from signoff.audit import statement_of, store_from_settings
from signoff.config import Settings
from signoff.models import DriftCheck, DriftReport
from tests.helpers import REPO, release_spec, running_worker, wait_for, worker_chat
from tests.stubs.jira_stub import JiraStub
from tests.stubs.slack_stub import SlackStub
from workers.schedules import ensure_drift_schedule

pytestmark = pytest.mark.asyncio


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SlackStub, JiraStub]]:
    try:
        with worker_chat(monkeypatch, channel="C0OPS", token="xoxb-drift") as stubs:
            yield stubs
    finally:
        stop_all(Settings.from_env().state_dir)


def artifact(tmp_path: Path, flavour: str) -> str:
    """Build the example service and put it in the worker's artifact store; its digest."""
    out = tmp_path / f"checkout-{flavour}.pyz"
    subprocess.run([sys.executable, str(REPO / "examples" / "service" / "build.py"), "--flavour", flavour, "--out", str(out)], check=True, capture_output=True)
    return store_for(Settings.from_env().state_dir).put(out)


def local_release(digest: str) -> Any:
    return release_spec(artifact=digest, deploy={"target": "local"})


async def check(client: Client, task_queue: str) -> DriftReport:
    return await client.execute_workflow("DriftWorkflow", DriftCheck(), id=f"drift-{uuid.uuid4().hex[:8]}", task_queue=task_queue, result_type=DriftReport)


def drift_records(service: str = "checkout") -> list[dict[str, Any]]:
    rows = []
    for entry in store_from_settings(Settings.from_env()).entries():
        statement = statement_of(entry["envelope"])
        if statement["subject"][0]["name"] == f"drift:{service}":
            rows.append(statement["predicate"])
    return rows


async def until_records(count: int, timeout: float = 20) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rows = drift_records()
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.2)
    return drift_records()


async def test_drift_behind_signoffs_back_is_reported_once_and_cleared_by_a_reconciling_release(client: Client, task_queue: str, tmp_path: Path, chat: Any) -> None:
    slack, jira = chat
    settings = Settings.from_env()
    good, bad = artifact(tmp_path, "good"), artifact(tmp_path, "bad")
    async with running_worker(client, task_queue, settings=settings) as sc:
        first = f"drift-good-{uuid.uuid4().hex[:6]}"
        await sc.start_release(local_release(good), release_id=first, base_dir=tmp_path)
        assert (await wait_for(sc, first, lambda s: s.phase.is_final, timeout=90)).phase.value == "succeeded"
        await sc.wait(first)
        assert (await check(client, task_queue)).findings == []  # in line: nothing to say

        # Someone deploys the other build on the target directly, without signoff.
        await asyncio.to_thread(LocalTarget(settings, {}).deploy, "checkout", bad, 100)
        report = await check(client, task_queue)
        assert [(f["status"], f["expected"], f["serving"]) for f in report.findings] == [("detected", good, bad)]
        for _ in range(2):  # the schedule keeps running: nothing new is raised
            assert (await check(client, task_queue)).findings == []
        rows = await until_records(1)
        assert [(r["kind"], r["outcome"]) for r in rows] == [("drift", "detected")]
        assert rows[0]["evidence"] == {"service": "checkout", "expected": good, "serving": bad, "release_id": first}
        incidents = jira.issues_with_label("signoff-incident")
        assert len(incidents) == 1 and "someone changed it outside signoff" in str(incidents[0].fields)
        assert any("outside signoff" in str(c.body) for c in await slack.until("chat.postMessage", 1))

        # A release of what now serves reconciles it: the next check clears the drift.
        second = f"drift-reconcile-{uuid.uuid4().hex[:6]}"
        await sc.start_release(local_release(bad), release_id=second, base_dir=tmp_path)
        assert (await wait_for(sc, second, lambda s: s.phase.is_final, timeout=90)).phase.value == "succeeded"
        await sc.wait(second)
        report = await check(client, task_queue)
        assert [(f["status"], f["serving"]) for f in report.findings] == [("cleared", bad)]
        assert (await check(client, task_queue)).findings == []
        rows = await until_records(2)
        assert [r["outcome"] for r in rows] == ["detected", "cleared"]
        assert len(jira.issues_with_label("signoff-incident")) == 1


async def test_the_drift_schedule_runs_the_check(client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_DRIFT_INTERVAL", "30m")
    settings = Settings.from_env()
    schedule_id = f"signoff-drift-{uuid.uuid4().hex[:6]}"
    async with running_worker(client, task_queue, settings=settings):
        await ensure_drift_schedule(client, settings, task_queue=task_queue, schedule_id=schedule_id)
        await ensure_drift_schedule(client, settings, task_queue=task_queue, schedule_id=schedule_id)  # idempotent
        handle = client.get_schedule_handle(schedule_id)
        try:
            described = await handle.describe()
            assert described.schedule.spec.intervals[0].every.total_seconds() == 1800
            await handle.trigger()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while loop.time() < deadline:
                actions = (await handle.describe()).info.recent_actions
                if actions:
                    run = client.get_workflow_handle(actions[0].action.workflow_id, run_id=actions[0].action.first_execution_run_id, result_type=DriftReport)
                    assert isinstance(await run.result(), DriftReport)
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the schedule did not start a drift check")
        finally:
            await handle.delete()


async def test_a_bad_interval_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from signoff.errors import ConfigError
    from workers.schedules import drift_interval

    monkeypatch.setenv("SIGNOFF_DRIFT_INTERVAL", "often")
    with pytest.raises(ConfigError, match="SIGNOFF_DRIFT_INTERVAL=often is not a duration of at least 10s; write it like 5m or 1h."):
        drift_interval()
