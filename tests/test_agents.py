"""Agents as governed principals, on the real dev server and worker: `signoff agent suspend`
stops everything the agent has in flight (a release at a gate, one in canary, one building),
refuses its new starts and runbook runs, records it all signed, and `resume` restores it.
Each refusal is also an attack: the request is made the way the attacker would make it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from signoff.audit import show, store_from_settings
from signoff.config import Settings
from signoff.errors import Refused
from signoff.models import AgentSuspended, ReleaseFile
from tests.helpers import records, release_spec, running_worker, wait_for, wait_phase, worker_chat
from tests.stubs.jira_stub import JiraStub

pytestmark = pytest.mark.asyncio

BOT = {"id": "release-bot", "model": "gpt-test-1"}
CAROL, ALICE, DANA = "carol@example.com", "alice@example.com", "dana@example.com"
GATE = {"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["slack", "jira", "cli"]}


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def canary_deploy(tmp_path: Path) -> dict[str, Any]:
    return {
        "target": "command",
        "settings": {
            "deploy": f"echo {{digest}} {{weight}} >> {tmp_path}/deploys",
            "current": "echo '{\"stable\": \"sha256:%s\"}'" % ("b" * 64),
            "rollback": f"echo rollback {{digest}} >> {tmp_path}/deploys",
        },
    }


def at_gate() -> ReleaseFile:
    return release_spec(agent=BOT, gates=[GATE])


def in_canary(tmp_path: Path) -> ReleaseFile:
    return release_spec(agent=BOT, artifact="sha256:" + "c" * 64, deploy=canary_deploy(tmp_path), canary={"steps": [{"set_weight": 20}, {"pause": {}}]})


def building() -> ReleaseFile:
    doc = release_spec(agent=BOT).model_dump(mode="json", exclude_none=True)
    doc.pop("artifact")
    doc["build"] = {"command": "echo compiling the migration; echo half > partial.o; sleep 120", "output": "dist/out.bin", "timeout_seconds": 300}
    return ReleaseFile.model_validate(doc)


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Slack and Jira as the local stubs of their web APIs, configured for the worker."""
    with worker_chat(monkeypatch, channel="C0REL", token="xoxb-agents") as stubs:
        yield stubs


async def test_suspend_stops_gate_canary_and_build_then_refuses_and_resume_restores(client: Client, task_queue: str, tmp_path: Path, chat: Any) -> None:
    slack, jira = chat
    settings = Settings.from_env()
    async with running_worker(client, task_queue, settings=settings) as sc:
        gate_id, canary_id, build_id, other_id = rid("ag-gate"), rid("ag-canary"), rid("ag-build"), rid("human")
        await sc.start_release(at_gate(), release_id=gate_id, base_dir=tmp_path)
        await sc.start_release(in_canary(tmp_path), release_id=canary_id, base_dir=tmp_path)
        await sc.start_release(building(), release_id=build_id, base_dir=tmp_path)
        await sc.start_release(release_spec(gates=[GATE]), release_id=other_id, base_dir=tmp_path)  # a person's: untouched
        await wait_phase(sc, gate_id, "awaiting_approval")
        await wait_for(sc, canary_id, lambda s: bool(s.canary and s.canary.paused))
        await wait_phase(sc, build_id, "building")
        await wait_phase(sc, other_id, "awaiting_approval")
        await asyncio.to_thread(jira_ticket_opened, jira, gate_id)

        result = await sc.control_agent("release-bot", "suspend", identity=CAROL, reason="it shipped an unreviewed migration")
        assert result.accepted and result.status == "suspended"
        assert set(result.stopping) >= {gate_id, canary_id, build_id} and other_id not in result.stopping

        gate = await wait_for(sc, gate_id, lambda s: s.phase.is_final, timeout=30)
        assert gate.phase.value == "aborted" and "agent release-bot suspended: it shipped an unreviewed migration" in (gate.reason or "")
        assert [g.state for g in gate.gates] == ["closed"]
        canary = await wait_for(sc, canary_id, lambda s: s.phase.is_final, timeout=30)
        assert canary.phase.value == "aborted"
        assert (tmp_path / "deploys").read_text().split()[-2:] == ["rollback", "sha256:" + "b" * 64]  # rolled back to the stable
        built = await wait_for(sc, build_id, lambda s: s.phase.is_final, timeout=30)
        assert built.phase.value == "aborted" and built.artifact_digest is None  # the build was cancelled, nothing built
        assert (await sc.status(other_id)).phase.value == "awaiting_approval"

        # The approvers are told: the gate's Slack message is edited to closed, its Jira ticket commented.
        closed_edits = [c for c in await slack.until("chat.update", 1, timeout=20) if "closed" in str(c.body).lower() or "aborted" in str(c.body).lower()]
        assert closed_edits
        await asyncio.to_thread(jira_ticket_commented, jira, gate_id)

        # Signed records: the suspension, and each release's stop.
        control = await records(result.control_id, "agent_suspend", "suspended")
        assert control and control[0]["who"] == CAROL
        for release_id in (gate_id, canary_id, build_id):
            assert await records(release_id, "abort", "agent_suspended"), release_id
            assert await records(release_id, "release_outcome", "aborted"), release_id
        assert await records(canary_id, "rollback", "rolled_back")

        # Runner snapshots: the killed build's workspace, output and sandbox, signed and logged.
        [kept] = await records(build_id, "forensics", "kept")
        snap = kept["evidence"]
        assert snap["what"] == "build" and snap["ended"] == "killed: the release was stopped (cancelled)"
        assert "compiling the migration" in snap["output_tail"] and snap["profile"] == "hermetic"
        assert verified_snapshot(snap["path"])["predicate"]["files"] and any(f["path"] == "partial.o" for f in verified_snapshot(snap["path"])["predicate"]["files"])
        assert await records(gate_id, "forensics", "kept")  # nothing ran: a snapshot taken when it stopped

        # A new start from the suspended agent is refused at once, and so is a runbook run.
        with pytest.raises(Refused, match="agent release-bot is suspended"):
            await sc.start_release(at_gate(), release_id=rid("ag-new"), base_dir=tmp_path)
        run = await sc.runbooks.run("restart-service", params={"service": "checkout"}, identity="release-bot", channel="api", wait=True)
        assert run.phase == "refused" and "agent release-bot is suspended" in (run.reason or "")

        # Resume (by another on-call than the owner) restores it.
        resumed = await sc.control_agent("release-bot", "resume", identity=CAROL, reason="migration reverted, prompt fixed")
        assert resumed.accepted and resumed.status == "active"
        again = await sc.start_release(at_gate(), release_id=rid("ag-again"), base_dir=tmp_path)
        assert again.started_by and again.started_by["principal"] == "agent:release-bot"
        await sc.abort(again.release_id, identity=CAROL, reason="test over")
        await sc.abort(other_id, identity=CAROL, reason="test over")


