"""canary.on_failure: hold and explainable verdicts, end to end: the real example service on the
local target, real Prometheus, the real ReleaseWorkflow, Slack through its local stub. A failed
analysis holds the new digest at weight 0 without redeploying the previous one until a person
decides; every notice names the resolved query, the value, the condition and its threshold."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.deploy import target_for
from signoff.audit import show, store_from_settings
from signoff.config import Settings
from signoff.errors import Refused
from tests.helpers import running_worker, wait_for, wait_phase, worker_slack
from tests.prom import PrometheusServer
from tests.test_release_canary import canary_release, checkout, stack  # noqa: F401 - the fixture

pytestmark = pytest.mark.asyncio


async def test_failed_canary_with_hold_stays_at_weight_0_until_a_person_decides(
    client: Client, task_queue: str, stack: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    with worker_slack(monkeypatch, token="xoxb-h") as slack:
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as sc:
            (tmp_path / "a").mkdir()
            first = await sc.start_release(canary_release("good", canary=None), release_id=f"base-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "a"))
            good = (await wait_phase(sc, first.release_id, "succeeded", timeout=120)).artifact_digest

            bad_id = f"hold-{uuid.uuid4().hex[:6]}"
            (tmp_path / "b").mkdir()
            spec = canary_release("bad")
            canary = spec.canary
            assert canary is not None
            # failure_limit 1: two failed measurements before the analysis fails, so the thread has a reply
            analysis = canary.analyses["error-rate"].model_copy(update={"failure_limit": 1})
            spec = spec.model_copy(update={"canary": canary.model_copy(update={"on_failure": "hold", "analyses": {"error-rate": analysis}})})
            await sc.start_release(spec, release_id=bad_id, base_dir=checkout(tmp_path / "b"))
            held = await wait_for(sc, bad_id, lambda s: s.phase.value == "held" or s.phase.is_final, timeout=180)
            assert held.phase.value == "held", held.reason
            bad = held.artifact_digest
            assert held.hold is not None and held.hold.decision is None and held.hold.default == "rollback"
            await asyncio.sleep(3)  # nobody decides for a while: nothing moves
            still = await sc.status(bad_id)
            placement = target_for(settings, spec.deploy).current("checkout")
            assert still.phase.value == "held" and still.canary is not None and still.canary.weight == 0
            assert placement.stable == good and placement.weight == 0  # the new digest gets no traffic, the old one was not redeployed
            assert not [r for r in show(bad_id, store_from_settings(settings)) if r["kind"] == "rollback"]

            with pytest.raises(Refused, match="requester cannot decide"):
                await sc.resolve_hold(bad_id, identity="dana@example.com", decision="forward", reason="ship it")
            await sc.resolve_hold(bad_id, identity="alice@example.com", decision="rollback", reason="errors are real")
            done = await wait_phase(sc, bad_id, "rolled_back", timeout=60)
            await sc.handle(bad_id).result()  # every record and notice written
        assert done.hold is not None and done.hold.decided_by == "alice@example.com"
        rows = [(r["kind"], r["outcome"]) for r in show(bad_id, store_from_settings(settings))]
        assert rows.index(("canary_hold", "held")) < rows.index(("canary_hold", "rollback")) < rows.index(("rollback", "rolled_back"))

        # explainable verdicts: the failure notice, the rollback notice and the incident carry them
        resolved = f'digest="{bad}"'
        posts = [c.body for c in slack.calls("chat.postMessage")]
        held_notice = next(p["text"] for p in posts if "HELD at weight 0" in p["text"])
        assert resolved in held_notice.replace("&quot;", '"') and ">= 0.05" in held_notice.replace("&gt;", ">")
        rollback_notice = next(p["text"] for p in posts if "rolled back" in p["text"])
        assert resolved in rollback_notice.replace("&quot;", '"') and ">= 0.05" in rollback_notice.replace("&gt;", ">")
        # a thread per release: the first measurement starts it, the others reply in it
        measured = [p for p in posts if "error-rate:" in p["text"] and "query" in p["text"]]
        assert len(measured) >= 2
        thread = measured[0].get("thread_ts")
        assert thread is None and all(p.get("thread_ts") for p in measured[1:])
        assert len({p["thread_ts"] for p in measured[1:]}) == 1
        failed = next(m for m in done.canary.analyses if m.verdict == "failed")  # type: ignore[union-attr]
        assert failed.query and resolved in failed.query and failed.condition == "success: < 0.05; failure: >= 0.05"
        assert json.dumps(failed.model_dump(mode="json"))  # what the incident ticket table is built from
