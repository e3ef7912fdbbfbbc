"""Turn a Jira webhook payload into an approval attempt: a pure function, no I/O.

The HTTP route (approvals/jira/webhook.py) only authenticates the delivery and forwards; every
judgement about *what* a delivery means lives here so it can be tested exhaustively (including
with hypothesis over arbitrary JSON). Nothing here decides whether an approval counts: that is
the workflow's job. We only say "this person, on this ticket, asked for this decision", or why
we will not pass it on.

Two actions on a signoff approval ticket count as approval attempts:

* ``jira:issue_updated`` whose changelog moves the ticket's status to the configured approved
  (``SIGNOFF_JIRA_APPROVED_STATUS``, default "Approved") or declined
  (``SIGNOFF_JIRA_DECLINED_STATUS``, default "Declined") status; the actor is ``user.accountId``.
* ``comment_created`` whose body starts with ``/approve [reason]``, ``/reject reason`` or
  ``/revoke [reason]``; the actor is ``comment.author.accountId``.

The ticket names the release and gate through its labels (``signoff-release-<id>``,
``signoff-gate-<gate>``, and ``signoff-digest-<hex>`` for the artifact digest the ticket showed),
which activities/jira.py sets when it creates the ticket.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from signoff.errors import SignoffError
from signoff.models import ApprovalAttempt, Decision, DirectorySnapshot

RELEASE_LABEL_PREFIX = "signoff-release-"
GATE_LABEL_PREFIX = "signoff-gate-"
DIGEST_LABEL_PREFIX = "signoff-digest-"
PLAN_LABEL_PREFIX = "signoff-plan-"
INCIDENT_LABEL_PREFIX = "signoff-incident-"

_COMMAND_RE = re.compile(r"^/(approve|reject|revoke)(?:[ \t]+(?P<reason>.*))?$", re.IGNORECASE | re.DOTALL)
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_REASON = 2000


class JiraPayloadError(SignoffError):
    """The webhook body is not a Jira webhook payload we can read (answered with HTTP 400)."""


@dataclass(frozen=True)
class Refusal:
    """Why a delivery produced no approval attempt.

    `ignored` is True when the delivery is not an approval action at all (another event, a
    transition to an unrelated status, an ordinary comment, a ticket signoff did not create);
    False when it *is* an approval action that we refuse to pass on (unmapped account,
    ambiguous labels, a rejection without a reason).
    """

    reason: str
    ignored: bool = False

    @property
    def status(self) -> str:
        return "ignored" if self.ignored else "refused"


@dataclass(frozen=True)
class JiraWebhookConfig:
    """The statuses that mean approve / decline, and the shared secret the webhook is signed with."""

    approved_status: str = "Approved"
    declined_status: str = "Declined"
    webhook_secret: str | None = None

    @classmethod
    def from_env(cls, extra: Mapping[str, str] | None = None) -> "JiraWebhookConfig":
        """Read SIGNOFF_JIRA_* from `extra` (Settings.extra) first, then the environment."""

        def get(name: str, default: str | None) -> str | None:
            value = (extra or {}).get(name) or os.environ.get(name)
            return value if value else default

        return cls(
            approved_status=get("SIGNOFF_JIRA_APPROVED_STATUS", "Approved") or "Approved",
            declined_status=get("SIGNOFF_JIRA_DECLINED_STATUS", "Declined") or "Declined",
            webhook_secret=get("SIGNOFF_JIRA_WEBHOOK_SECRET", None),
        )


def attempt_from_webhook(
    payload: Any,
    *,
    directory: DirectorySnapshot,
    config: JiraWebhookConfig,
    delivery_id: str | None = None,
) -> ApprovalAttempt | Refusal:
    """Read one webhook delivery.

    Returns an `ApprovalAttempt` for the workflow, or a `Refusal` saying why nothing will be
    submitted. Raises only `JiraPayloadError`, when the payload does not have the shape of a Jira
    webhook (the route answers 400).
    """
    body = _mapping(payload, "the webhook body")
    event = body.get("webhookEvent")
    if not isinstance(event, str):
        raise JiraPayloadError("the webhook body has no webhookEvent string; send Jira's webhook JSON unchanged.")
    if event == "jira:issue_updated":
        return _from_transition(body, directory=directory, config=config, delivery_id=delivery_id)
    if event == "comment_created":
        return _from_comment(body, directory=directory, delivery_id=delivery_id)
    return Refusal(f"event {_short(event)} is not an approval action", ignored=True)


# --------------------------------------------------------------------------- the two actions


def _from_transition(
    body: Mapping[str, Any], *, directory: DirectorySnapshot, config: JiraWebhookConfig, delivery_id: str | None
) -> ApprovalAttempt | Refusal:
    issue = _mapping(body.get("issue"), "issue")
    changelog = body.get("changelog")
    if changelog is None:
        return Refusal("the update changed no fields", ignored=True)
    items = _mapping(changelog, "changelog").get("items", [])
    if not isinstance(items, list):
        raise JiraPayloadError("changelog.items is not a list; send Jira's webhook JSON unchanged.")
    new_status: str | None = None
    for raw in items:
        item = _mapping(raw, "a changelog item")
        if item.get("field") == "status" or item.get("fieldId") == "status":
            to = item.get("toString")
            if to is not None and not isinstance(to, str):
                raise JiraPayloadError("a status change in the changelog has a non-text toString; send Jira's webhook JSON unchanged.")
            new_status = to
    if new_status is None:
        return Refusal("the update did not change the ticket's status", ignored=True)
    wanted = new_status.strip().casefold()
    decision: Decision
    if wanted == config.approved_status.strip().casefold():
        decision = "approve"
    elif wanted == config.declined_status.strip().casefold():
        decision = "reject"
    else:
        return Refusal(f"status {_short(new_status)} is neither the approved nor the declined status", ignored=True)
    target = _ticket_target(issue)
    if isinstance(target, Refusal):
        return target
    user = body.get("user")
    account = _account_id(user, "user")
    identity = _identity(account, directory)
    if isinstance(identity, Refusal):
        return identity
    key = _issue_key(issue)
    return _attempt(target, identity, decision, f"moved {key} to {new_status.strip()} in Jira", _external_ref(key, delivery_id))


def _from_comment(
    body: Mapping[str, Any], *, directory: DirectorySnapshot, delivery_id: str | None
) -> ApprovalAttempt | Refusal:
    issue = _mapping(body.get("issue"), "issue")
    comment = _mapping(body.get("comment"), "comment")
    text = _comment_text(comment.get("body")).strip()
    match = _COMMAND_RE.match(text)
    if match is None:
        return Refusal("the comment is not /approve, /reject or /revoke", ignored=True)
    decision: Decision = match.group(1).lower()  # type: ignore[assignment]
    reason = " ".join((match.group("reason") or "").split())[:_MAX_REASON]
    target = _ticket_target(issue)
    if isinstance(target, Refusal):
        return target
    if decision == "reject" and not reason:
        return Refusal("a rejection needs a reason; comment `/reject <why>`")
    account = _account_id(comment.get("author"), "comment.author")
    identity = _identity(account, directory)
    if isinstance(identity, Refusal):
        return identity
    return _attempt(target, identity, decision, reason, _external_ref(_issue_key(issue), delivery_id))


def _attempt(target: tuple[str, str, str | None, str | None], identity: str, decision: Decision, reason: str, external_ref: str) -> ApprovalAttempt:
    release_id, gate, digest, plan = target
    return ApprovalAttempt(
        release_id=release_id,
        gate=gate,
        identity=identity,
        channel="jira",
        decision=decision,
        reason=reason,
        digest=digest,
        plan=plan,
        external_ref=external_ref,
    )


# --------------------------------------------------------------------------- pieces


def _ticket_target(issue: Mapping[str, Any]) -> tuple[str, str, str | None, str | None] | Refusal:
    """(release id, gate, digest, plan) from the ticket's labels, or why they cannot be trusted."""
    fields = issue.get("fields")
    if fields is None:
        return Refusal("the payload carries no issue fields, so the release cannot be identified; include labels in the webhook")
    labels_raw = _mapping(fields, "issue.fields").get("labels")
    if labels_raw is None:
        return Refusal("the payload carries no issue labels, so the release cannot be identified; include labels in the webhook")
    if not isinstance(labels_raw, list) or not all(isinstance(x, str) for x in labels_raw):
        raise JiraPayloadError("issue.fields.labels is not a list of strings; send Jira's webhook JSON unchanged.")
    labels: list[str] = labels_raw
    releases = sorted({lbl[len(RELEASE_LABEL_PREFIX) :] for lbl in labels if lbl.startswith(RELEASE_LABEL_PREFIX)} - {""})
    gates = sorted({lbl[len(GATE_LABEL_PREFIX) :] for lbl in labels if lbl.startswith(GATE_LABEL_PREFIX)} - {""})
    digests = sorted({lbl[len(DIGEST_LABEL_PREFIX) :] for lbl in labels if lbl.startswith(DIGEST_LABEL_PREFIX)})
    if not releases:
        return Refusal("the ticket has no signoff-release label, so it is not a signoff approval ticket", ignored=True)
    if len(releases) > 1:
        return Refusal(f"the ticket names {len(releases)} releases in its labels; leave exactly one signoff-release label")
    if not gates:
        return Refusal("the ticket has no signoff-gate label; approve on the gate's own ticket")
    if len(gates) > 1:
        return Refusal(f"the ticket names {len(gates)} gates in its labels; leave exactly one signoff-gate label")
    if len(digests) > 1:
        return Refusal("the ticket names more than one artifact digest in its labels; leave exactly one signoff-digest label")
    if not digests:
        return Refusal("the ticket has no signoff-digest label, so it does not say which artifact is approved; approve on the ticket signoff created")
    if not _HEX64_RE.match(digests[0]):
        return Refusal("the ticket's signoff-digest label is not a sha256 digest; do not edit signoff labels")
    plans = sorted({lbl[len(PLAN_LABEL_PREFIX) :] for lbl in labels if lbl.startswith(PLAN_LABEL_PREFIX)})
    if len(plans) > 1 or (plans and not _HEX64_RE.match(plans[0])):
        return Refusal("the ticket's signoff-plan labels do not name exactly one sha256 plan hash; do not edit signoff labels")
    return releases[0], gates[0], "sha256:" + digests[0], ("sha256:" + plans[0]) if plans else None


