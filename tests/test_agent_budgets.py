"""Budgets as policy, on the real dev server: the worker counts what the agent used today and
the policy (policies/release_budgets.rego) refuses the release that would go over, naming the
budget. The Rego unit tests for each budget are in policies/release_budgets_test.rego."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

from signoff.audit import show, store_from_settings
from signoff.config import Settings
from tests.helpers import release_spec, running_worker, wait_for

pytestmark = pytest.mark.asyncio

def budgeted_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **budgets: float) -> dict[str, str]:
    """The dev agent registry plus a fresh agent with these budgets and a dev key. Fresh, because
    the dev server (and so its count of the agent's releases today) is shared by every test."""
    from signoff.trust.credentials import dev_key_path
    from signoff.trust.keys import ensure_key, public_pem

    state = Path(os.environ["SIGNOFF_STATE_DIR"])
    ident = f"budget-bot-{uuid.uuid4().hex[:8]}"
    key = ensure_key(dev_key_path(state, "agent", ident))
    doc = yaml.safe_load((state / "dev" / "agents.yaml").read_text())
    doc["agents"].append({"id": ident, "owner": "dana@example.com", "services": ["checkout"], "environments": ["staging"], "budgets": budgets, "keys": [public_pem(key.public_key())]})
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("SIGNOFF_AGENTS", str(path))
    return {"id": ident, "model": "gpt-test-1"}


async def test_a_budget_of_two_releases_a_day_refuses_the_third(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = budgeted_registry(tmp_path, monkeypatch, releases_per_day=2)
    settings = Settings.from_env()
    async with running_worker(client, task_queue, settings=settings) as sc:
        for n in (1, 2):
            r = f"budget-{n}-{uuid.uuid4().hex[:6]}"
            await sc.start_release(release_spec(agent=bot), release_id=r, base_dir=tmp_path)
            done = await wait_for(sc, r, lambda s: s.phase.is_final)
            assert done.phase.value == "succeeded", done.reason
        third = f"budget-3-{uuid.uuid4().hex[:6]}"
        await sc.start_release(release_spec(agent=bot), release_id=third, base_dir=tmp_path)
        denied = await wait_for(sc, third, lambda s: s.phase.is_final)
        assert denied.phase.value == "denied"
        assert denied.reason == (
            f"agent {bot['id']} is over its budget releases_per_day: this would be its release number 3 today, "
            "and releases_per_day allows 2; wait until tomorrow (UTC) or have the budget raised"
        )
        # A person's release is not the agent's budget.
        human = f"budget-human-{uuid.uuid4().hex[:6]}"
        await sc.start_release(release_spec(), release_id=human, base_dir=tmp_path)
        assert (await wait_for(sc, human, lambda s: s.phase.is_final)).phase.value == "succeeded"
        # Denied releases do not use the budget up further; the count the policy saw is signed.
        policy = [r for r in show(third, store_from_settings(settings)) if r["kind"] == "policy"]
        assert policy[0]["outcome"] == "denied"
        usage = policy[0]["evidence"]["input"]["agent"]
        assert usage["usage"]["releases_today"] == 2 and usage["budgets"] == {"releases_per_day": 2.0}


async def test_build_minutes_are_counted_from_the_signed_log(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build's duration is in its signed record; once the day's builds reach the budget, the
    next release is denied naming build_minutes_per_day."""
    bot = budgeted_registry(tmp_path, monkeypatch, build_minutes_per_day=0.01)  # 0.6 s of building a day
    doc = release_spec(agent=bot).model_dump(mode="json", exclude_none=True)
    doc.pop("artifact")
    doc["build"] = {"command": "sleep 1; echo built > out.bin", "output": "out.bin"}
    from signoff.models import ReleaseFile

    spec = ReleaseFile.model_validate(doc)
    async with running_worker(client, task_queue) as sc:
        first = f"minutes-1-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=first, base_dir=tmp_path)
        assert (await wait_for(sc, first, lambda s: s.phase.is_final)).phase.value == "succeeded"
        second = f"minutes-2-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=second, base_dir=tmp_path)
        denied = await wait_for(sc, second, lambda s: s.phase.is_final)
        assert denied.phase.value == "denied" and "over its budget build_minutes_per_day: its builds ran" in (denied.reason or "")
