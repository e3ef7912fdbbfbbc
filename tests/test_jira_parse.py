"""`attempt_from_webhook`: Jira webhook payload → approval attempt, or a refusal with its reason.

The payloads are built by the Jira stub from a ticket made by the real activity code's labels,
so the label contract between activities/jira.py and approvals/jira/parse.py is exercised here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities import jira as jira_activities
from approvals.jira import parse
from approvals.jira.parse import JiraPayloadError, JiraWebhookConfig, Refusal, attempt_from_webhook
from signoff.config import REPO_ROOT
from signoff.directory import load_directory
from signoff.models import ApprovalAttempt, DirectorySnapshot, Person

DIGEST = "sha256:" + "ab" * 32
DIRECTORY = load_directory(REPO_ROOT / "examples" / "approvers.yaml")
CONFIG = JiraWebhookConfig()


def _issue(labels: list[str] | None = None, key: str = "REL-7") -> dict[str, Any]:
    return {
        "id": "10007",
        "key": key,
        "fields": {
            "summary": "Approval needed",
            "labels": jira_activities.gate_labels("rel-checkout-1", "production", DIGEST) if labels is None else labels,
            "status": {"name": "To Do"},
        },
    }


def _transition(to: str, account: str | None = "jira-alice-0001", **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "webhookEvent": "jira:issue_updated",
        "user": {"accountId": account, "displayName": "someone"} if account is not None else None,
        "issue": _issue(),
        "changelog": {"items": [{"field": "status", "fieldtype": "jira", "fromString": "To Do", "toString": to}]},
    }
    payload.update(over)
    return payload


def _comment(body: Any, account: str = "jira-bob-0002", **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "webhookEvent": "comment_created",
        "comment": {"id": "1", "body": body, "author": {"accountId": account}},
        "issue": _issue(),
    }
    payload.update(over)
    return payload


def _read(payload: Any, **kw: Any) -> ApprovalAttempt | Refusal:
    return attempt_from_webhook(payload, directory=kw.pop("directory", DIRECTORY), config=kw.pop("config", CONFIG), **kw)


def test_labels_written_by_the_activity_are_the_labels_the_parser_reads() -> None:
    assert jira_activities.RELEASE_LABEL_PREFIX == parse.RELEASE_LABEL_PREFIX
    assert jira_activities.GATE_LABEL_PREFIX == parse.GATE_LABEL_PREFIX
    assert jira_activities.DIGEST_LABEL_PREFIX == parse.DIGEST_LABEL_PREFIX
    assert jira_activities.INCIDENT_LABEL_PREFIX == parse.INCIDENT_LABEL_PREFIX


def test_transition_to_approved_is_an_approval_by_the_mapped_person() -> None:
    attempt = _read(_transition("Approved"), delivery_id="d-1")
    assert isinstance(attempt, ApprovalAttempt)
    assert (attempt.release_id, attempt.gate, attempt.identity) == ("rel-checkout-1", "production", "alice@example.com")
    assert (attempt.channel, attempt.decision, attempt.digest) == ("jira", "approve", DIGEST)
    assert attempt.external_ref == "jira:REL-7:d-1"
    assert "REL-7" in attempt.reason


def test_transition_to_declined_is_a_rejection_and_statuses_are_configurable() -> None:
    rejected = _read(_transition("declined"))
    assert isinstance(rejected, ApprovalAttempt) and rejected.decision == "reject"
    custom = JiraWebhookConfig(approved_status="Ship it", declined_status="Won't ship")
    assert isinstance(_read(_transition("Ship it"), config=custom), ApprovalAttempt)
    ignored = _read(_transition("Approved"), config=custom)
    assert isinstance(ignored, Refusal) and ignored.ignored and "neither" in ignored.reason


def test_other_updates_and_events_are_ignored_not_refused() -> None:
    no_status = _transition("Approved")
    no_status["changelog"]["items"] = [{"field": "summary", "fromString": "a", "toString": "b"}]
    for payload in (no_status, _transition("In Progress"), {"webhookEvent": "issue_deleted"}, _comment("looks fine to me")):
        outcome = _read(payload)
        assert isinstance(outcome, Refusal) and outcome.ignored, payload


@pytest.mark.parametrize(
    ("body", "decision", "reason"),
    [
        ("/approve", "approve", ""),
        ("/approve  ships   the fix ", "approve", "ships the fix"),
        ("/APPROVE ok", "approve", "ok"),
        ("/reject error budget is spent", "reject", "error budget is spent"),
        ("/revoke changed my mind", "revoke", "changed my mind"),
        (
            {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "/approve from ADF"}]}]},
            "approve",
            "from ADF",
        ),
    ],
)
def test_comment_commands(body: Any, decision: str, reason: str) -> None:
    attempt = _read(_comment(body))
    assert isinstance(attempt, ApprovalAttempt)
    assert (attempt.identity, attempt.decision, attempt.reason) == ("bob@example.com", decision, reason)


def test_comment_lookalikes_are_not_commands() -> None:
    for body in ("/approved", "please /approve", "/approval pending", ""):
        outcome = _read(_comment(body))
        assert isinstance(outcome, Refusal) and outcome.ignored, body


def test_rejection_without_reason_is_refused_with_how_to_fix() -> None:
    outcome = _read(_comment("/reject"))
    assert isinstance(outcome, Refusal) and not outcome.ignored
    assert "needs a reason" in outcome.reason and "/reject <why>" in outcome.reason


def test_unmapped_account_is_refused_never_guessed() -> None:
    payload = _transition("Approved", account="jira-mallory-9999")
    payload["user"]["emailAddress"] = "alice@example.com"  # Jira's claim is never trusted
    outcome = _read(payload)
    assert isinstance(outcome, Refusal) and not outcome.ignored
    assert "jira-mallory-9999" in outcome.reason and "approver directory" in outcome.reason


def test_directory_entry_without_email_or_shared_account_is_refused() -> None:
    no_email = DirectorySnapshot(sha256="x", people={"": Person(email="", jira_account_id="jira-ghost-1")})
    outcome = _read(_transition("Approved", account="jira-ghost-1"), directory=no_email)
    assert isinstance(outcome, Refusal) and "no email" in outcome.reason
    shared = DirectorySnapshot(
        sha256="x",
        people={
            "a@example.com": Person(email="a@example.com", jira_account_id="jira-shared"),
            "b@example.com": Person(email="b@example.com", jira_account_id="jira-shared"),
        },
    )
    outcome = _read(_transition("Approved", account="jira-shared"), directory=shared)
    assert isinstance(outcome, Refusal) and "2 people" in outcome.reason


def test_missing_actor_is_refused() -> None:
    outcome = _read(_transition("Approved", account=None))
    assert isinstance(outcome, Refusal) and not outcome.ignored and "who acted" in outcome.reason


@pytest.mark.parametrize(
    ("labels", "expect"),
    [
        (["unrelated"], "not a signoff approval ticket"),
        (["signoff-release-a", "signoff-release-b", "signoff-gate-production"], "exactly one signoff-release"),
        (["signoff-release-a"], "no signoff-gate label"),
        (["signoff-release-a", "signoff-gate-x", "signoff-gate-y"], "exactly one signoff-gate"),
        (["signoff-release-a", "signoff-gate-x", "signoff-digest-nothex"], "not a sha256 digest"),
        (["signoff", "signoff-incident", "signoff-incident-rel-1"], "not a signoff approval ticket"),
    ],
)
def test_ticket_labels_must_name_one_release_and_one_gate(labels: list[str], expect: str) -> None:
    payload = _transition("Approved")
    payload["issue"] = _issue(labels)
    outcome = _read(payload)
    assert isinstance(outcome, Refusal) and expect in outcome.reason


def test_payload_without_labels_is_refused_with_the_fix() -> None:
    payload = _comment("/approve")
    del payload["issue"]["fields"]["labels"]
    outcome = _read(payload)
    assert isinstance(outcome, Refusal) and "include labels" in outcome.reason


def test_digest_label_is_required() -> None:
    """A ticket that does not say which artifact it approves approves nothing (a decoy could)."""
    payload = _transition("Approved")
    payload["issue"] = _issue(["signoff", "signoff-release-r1", "signoff-gate-g"])
    refusal = _read(payload)
    assert isinstance(refusal, Refusal) and not refusal.ignored and "no signoff-digest label" in refusal.reason


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {},
        {"webhookEvent": 3},
        {"webhookEvent": "jira:issue_updated"},
        {"webhookEvent": "jira:issue_updated", "issue": {}, "changelog": {"items": "x"}},
        {"webhookEvent": "jira:issue_updated", "issue": {}, "changelog": {"items": [{"field": "status", "toString": 5}]}},
        {"webhookEvent": "comment_created", "issue": _issue(), "comment": {"body": 12}},
        {"webhookEvent": "comment_created", "issue": _issue(), "comment": None},
        {"webhookEvent": "comment_created", "issue": _issue(["signoff-release-a", 7]), "comment": {"body": "/approve"}},
        {"webhookEvent": "comment_created", "issue": _issue(), "comment": {"body": "/approve", "author": {"accountId": 5}}},
    ],
)
def test_malformed_payloads_raise_one_clear_error(payload: Any) -> None:
    with pytest.raises(JiraPayloadError) as info:
        _read(payload)
    message = str(info.value)
    assert message.endswith(".") and message.count(". ") == 0 and "Jira" in message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
_keys = st.sampled_from(["webhookEvent", "issue", "fields", "labels", "changelog", "items", "field", "toString", "user", "accountId", "comment", "body", "author", "key", "content", "text", "type"])
_values = st.sampled_from(
    ["jira:issue_updated", "comment_created", "status", "Approved", "Declined", "/approve ok", "/reject", "jira-alice-0001", "signoff-release-r", "signoff-gate-g", "paragraph"]
)
_shaped = st.recursive(
    _values | st.none() | st.integers(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(_json, _shaped))
def test_arbitrary_json_never_raises_anything_but_the_payload_error(payload: Any) -> None:
    json.dumps(payload)  # only JSON-representable values, as a webhook body would be
    try:
        outcome = _read(payload)
    except JiraPayloadError as e:
        assert str(e)
        return
    assert isinstance(outcome, (ApprovalAttempt, Refusal))
    if isinstance(outcome, ApprovalAttempt):
        assert outcome.channel == "jira" and outcome.identity in DIRECTORY.people
    else:
        assert outcome.reason
