"""Approval gates inside the real ReleaseWorkflow on the real Temporal dev server."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from signoff.errors import Refused
import yaml
from temporalio.client import Client

from signoff.models import ApprovalAttempt
from tests.helpers import DIGEST_A, DIGEST_B, REPO, attested, dev_directory, unregistered_key, write_directory, gated_spec, running_worker, wait_for, wait_phase, with_plan

pytestmark = pytest.mark.asyncio


def rid() -> str:
    return f"rel-test-{uuid.uuid4().hex[:10]}"


def attempt(release_id: str, who: str, decision: str = "approve", channel: str = "cli", digest: str | None = DIGEST_A, reason: str = "", gate: str | None = None) -> ApprovalAttempt:
    return ApprovalAttempt(release_id=release_id, identity=who, decision=decision, channel=channel, digest=digest, reason=reason, gate=gate)  # type: ignore[arg-type]


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return dev_directory(tmp_path, monkeypatch)


async def test_quorum_reached_release_continues(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        first = await sc.submit_approval(attested(await with_plan(sc, attempt(r, "alice@example.com", channel="slack"))))
        assert first.accepted and first.gate is not None
        assert first.gate.progress.startswith("1 of 2: alice@example.com")
        second = await sc.submit_approval(attempt(r, "bob@example.com", channel="api"))
        assert second.accepted and second.gate is not None and second.gate.state == "approved"
        done = await wait_phase(sc, r, "succeeded")
        assert [a.by for a in done.gates[0].approvals] == ["alice@example.com", "bob@example.com"]
        assert [a.channel for a in done.gates[0].approvals] == ["slack", "api"]


async def test_refusals_are_recorded_with_reasons(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        requester = await sc.submit_approval(attempt(r, "dana@example.com"))
        assert not requester.accepted and "requester" in requester.reason
        outsider = await sc.submit_approval(attempt(r, "carol@example.com"))
        assert not outsider.accepted and "not in the groups" in outsider.reason
        stale = await sc.submit_approval(attempt(r, "alice@example.com", digest=DIGEST_B))
        assert not stale.accepted and "review the current artifact" in stale.reason
        unregistered_key("mallory@example.com")
        unknown = await sc.submit_approval(attempt(r, "mallory@example.com"))
        assert not unknown.accepted and "not in the approver directory" in unknown.reason and "not recorded" in unknown.reason
        status = await sc.status(r)
        assert status.phase.value == "awaiting_approval"
        # attributable refusals are recorded; a proof that proves nobody is turned away unrecorded
        refused = [(x.by, x.reason) for x in status.gates[0].refusals]
        assert [who for who, _ in refused] == ["dana@example.com", "carol@example.com", "alice@example.com"]
        assert status.gates[0].approvals == []
        await sc.abort(r, identity="carol@example.com", reason="test cleanup")
        await wait_phase(sc, r, "aborted")


async def test_same_person_twice_and_via_two_channels_counts_once(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        results = await asyncio.gather(
            sc.submit_approval(attested(await with_plan(sc, attempt(r, "alice@example.com", channel="slack")))),
            sc.submit_approval(attested(await with_plan(sc, attempt(r, "alice@example.com", channel="slack")))),
            sc.submit_approval(attempt(r, "alice@example.com", channel="cli", gate="production")),
            sc.submit_approval(attempt(r, "alice@example.com", channel="cli")),
        )
        assert all(x.accepted for x in results)
        status = await sc.status(r)
        assert [a.by for a in status.gates[0].approvals] == ["alice@example.com"]
        assert status.gates[0].state == "open"
        await sc.submit_approval(attempt(r, "bob@example.com"))
        await wait_phase(sc, r, "succeeded")


async def test_quotas_need_each_group(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        spec = gated_spec(required=2, from_groups=["release-managers", "sre"], quotas={"sre": 1, "release-managers": 1})
        await sc.start_release(spec, release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        await sc.submit_approval(attempt(r, "alice@example.com"))
        two_rms = await sc.submit_approval(attempt(r, "bob@example.com"))
        assert two_rms.accepted and two_rms.gate is not None and two_rms.gate.state == "open"
        assert "sre 0/1" in two_rms.gate.progress
        with_sre = await sc.submit_approval(attempt(r, "carol@example.com"))
        assert with_sre.gate is not None and with_sre.gate.state == "approved"
        await wait_phase(sc, r, "succeeded")


async def test_veto_rejects_release(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        await sc.submit_approval(attempt(r, "alice@example.com"))
        veto = await sc.submit_approval(attempt(r, "bob@example.com", decision="reject", reason="breaks refunds"))
        assert veto.accepted and veto.gate is not None and veto.gate.state == "rejected"
        done = await wait_phase(sc, r, "rejected")
        assert done.gates[0].rejections[0].reason == "breaks refunds"
        try:  # the release is closing or closed: refused either by the workflow or by Temporal
            late = await sc.submit_approval(attempt(r, "bob@example.com"))
            assert not late.accepted
        except Refused as e:
            assert "has already finished" in str(e)


async def test_reject_without_reason_is_malformed(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        result = await sc.submit_approval(attempt(r, "bob@example.com", decision="reject", reason=" "))
        assert not result.accepted and "needs a reason" in result.reason
        assert (await sc.status(r)).gates[0].state == "open"
        await sc.abort(r, identity="dana@example.com", reason="cleanup")
        await wait_phase(sc, r, "aborted")


async def test_revoke_before_quorum(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        await sc.submit_approval(attempt(r, "alice@example.com"))
        revoked = await sc.submit_approval(attempt(r, "alice@example.com", decision="revoke"))
        assert revoked.accepted and revoked.gate is not None and revoked.gate.approvals == []
        bob = await sc.submit_approval(attempt(r, "bob@example.com"))
        assert bob.gate is not None and bob.gate.state == "open" and bob.gate.progress.startswith("1 of 2: bob")
        nothing = await sc.submit_approval(attempt(r, "carol@example.com", decision="revoke"))
        assert not nothing.accepted
        await sc.abort(r, identity="dana@example.com", reason="cleanup")
        await wait_phase(sc, r, "aborted")


async def test_removed_from_group_is_refused(client: Client, task_queue: str, directory: Path) -> None:
    """bob is removed from release-managers while two releases wait. A gate reads the directory
    when it opens, again when its copy is older than TRUST_TTL, and always before it closes."""
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        doc = yaml.safe_load(directory.read_text())
        doc["groups"]["release-managers"] = ["alice@example.com", "carol@example.com"]
        directory.write_text(yaml.safe_dump(doc))
        # a gate opened after the edit refuses bob outright
        fresh = rid()
        await sc.start_release(gated_spec(), release_id=fresh)
        await wait_phase(sc, fresh, "awaiting_approval")
        bob = await sc.submit_approval(attempt(fresh, "bob@example.com"))
        assert not bob.accepted and "not in the groups" in bob.reason
        # the older gate may count him for now, but not when it would close on his approval
        await sc.submit_approval(attempt(r, "bob@example.com"))
        carol = await sc.submit_approval(attempt(r, "carol@example.com"))
        assert carol.accepted and carol.gate is not None and carol.gate.state == "open"
        assert [a.by for a in carol.gate.approvals] == ["carol@example.com"]
        status = await sc.status(r)
        assert status.gates[0].directory_sha256 is not None
        for release in (r, fresh):
            await sc.abort(release, identity="dana@example.com", reason="cleanup")


async def test_visibility_lists_waiting_releases(client: Client, task_queue: str, directory: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        await sc.submit_approval(attempt(r, "alice@example.com"))

        async def listed(**kw: str) -> set[str]:
            for _ in range(100):  # visibility is eventually consistent
                ids = {s.release_id for s in await sc.list_releases(**kw)}
                if r in ids:
                    return ids
                await asyncio.sleep(0.2)
            return ids

        assert r in await listed(phase="awaiting_approval")
        assert r in await listed(awaiting="bob@example.com")
        await asyncio.sleep(1.0)
        assert r not in {s.release_id for s in await sc.list_releases(awaiting="alice@example.com")}
        assert r not in {s.release_id for s in await sc.list_releases(awaiting="dana@example.com")}
        await sc.abort(r, identity="dana@example.com", reason="cleanup")


async def test_reminder_escalation_then_expiry(skip_env, task_queue: str, directory: Path) -> None:  # type: ignore[no-untyped-def]
    """Durable timers over days, on the time-skipping server."""
    async with running_worker(skip_env.client, task_queue, visibility=False) as sc:
        r = rid()
        spec = gated_spec(timeout="P2D", remind_after="PT4H", escalate_to="sre", escalate_after="PT12H")
        started = await sc.start_release(spec, release_id=r)
        assert started.release_id == r
        handle = sc.handle(r)
        with skip_env.auto_time_skipping_disabled():
            await wait_phase(sc, r, "awaiting_approval")
            await skip_env.sleep(timedelta(hours=5))
            s = await sc.status(r)
            assert s.gates[0].reminders_sent == 1 and not s.gates[0].escalated
            await skip_env.sleep(timedelta(hours=8))
            s = await sc.status(r)
            assert s.gates[0].escalated and s.gates[0].state == "open"
            await skip_env.sleep(timedelta(days=2))
        await handle.result()
        result = await sc.status(r)
        assert result.phase.value == "rejected"
        assert result.gates[0].state == "expired"
        assert "expired" in (result.reason or "")


async def test_many_releases_concurrent_approvals_exact(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 gated releases waiting at once, 400 concurrent approvals from 4 approvers (each sent
    twice to simulate retries): every release ends with exactly the approvals sent."""
    people = ["alice@example.com", "bob@example.com", "erin@example.com", "frank@example.com"]
    path = write_directory(tmp_path / "approvers.yaml", {
        "people": [{"email": p} for p in people + ["dana@example.com"]],
        "groups": {"release-managers": people},
    })
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(path))
    n = 200
    async with running_worker(client, task_queue, max_concurrent_workflow_tasks=50) as sc:
        ids = [f"rel-load-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
        await asyncio.gather(*(sc.start_release(gated_spec(), release_id=i) for i in ids))
        for i in ids:
            await wait_phase(sc, i, "awaiting_approval", timeout=180)
        sent = {i: [people[k % 4], people[(k + 1 + k // 4) % 4 if (k + 1 + k // 4) % 4 != k % 4 else (k + 2) % 4]] for k, i in enumerate(ids)}
        sem = asyncio.Semaphore(100)

        async def send(release_id: str, who: str) -> None:
            async with sem:
                try:
                    await sc.submit_approval(attempt(release_id, who))
                except Refused as e:  # a retry that lands after quorum let the release finish
                    assert "has already finished" in str(e)

        await asyncio.gather(*(send(i, who) for i, pair in sent.items() for who in pair for _ in range(2)))
        for i in ids:
            status = await wait_phase(sc, i, "succeeded", timeout=180)
            assert sorted(a.by for a in status.gates[0].approvals) == sorted(sent[i])


async def test_a_start_proof_is_judged_when_temporal_accepted_the_start(client: Client, task_queue: str) -> None:
    """Behind a backlog (10,000 starts at once) a release's first workflow task ran minutes after
    Temporal accepted it, and a proof valid when the release was requested was refused as
    expired (7,200 of 10,000 in the capacity benchmark). The proof is judged at the time Temporal
    accepted the start; one that had already expired by then is still refused."""
    from datetime import datetime, timezone

    from signoff.client import SignoffClient
    from signoff.config import Settings
    from signoff.models import StartRelease
    from signoff.trust.evidence import start_body

    settings = Settings.from_env()
    sc = SignoffClient(client, settings=settings, task_queue=task_queue, visibility=False)
    spec = gated_spec()

    async def start(release_id: str, signed_at: datetime) -> None:  # no worker yet: nothing runs
        proof = sc.sign("person", spec.requested_by, action="start_release", subject=release_id, body=start_body(spec, str(REPO)),
                        now=signed_at, validity=timedelta(seconds=3))
        args = StartRelease(release_id=release_id, spec=spec, base_dir=str(REPO), directory_path=str(settings.directory_path), policy_dir=str(settings.policy_dir), search_attributes=False, proof=proof)
        await client.start_workflow("ReleaseWorkflow", args, id=release_id, task_queue=task_queue)

    now = datetime.now(timezone.utc)
    fresh, stale = rid(), rid()
    await start(fresh, now)
    await start(stale, now - timedelta(seconds=10))  # expired 7 s before it was sent
    await asyncio.sleep(5)  # the backlog: the first workflow task runs after the 3 s proof expired
    async with running_worker(client, task_queue, visibility=False) as worker_sc:
        waiting = await wait_phase(worker_sc, fresh, "awaiting_approval")
        assert waiting.started_by["principal"] == f"person:{spec.requested_by}"
        denied = await wait_phase(worker_sc, stale, "denied")
        assert "the proof expired at" in (denied.reason or ""), denied.reason
        await worker_sc.handle(fresh).terminate(reason="test over")
