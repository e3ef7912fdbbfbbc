"""No way to jam a release: junk Updates never reach its history (so they cannot exhaust
Temporal's per-workflow Update limit), the signed abort also travels as a signal, and release
files that would flood their own history are refused when they are loaded."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError

from signoff.models import ApprovalAttempt, ApprovalResult
from signoff.releasefile import ReleaseFileError, load_release_file
from signoff.trust.keys import write_private_key
from signoff.trust.proofs import new_request, sign_request
from signoff.trust.keys import load_private_key
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase


ALICE, CAROL = "alice@example.com", "carol@example.com"


def forged_approval(release_id: str, key: Path) -> Any:
    """alice's approval, signed by a key that is not hers."""
    request = new_request(principal=f"person:{ALICE}", action="approve", subject=release_id, digest=DIGEST_A, channel="cli", body={"reason": ""})
    return sign_request(request, load_private_key(key))


async def history_counts(client: Client, release_id: str) -> tuple[int, int]:
    history = await client.get_workflow_handle(release_id).fetch_history()
    updates = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    return len(history.events), updates


async def test_5000_junk_updates_then_a_real_approval_and_an_abort_are_accepted(client: Client, task_queue: str, tmp_path: Path) -> None:
    mallory = tmp_path / "mallory.ed25519"
    write_private_key(mallory, Ed25519PrivateKey.generate())
    async with running_worker(client, task_queue) as sc:
        r = f"jam-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(timeout="P1D"), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        events_before, _ = await history_counts(client, r)
        handle = client.get_workflow_handle(r)
        proof = forged_approval(r, mallory)
        rejected: list[str] = []
        semaphore = asyncio.Semaphore(8)  # under the server's 10 in-flight Updates per workflow

        async def junk(n: int) -> None:
            attempt = ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A, proof=proof if n % 2 else None)
            async with semaphore:
                try:
                    await handle.execute_update("submit_approval", attempt, id=f"junk-{n}", result_type=ApprovalResult)
                except WorkflowUpdateFailedError as e:
                    rejected.append(getattr(e.cause, "message", ""))

        await asyncio.gather(*(junk(n) for n in range(5000)))
        assert len(rejected) == 5000
        assert sum("carries no proof" in m for m in rejected) == 2500
        assert sum("does not verify with any key registered for person alice@example.com" in m for m in rejected) == 2500
        events_after, updates = await history_counts(client, r)
        assert updates == 0 and events_after - events_before < 20, (events_before, events_after)

        approved = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))
        assert approved.accepted and [a.by for a in approved.gate.approvals] == [ALICE]
        aborted = await sc.abort(r, identity=CAROL, reason="the jam test is over")
        assert aborted["accepted"] is True
        status = await wait_phase(sc, r, "aborted")
        assert status.reason and "the jam test is over" in status.reason


async def test_a_signed_abort_sent_as_a_signal_stops_the_release_and_forged_ones_do_not(client: Client, task_queue: str, tmp_path: Path) -> None:
    mallory = tmp_path / "mallory.ed25519"
    write_private_key(mallory, Ed25519PrivateKey.generate())
    async with running_worker(client, task_queue) as sc:
        r = f"sig-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(timeout="P1D"), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        handle = client.get_workflow_handle(r)
        forged = sign_request(new_request(principal=f"person:{CAROL}", action="abort", subject=r, channel="cli", body={"reason": "forged"}), load_private_key(mallory))
        await handle.signal("abort_request", {"identity": CAROL, "channel": "cli", "reason": "forged"})  # no proof: dropped
        await handle.signal("abort_request", {"identity": CAROL, "channel": "cli", "reason": "forged", "proof": forged.model_dump(mode="json")})
        await asyncio.sleep(1.5)
        status = await sc.status(r)
        assert status.phase.value == "awaiting_approval"
        assert [(x.decision, x.by) for x in status.refusals] == [("abort", CAROL)]  # the signed forgery is recorded, the unsigned one is not
        answer = await sc.abort(r, identity=CAROL, reason="stopped by signal", via_signal=True)
        assert answer["accepted"] is True and "as a signal" in answer["reason"]
        status = await wait_phase(sc, r, "aborted")
        assert "stopped by signal" in (status.reason or "")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"change": {"summary": "x" * 300_000}}, "is larger than 256 KiB"),
        ({"change": {"summary": "x" * 5000}}, "field 'change.summary' string should have at most 4000 characters"),
        ({"gates": [{"name": "production", "remind_after": "PT1S"}]}, "remind_after is 0:00:01; it must be at least 0:01:00"),
        ({"gates": [{"name": "production", "timeout": "PT5S"}]}, "timeout is 0:00:05; it must be at least 0:01:00"),
        (
            {"canary": {"steps": [{"set_weight": 50}], "analyses": {"err": {"query": "vector(0)", "interval": "0s", "success": {"less_than": 1}}}}},
            "an analysis interval of 0:00:00 is too short; it must be at least 0:00:01",
        ),
        (
            {"canary": {"steps": [{"set_weight": 50}], "analyses": {"err": {"query": "vector(0)", "count": 20000, "success": {"less_than": 1}}}}},
            "should be less than or equal to 10000",
        ),
    ],
    ids=["huge-file", "long-summary", "fast-reminder", "short-timeout", "zero-interval", "endless-count"],
)
def test_release_files_that_would_flood_their_history_are_refused_in_one_sentence(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    doc: dict[str, Any] = {
        "service": "checkout",
        "artifact": DIGEST_A,
        "requested_by": "dana@example.com",
        "change": {"summary": "a change"},
    }
    doc.update(change)
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ReleaseFileError) as err:
        load_release_file(path)
    message = str(err.value)
    assert expected in message, message
    assert message.count("\n") == 0 and message.endswith(".")