def verified_snapshot(path: str) -> dict[str, Any]:
    """The snapshot's statement, once its signature verifies with the orchestrator's public key."""
    import json

    from signoff.audit import keyid_for, public_key_from_settings, statement_of
    from signoff.trust.dsse import envelope_signed_by

    envelope = json.loads(Path(path).read_text())
    key = public_key_from_settings(Settings.from_env())
    assert envelope_signed_by(envelope, {keyid_for(key): key}) is not None, "the snapshot is not signed by the orchestrator"
    return statement_of(envelope)


async def test_a_build_killed_for_its_time_limit_leaves_a_signed_snapshot(client: Client, task_queue: str, tmp_path: Path) -> None:
    doc = release_spec().model_dump(mode="json", exclude_none=True)
    doc.pop("artifact")
    doc["build"] = {"command": "echo fetching the world; sleep 60", "output": "out.bin", "timeout_seconds": 2}
    async with running_worker(client, task_queue) as sc:
        r = rid("limit")
        await sc.start_release(ReleaseFile.model_validate(doc), release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final, timeout=60)
        assert done.phase.value == "failed" and "did not finish within 2 seconds" in (done.reason or "")
        [kept] = await records(r, "forensics", "kept")
        assert kept["evidence"]["ended"] == "killed after its 2 s time limit" and "fetching the world" in kept["evidence"]["output_tail"]
        assert verified_snapshot(kept["evidence"]["path"])["predicateType"] == "https://signoff.dev/forensics/v1"


