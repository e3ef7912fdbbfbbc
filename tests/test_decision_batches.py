"""Decision records queued together are appended by one activity, each exactly once.

Real dev server, real worker, the real signed file log: a gated release queues its closing
records back to back (gate outcome, attestation, deploy, promotion, outcome); they must reach
the log in order, once each, in fewer activities than records, and `cross_check` must still
match every record to the decision in the Temporal history."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.audit import AuditActivities
from signoff.audit import cross_check, public_key_from_settings, store_from_settings, verify
from signoff.config import Settings
from signoff.models import ApprovalAttempt, DecisionInput
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase


def append_activities(history: object) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events  # type: ignore[attr-defined]
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name.startswith("append_decision")
    ]


async def test_records_queued_together_share_one_activity_and_land_once(client: Client, task_queue: str) -> None:
    settings = Settings.from_env()
    async with running_worker(client, task_queue) as sc:
        rid = f"batch-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        for who in ("alice@example.com", "bob@example.com"):
            result = await sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A))
            assert result.accepted, result.reason
        await sc.handle(rid).result()
        history = await sc.handle(rid).fetch_history()

    store = store_from_settings(settings)
    sequences = [e["sequence"] for e in store.entries() if e.get("workflow_id") == rid]
    assert sequences == list(range(1, len(sequences) + 1))  # in order, none lost, none twice
    activities = append_activities(history)
    assert "append_decisions" in activities
    assert len(activities) < len(sequences), (activities, len(sequences))
    assert verify(store, public_key_from_settings(settings), workflow_id=rid).ok
    assert await cross_check(client, rid, store) == []


def decision(seq: int) -> DecisionInput:
    from datetime import datetime, timezone

    return DecisionInput(
        kind="approval_attempt",
        outcome="accepted",
        subject_name="checkout@retry",
        subject_digest=DIGEST_A,
        reasons=[f"attempt {seq}"],
        actor={"identity": "alice@example.com"},
        evidence={},
        workflow_id="retry-batch",
        run_id="run-1",
        at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        sequence=seq,
    )


async def test_a_batch_retried_after_a_partial_append_adds_only_what_is_missing(tmp_path: Path) -> None:
    """The worker died after two of three records were on disk; the retried activity gets the
    whole batch again and must neither duplicate the two nor lose the third."""
    settings = Settings.from_env()
    audit = AuditActivities(settings)
    first = await audit.append_decisions([decision(1), decision(2)])
    again = await audit.append_decisions([decision(1), decision(2), decision(3)])
    assert again[:2] == first  # the same entries answered, not new ones
    entries = [e for e in store_from_settings(settings).entries() if e.get("workflow_id") == "retry-batch"]
    assert [e["sequence"] for e in entries] == [1, 2, 3]
    assert verify(store_from_settings(settings), public_key_from_settings(settings)).ok


def test_the_saved_batched_history_has_the_batched_shape() -> None:
    """tests/test_replay.py replays it; this says it is the shape worth replaying."""
    from temporalio.client import WorkflowHistory

    path = Path(__file__).resolve().parent / "histories" / "release-gated-batched.json"
    before = Path(__file__).resolve().parent / "histories" / "release-gated-approved.json"
    batched = WorkflowHistory.from_json(path.stem, path.read_text())
    old = WorkflowHistory.from_json(before.stem, before.read_text())
    assert "append_decisions" in append_activities(batched)
    assert "append_decisions" not in append_activities(old)
    assert len(batched.events) < len(old.events)