def test_lists_in_workflow_state_keep_the_newest_and_count_the_rest() -> None:
    from datetime import datetime, timezone

    from signoff.models import STATE_LIST_LIMIT, CanaryStatus, GateStatus, Measurement, RefusalRecord, ReleaseStatus, append_bounded

    canary = CanaryStatus()
    for n in range(STATE_LIST_LIMIT + 55):
        append_bounded(canary, "analyses", Measurement(metric="err", value=float(n), verdict="successful"))
    assert len(canary.analyses) == STATE_LIST_LIMIT and canary.analyses_dropped == 55
    assert canary.analyses[0].value == 55 and canary.analyses[-1].value == STATE_LIST_LIMIT + 54

    now = datetime.now(timezone.utc)
    gate = GateStatus(name="production", state="open", required=2)
    for n in range(300):
        append_bounded(gate, "refusals", RefusalRecord(by=f"p{n}@example.com", channel="cli", at=now, decision="approve", reason="no"))
    status = ReleaseStatus(release_id="r", service="checkout", requested_by="dana@example.com", change_summary="x" * 900_000, gates=[gate], canary=canary)
    notice = status.for_notice()
    assert len(notice.change_summary) == 1000 and notice.change_summary.endswith("…")
    assert len(notice.gates[0].refusals) == 20 and notice.gates[0].refusals[-1].by == "p299@example.com"
    assert len(notice.canary.analyses) == 20
    assert len(status.change_summary) == 900_000 and len(status.gates[0].refusals) == STATE_LIST_LIMIT  # the original is untouched


async def test_one_person_cannot_fill_a_gate_with_refusals(client: Client, task_queue: str) -> None:
    """Signed but refused attempts are recorded, up to a limit per person; then turned away unrecorded."""
    from workflows.gate import MAX_REFUSALS_PER_PRINCIPAL

    async with running_worker(client, task_queue) as sc:
        r = f"fill-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(timeout="P1D"), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        answers = [await sc.submit_approval(ApprovalAttempt(release_id=r, identity="dana@example.com", channel="cli", digest=DIGEST_A)) for _ in range(MAX_REFUSALS_PER_PRINCIPAL + 3)]
        assert all(not a.accepted for a in answers)
        assert all("requester" in a.reason for a in answers[:MAX_REFUSALS_PER_PRINCIPAL])
        assert all("further ones are not recorded" in a.reason for a in answers[MAX_REFUSALS_PER_PRINCIPAL:])
        status = await sc.status(r)
        assert len(status.gates[0].refusals) == MAX_REFUSALS_PER_PRINCIPAL
        assert (await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))).accepted


def test_the_awaiting_search_attribute_stays_under_temporals_limit() -> None:
    """With hundreds of eligible approvers the list is cut below 2 KiB instead of failing the
    release's workflow tasks (Temporal refuses larger search attribute values)."""
    import json

    from workflows.release import AWAITING_BYTES, bounded_keywords

    people = [f"approver-{n:03d}@example.com" for n in range(300)]
    kept = bounded_keywords(people)
    assert len(json.dumps(kept).encode()) <= AWAITING_BYTES < 2048
    assert kept == people[: len(kept)] and 50 < len(kept) < 300
    assert bounded_keywords(people[:3]) == people[:3]