def jira_ticket_opened(jira: JiraStub, release_id: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not jira.requests_to("POST", r".*/issue/?"):
        assert time.monotonic() < deadline, "no Jira approval ticket was created"
        time.sleep(0.1)


def jira_ticket_commented(jira: JiraStub, release_id: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not any(release_id in str(c) for i in jira.issues.values() for c in i.comments):
        assert time.monotonic() < deadline, f"the Jira ticket of {release_id} was not told the gate closed"
        time.sleep(0.1)


async def test_only_on_call_or_sre_may_suspend_and_refusals_are_recorded(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid("ag-gate")
        await sc.start_release(at_gate(), release_id=r, base_dir=tmp_path)
        await wait_phase(sc, r, "awaiting_approval")
        with pytest.raises(Refused, match="alice@example.com is not on-call or SRE"):
            await sc.control_agent("release-bot", "suspend", identity=ALICE, reason="I do not like it")
        # The agent cannot suspend or resume itself (or another agent).
        with pytest.raises(Refused, match="only people may suspend an agent"):
            await sc.control_agent("release-bot", "suspend", identity="release-bot", reason="self")
        refused = await records_any("refused")
        assert any(row["actor"]["identity"] == ALICE for row in refused)
        assert (await sc.status(r)).phase.value == "awaiting_approval"  # nothing changed
        await sc.control_agent("release-bot", "suspend", identity=CAROL, reason="drill")
        # The owner the agent acts for cannot vouch for it again.
        with pytest.raises(Refused, match="owner agent release-bot acts for"):
            await sc.control_agent("release-bot", "resume", identity=DANA, reason="it is fine")
        await wait_for(sc, r, lambda s: s.phase.is_final, timeout=30)


async def records_any(outcome: str) -> list[dict[str, Any]]:
    store = store_from_settings(Settings.from_env())
    for _ in range(100):
        rows = [statement(e) for e in store.entries()]
        rows = [r for r in rows if r and r.get("kind") == "agent_suspend" and r.get("outcome") == outcome]
        if rows:
            return rows
        await asyncio.sleep(0.2)
    return []


def statement(entry: Any) -> dict[str, Any] | None:
    from signoff.audit import statement_of

    try:
        return statement_of(entry["envelope"])["predicate"]
    except Exception:  # noqa: BLE001 - not a decision record
        return None


async def test_forged_suspension_signal_stops_nothing(client: Client, task_queue: str, tmp_path: Path) -> None:
    """An attacker with a Temporal credential sends the release the suspension nudge directly:
    the worker's registry says the agent is active, so the release goes on."""
    async with running_worker(client, task_queue) as sc:
        r = rid("ag-forged")
        await sc.start_release(at_gate(), release_id=r, base_dir=tmp_path)
        await wait_phase(sc, r, "awaiting_approval")
        await client.get_workflow_handle(r).signal("agent_suspended", AgentSuspended(agent_id="release-bot", control_id="agent-control-forged"))
        await asyncio.sleep(2)
        status = await sc.status(r)
        assert status.phase.value == "awaiting_approval" and status.reason is None
        assert not [row for row in show(r, store_from_settings(Settings.from_env())) if row["kind"] == "abort"]
        await sc.abort(r, identity=CAROL, reason="test over")


async def test_agent_commands_through_the_console_script(dev_env: Any, client: Client, task_queue: str, tmp_path: Path) -> None:
    """`signoff agent …` as people and scripts run it: JSON on stdout, exit 1 with one sentence
    when refused, `--as` signing with the dev stack's key."""
    from tests.test_cli import signoff

    env = {"SIGNOFF_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
    async with running_worker(client, task_queue) as sc:
        listed = await signoff("agent", "list", "--json", env=env)
        assert listed.code == 0 and [a["id"] for a in listed.json()["agents"]] == ["release-bot"]
        refused = await signoff("agent", "suspend", "release-bot", "--as", ALICE, "--reason", "no", env=env)
        assert refused.code == 1
        assert refused.error_line() == "suspend of agent release-bot was refused: alice@example.com is not on-call or SRE; only they may suspend an agent."
        done = await signoff("agent", "suspend", "release-bot", "--as", CAROL, "--reason", "drill", "--json", env=env)
        assert done.code == 0 and done.json()["status"] == "suspended"
        shown = await signoff("agent", "show", "release-bot", "--json", env=env)
        assert shown.json()["status"] == "suspended" and shown.json()["last_change"]["by"] == CAROL
        with pytest.raises(Refused, match="agent release-bot is suspended"):
            await sc.start_release(at_gate(), release_id=rid("cli-new"), base_dir=tmp_path)
        resumed = await signoff("agent", "resume", "release-bot", "--as", CAROL, "--json", env=env)
        assert resumed.code == 0 and resumed.json()["status"] == "active"
        unknown = await signoff("agent", "show", "ghost-bot", env=env)
        assert unknown.code == 1 and unknown.error_line() == "no agent ghost-bot is registered; check the id with `signoff agent list`."


async def test_a_replayed_suspension_request_is_refused(client: Client, task_queue: str) -> None:
    """An attacker who captured on-call's signed suspension replays it after the agent was
    resumed, straight to Temporal: under its own id (the same request again) and under a new id."""
    from signoff.models import AgentControl, AgentControlResult

    async with running_worker(client, task_queue) as sc:
        captured: dict[str, Any] = {}
        original = sc.sign

        def keep(kind: str, ident: str, **request: Any) -> Any:
            proof = original(kind, ident, **request)
            captured.setdefault(request["action"], proof)
            return proof

        sc.sign = keep  # type: ignore[method-assign]
        first = await sc.control_agent("release-bot", "suspend", identity=CAROL, reason="drill")
        await sc.control_agent("release-bot", "resume", identity=CAROL, reason="drill over")
        proof = captured["suspend_agent"]
        for control_id in (first.control_id, "agent-control-attacker"):
            replay = AgentControl(control_id=control_id, agent_id="release-bot", action="suspend", identity=CAROL, reason="drill", proof=proof)
            result = await client.execute_workflow(
                "AgentControlWorkflow", replay, id=f"{control_id}-{uuid.uuid4().hex[:4]}" if control_id != first.control_id else control_id,
                task_queue=task_queue, result_type=AgentControlResult,
            )
            assert not result.accepted and ("replay refused" in result.reason), result.reason
        assert registry_status() == "active"  # still resumed


def registry_status() -> str:
    from signoff.trust.registry import TrustStore

    s = Settings.from_env()
    return TrustStore(s.directory_path, s.agents_path, s.agent_standings_path).current().agents["release-bot"].status
