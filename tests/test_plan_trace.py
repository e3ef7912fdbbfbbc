"""Advisor mode and trace queries on the real dev server and worker.

`release plan` (the console script) on the examples names tier, gates, approvers and denials and
starts nothing; its signed statement verifies (and a forged one does not); its hash is in the
status of the release later started from the same file. `audit trace` answers from the signed
log with each result's verification, and flags a record tampered with on disk.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from signoff.audit import public_key_from_settings, store_from_settings
from signoff.config import Settings
from signoff.errors import NotFound
from signoff.models import DeploySpec
from signoff.plan import verify_statement
from signoff.trace import TraceQuery, last_good, trace
from signoff.trust.registry import TrustStore
from tests.helpers import DIGEST_A, DIGEST_B, REPO, release_spec, running_worker, wait_for
from tests.test_cli import signoff

pytestmark = pytest.mark.asyncio

BOT = {"id": "release-bot", "model": "model-one"}


def registry() -> Any:
    s = Settings.from_env()
    return TrustStore(s.directory_path, s.agents_path, s.agent_standings_path).current()


async def test_plan_on_the_examples_names_gates_approvers_and_denials_and_starts_nothing(client: Client, dev_env: Any) -> None:
    env = {"SIGNOFF_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host}
    before = [wf.id async for wf in client.list_workflows()]
    good = await signoff("release", "plan", str(REPO / "examples" / "release-good.yaml"), "--json", env=env)
    assert good.code == 0, good.stderr
    plan = good.json()
    # release-bot in production: high tier, two approvers with an SRE, never dana (its owner).
    assert plan["tier"] == "high" and [g["name"] for g in plan["gates"]] == ["production"]
    assert plan["approvers"] == {"production": ["alice@example.com", "bob@example.com", "carol@example.com"]}
    assert plan["denials"] == [] and plan["canary"] == ["weight 25%", "analysis error-rate", "weight 50%", "analysis error-rate", "weight 100%"]
    doc = verify_statement(plan["statement"], registry())
    assert doc["predicateType"] == "https://signoff.dev/plan/v1" and doc["predicate"]["plan_sha256"] == plan["plan_sha256"]
    assert doc["predicate"]["planned_by"] == "agent:release-bot"
    # An agent file touching CI without a co-requester: the denial is in the plan, exit 1.
    risky = Path(REPO / "examples" / "release-good.yaml").read_text().replace("paths: [examples/service/checkout/server.py]", "paths: [.github/workflows/release.yml]")
    risky_file = Path(Settings.from_env().state_dir) / "risky.yaml"
    risky_file.write_text(risky)
    (risky_file.parent / "service").mkdir(exist_ok=True)
    denied = await signoff("release", "plan", str(risky_file), "--json", env=env)
    assert denied.code == 1 and any("changes CI configuration" in d for d in denied.json()["denials"])
    gated = await signoff("release", "plan", str(REPO / "examples" / "release-gated.yaml"), env=env)
    assert gated.code in (0, 1) and "tier" in gated.stdout and "nothing was started" in gated.stdout
    assert [wf.id async for wf in client.list_workflows()] == before  # nothing was started


async def test_a_forged_or_altered_plan_does_not_verify() -> None:
    settings = Settings.from_env()
    run = await signoff("release", "plan", str(REPO / "examples" / "release-good.yaml"), "--json")
    envelope = run.json()["statement"]
    doc = json.loads(base64.b64decode(envelope["payload"]))
    doc["predicate"]["core"]["tier"] = "low"  # an agent making its change look harmless
    forged = {**envelope, "payload": base64.b64encode(json.dumps(doc).encode()).decode()}
    with pytest.raises(ValueError, match="does not verify with any key registered for agent release-bot"):
        verify_statement(forged, registry())
    assert settings.state_dir.exists()


async def test_the_plan_hash_is_in_the_status_of_the_release_started_from_the_file(client: Client, task_queue: str, tmp_path: Path) -> None:
    spec = release_spec(agent=BOT, gates=[{"name": "staging", "required": 1, "from_groups": ["checkout-owners"], "channels": ["cli"]}])
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    plan = (await signoff("release", "plan", str(path), "--json")).json()
    async with running_worker(client, task_queue) as sc:
        rid = f"planned-{uuid.uuid4().hex[:6]}"
        await sc.start_release(path, release_id=rid)
        status = await wait_for(sc, rid, lambda s: s.phase.value == "awaiting_approval" or s.phase.is_final)
        assert status.planned_sha256 == plan["plan_sha256"]
        # Another file (a different gate) is another plan: the hashes differ.
        other = tmp_path / "other.yaml"
        other.write_text(path.read_text().replace("required: 1", "required: 2"))
        assert (await signoff("release", "plan", str(other), "--json")).json()["plan_sha256"] != status.planned_sha256
        await sc.abort(rid, identity="carol@example.com", reason="test over")


def built(**overrides: Any) -> Any:
    from signoff.models import ReleaseFile

    doc = release_spec(**overrides).model_dump(mode="json", exclude_none=True)
    doc.pop("artifact")
    doc["build"] = {"command": "echo trace > out.bin", "output": "out.bin"}
    return ReleaseFile.model_validate(doc)


def tamper(settings: Settings, workflow_id: str) -> None:
    """Edit one signed record of `workflow_id` in the log file, the way someone with disk access would."""
    lines = settings.audit_log.read_text().splitlines()
    for n, line in enumerate(lines):
        entry = json.loads(line)
        statement = json.loads(base64.b64decode(entry["envelope"]["payload"])) if entry.get("workflow_id") == workflow_id else None
        if statement and statement["predicate"]["kind"] == "release_outcome":
            statement["predicate"]["reasons"] = ["nothing to see here"]
            entry["envelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
            lines[n] = json.dumps(entry)
            settings.audit_log.write_text("\n".join(lines) + "\n")
            return
    raise AssertionError(f"no outcome record of {workflow_id} to tamper with")


async def test_trace_by_digest_path_and_model_with_verification_and_a_tampered_record(client: Client, task_queue: str, tmp_path: Path) -> None:
    settings = Settings.from_env()
    async with running_worker(client, task_queue, settings=settings) as sc:
        ids = {}
        for name, spec in {
            "bot": release_spec(agent=BOT, change={"summary": "bot docs", "paths": ["docs/checkout.md"]}),
            "dana": release_spec(change={"summary": "dana docs", "paths": ["docs/api/orders.md"]}),
            "other": release_spec(artifact=DIGEST_B, change={"summary": "other", "paths": ["docs/other.md"]}),
            "built": built(change={"summary": "built", "paths": ["docs/built.md"]}),
        }.items():
            ids[name] = f"trace-{name}-{uuid.uuid4().hex[:6]}"
            await sc.start_release(spec, release_id=ids[name], base_dir=tmp_path)
            done = await wait_for(sc, ids[name], lambda s: s.phase.is_final)
            assert done.phase.value == "succeeded", done.reason
        store, key = store_from_settings(settings), public_key_from_settings(settings)
        await wait_for_records(store, ids.values())  # the outboxes drain before the worker stops

    by_digest = {r["workflow_id"]: r for r in trace(store, key, TraceQuery(digest=DIGEST_A))}
    assert set(by_digest) == {ids["bot"], ids["dana"]} and all(r["verified"] for r in by_digest.values())
    assert [r["workflow_id"] for r in trace(store, key, TraceQuery(path="docs/api/*"))] == [ids["dana"]]
    by_model = trace(store, key, TraceQuery(model="model-one"))
    assert [r["workflow_id"] for r in by_model] == [ids["bot"]] and by_model[0]["agent"] == "release-bot"
    assert [r["workflow_id"] for r in trace(store, key, TraceQuery(agent="release-bot", since=None))] == [ids["bot"]]
    # The last good digest is the one signoff built with signed provenance (the others had none).
    good = last_good(store, key, "checkout")
    assert good["release_id"] == ids["built"] and good["provenance"] == "signoff-build"

    tamper(settings, ids["dana"])
    flagged = {r["workflow_id"]: r for r in trace(store, key, TraceQuery(digest=DIGEST_A))}
    assert set(flagged) == {ids["bot"], ids["dana"]}
    assert flagged[ids["dana"]]["verified"] is False and flagged[ids["dana"]]["problems"]
    assert flagged[ids["bot"]]["verified"] is True  # written before the tampered record: still verified
    cli = await signoff("audit", "trace", "--digest", DIGEST_A, "--json")
    assert cli.code == 1 and {r["workflow_id"]: r["verified"] for r in cli.json()["results"]}[ids["dana"]] is False
    with pytest.raises(NotFound):
        last_good(store, key, "no-such-service")


async def test_rollback_to_last_good_reverifies_its_provenance(client: Client, task_queue: str, tmp_path: Path) -> None:
    """The runbook action `rollback to: last-good` takes the digest from the signed log and checks
    its signed build provenance again; provenance tampered with on disk stops the rollback."""
    from activities.artifacts import store_for
    from activities.runbook_actions import RunbookActivities
    from tests.test_runbooks import step

    settings = Settings.from_env()
    async with running_worker(client, task_queue, settings=settings) as sc:
        rid = f"lastgood-{uuid.uuid4().hex[:6]}"
        await sc.start_release(built(change={"summary": "built", "paths": ["docs/built.md"]}), release_id=rid, base_dir=tmp_path)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final)
        await sc.wait(rid)
    good = last_good(store_from_settings(settings), public_key_from_settings(settings), "checkout")
    assert good["release_id"] == rid and good["digest"] == done.artifact_digest
    deploys = tmp_path / "rollbacks"
    request = step("rollback", {"service": "checkout", "to": "last-good"}).model_copy(
        update={"target": DeploySpec(target="command", settings={"deploy": "true", "current": "true", "rollback": f"echo {{digest}} >> {deploys}"})}
    )
    from activities.deploy import CommandTarget

    CommandTarget(settings, request.target.settings).deploy("checkout", DIGEST_B, 100)  # something else serves now
    acts = RunbookActivities(settings)
    result = acts.run_step(request)
    assert result.state == "succeeded" and deploys.read_text().split() == [good["digest"]]
    signed = store_for(settings.state_dir).signed_provenance_path_for(good["digest"])
    envelope = json.loads(signed.read_text())
    envelope["signatures"][0]["sig"] = base64.b64encode(b"\0" * 64).decode()
    signed.write_text(json.dumps(envelope))
    CommandTarget(settings, request.target.settings).deploy("checkout", DIGEST_B, 100)  # B serves again
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError, match="no longer has valid provenance, so it is not rolled back to"):
        acts.run_step(request)
    assert deploys.read_text().split() == [good["digest"]]  # nothing rolled back the second time


async def wait_for_records(store: Any, ids: Any, timeout: float = 20) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wanted = set(ids)
    while loop.time() < deadline:
        from signoff.trace import trails

        found = trails(store.entries())
        if all(w in found and found[w].outcome for w in wanted):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the outcome records were not written in time")


async def test_trace_since_reads_dates_and_spans_and_refuses_nonsense_in_one_sentence() -> None:
    from datetime import datetime, timezone

    from signoff.trace import parse_since

    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("36h", now=now) == datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-30", now=now) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    bad = await signoff("audit", "trace", "--since", "last monday")
    assert bad.code == 2
    assert bad.error_line() == "--since 'last monday' is neither an ISO date/time (2026-11-30, 2026-11-30T09:00Z) nor a span (36h, 7d)."


async def test_a_runbook_run_asked_for_by_an_agent_is_in_its_trace() -> None:
    from signoff.trace import trails

    def entry(wid: str, predicate: dict[str, Any], subject: str) -> dict[str, Any]:
        statement = {"subject": [{"name": subject, "digest": {"sha256": "0" * 64}}], "predicate": predicate}
        return {"workflow_id": wid, "index": 0, "envelope": {"payload": base64.b64encode(json.dumps(statement).encode()).decode()}}

    found = trails([
        entry("run-1", {"kind": "runbook_outcome", "outcome": "refused", "actor": {"identity": "release-bot", "channel": "api"}, "at": "2026-12-02T10:00:00Z"}, "runbook:restart-service"),
        entry("run-2", {"kind": "runbook_outcome", "outcome": "succeeded", "actor": {"identity": "carol@example.com"}, "at": "2026-12-02T11:00:00Z"}, "runbook:restart-service"),
    ])
    assert TraceQuery(agent="release-bot").matches(found["run-1"]) and found["run-1"].kind == "runbook" and found["run-1"].outcome == "refused"
    assert not TraceQuery(agent="release-bot").matches(found["run-2"]) and TraceQuery(person="carol@example.com").matches(found["run-2"])
