"""A release Temporal terminates mid-canary is found by the reaper, its canary rolled back and
what happened recorded as its last signed decision; the Schedule that runs it exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from signoff.config import Settings
from tests.helpers import running_worker, wait_for, wait_phase
from tests.prom import PrometheusServer
from tests.test_release_canary import canary_release, checkout

pytestmark = pytest.mark.asyncio


async def test_a_release_terminated_mid_canary_is_rolled_back_and_recorded(client: Client, task_queue: str, local_stack: PrometheusServer, tmp_path: Path) -> None:
    from activities.deploy import target_for

    async with running_worker(client, task_queue) as sc:
        (tmp_path / "a").mkdir()
        first = await sc.start_release(canary_release("good", canary=None), release_id=f"base-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "a"))
        stable = (await wait_phase(sc, first.release_id, "succeeded", timeout=120)).artifact_digest

        rid = f"cut-{uuid.uuid4().hex[:6]}"
        (tmp_path / "b").mkdir()
        paused = canary_release("bad", canary={"steps": [{"set_weight": 30}, {"pause": {}}]})
        await sc.start_release(paused, release_id=rid, base_dir=checkout(tmp_path / "b"))
        status = await wait_for(sc, rid, lambda s: s.canary is not None and s.canary.paused, timeout=120)
        shipping = status.artifact_digest
        placement = target_for(Settings.from_env(), paused.deploy).current("checkout")
        assert placement.canary == shipping and placement.stable == stable and placement.weight == 30

        # an operator (or a history limit) ends it from the outside: no outcome, canary still serving
        await client.get_workflow_handle(rid).terminate(reason="operator pulled the plug")

        reaped = (await client.execute_workflow("ReaperWorkflow", 1.0, id=f"reaper-{uuid.uuid4().hex[:6]}", task_queue=task_queue, result_type=dict))["reaped"]
        mine = [r for r in reaped if r["release_id"] == rid]
        assert [(r["status"], r["outcome"]) for r in mine] == [("TERMINATED", "rolled_back")], reaped
        after = target_for(Settings.from_env(), paused.deploy).current("checkout")
        assert after.canary is None and after.stable == stable

        # reaped once: a second run finds nothing more to do for it
        again = (await client.execute_workflow("ReaperWorkflow", 1.0, id=f"reaper-{uuid.uuid4().hex[:6]}", task_queue=task_queue, result_type=dict))["reaped"]
        assert [r for r in again if r["release_id"] == rid] == []

    env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host}
    done = subprocess.run([sys.executable, "-c", "from signoff.cli import main; main()", "audit", "verify", rid, "--json"], env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["ok"] and doc["guarantees"] == {rid: "history"}, doc
    show = subprocess.run([sys.executable, "-c", "from signoff.cli import main; main()", "audit", "show", rid, "--json"], env=env, capture_output=True, text=True, timeout=60)
    last = json.loads(show.stdout)["records"][-1]
    assert (last["kind"], last["outcome"]) == ("release_reaped", "rolled_back")
    assert "ended terminated mid-canary" in last["why"] and last["evidence"]["before"]["canary"] == shipping


async def test_the_schedules_include_the_reaper(client: Client, task_queue: str) -> None:
    from workers.schedules import REAPER_SCHEDULE_ID, ensure_schedules

    made = await ensure_schedules(client, Settings.from_env(), task_queue=task_queue)
    assert REAPER_SCHEDULE_ID in made
    described = await client.get_schedule_handle(REAPER_SCHEDULE_ID).describe()
    assert described.schedule.action.workflow == "ReaperWorkflow"