def _identity(account: str | Refusal, directory: DirectorySnapshot) -> str | Refusal:
    """The canonical email for a Jira account id, through the directory only — never guessed."""
    if isinstance(account, Refusal):
        return account
    matches = [p for p in directory.people.values() if p.jira_account_id and p.jira_account_id == account]
    if not matches:
        return Refusal(f"Jira account {_short(account)} is not in the approver directory; add its jira_account_id there")
    if len(matches) > 1:
        return Refusal(f"Jira account {_short(account)} belongs to {len(matches)} people in the approver directory; fix the directory")
    email = (matches[0].email or "").strip().lower()
    if not email:
        return Refusal(f"Jira account {_short(account)} maps to a directory entry with no email; give that person an email")
    return email


def _account_id(user: Any, where: str) -> str | Refusal:
    if user is None:
        return Refusal(f"the payload does not say who acted ({where} is missing)")
    account = _mapping(user, where).get("accountId")
    if account is None or account == "":
        return Refusal(f"the payload does not say who acted ({where}.accountId is missing)")
    if not isinstance(account, str):
        raise JiraPayloadError(f"{where}.accountId is not a string; send Jira's webhook JSON unchanged.")
    return account


def _comment_text(body: Any) -> str:
    """Comment bodies are wiki text (REST v2) or an Atlassian Document Format tree (v3)."""
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        parts: list[str] = []
        _adf_text(body, parts, depth=0)
        return "".join(parts)
    raise JiraPayloadError("comment.body is neither text nor a document; send Jira's webhook JSON unchanged.")


def _adf_text(node: Any, out: list[str], *, depth: int) -> None:
    if depth > 50 or not isinstance(node, dict):
        return
    text = node.get("text")
    if isinstance(text, str):
        out.append(text)
    if node.get("type") == "hardBreak":
        out.append("\n")
    content = node.get("content")
    if isinstance(content, list):
        for child in content:
            _adf_text(child, out, depth=depth + 1)
        if node.get("type") == "paragraph":
            out.append("\n")


def _issue_key(issue: Mapping[str, Any]) -> str:
    key = issue.get("key")
    return key if isinstance(key, str) and key else "the ticket"


def _external_ref(key: str, delivery_id: str | None) -> str:
    return f"jira:{key}" + (f":{delivery_id}" if delivery_id else "")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise JiraPayloadError(f"{where} is missing or not a JSON object; send Jira's webhook JSON unchanged.")
    return value


def _short(value: str, limit: int = 80) -> str:
    value = value.replace("\n", " ")
    return repr(value if len(value) <= limit else value[:limit] + "…")
