"""Block Kit for the approval request, rendered from ReleaseStatus + GateStatus (pure functions).

The same renderer serves the activity that posts the message when a gate opens, the activity
that updates it on progress and close, and the click handler that refreshes it after a click,
so every view of a gate is computed from the workflow's state and never patched by hand.

Text written by requesters or agents (change summary, reasons) is escaped: an agent must not
be able to put `<!channel>` or a fake link into a message approvers trust.
"""

from __future__ import annotations

import json
from typing import Any

from signoff.models import GateStatus, ReleaseStatus
from signoff.plan_view import approval_rows

APPROVE_ACTION = "signoff_approve"
REJECT_ACTION = "signoff_reject"
REJECT_MODAL = "signoff_reject_modal"
PROGRESS_BLOCK = "signoff_progress"
ACTIONS_BLOCK = "signoff_actions"
METADATA_EVENT = "signoff_gate"

CLOSED_STATES = {"approved", "rejected", "expired", "closed"}


def escape(text: str) -> str:
    """Slack mrkdwn control characters (`&`, `<`, `>`) as entities, so text cannot ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def release_url(ui_url: str, namespace: str, release_id: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{release_id}"


def button_value(release_id: str, gate: str, digest: str | None, plan: str | None = None) -> str:
    """What the click carries back: the release, the gate, the digest and the plan the person saw."""
    doc = {"release_id": release_id, "gate": gate, "digest": digest}
    if plan:
        doc["plan"] = plan
    return json.dumps(doc, separators=(",", ":"))


def progress_line(gate: GateStatus, names: dict[str, str] | None = None) -> str:
    """'1 of 2 — alice ✅' while open; the outcome once the gate is closed."""
    names = names or {}

    def name(email: str) -> str:
        return names.get(email.lower()) or email.split("@", 1)[0]

    approved = [f"{escape(name(a.by))} ✅" for a in gate.approvals]
    rejected = [f"{escape(name(r.by))} ❌" for r in gate.rejections]
    who = ", ".join(approved + rejected)
    count = f"{len(gate.approvals)} of {gate.required}"
    if gate.state == "approved":
        return f"*Approved* ({count}) — {who}" if who else f"*Approved* ({count})"
    if gate.state == "rejected":
        reasons = "; ".join(escape(r.reason) for r in gate.rejections if r.reason)
        return f"*Rejected* — {who}" + (f": {reasons}" if reasons else "")
    if gate.state == "expired":
        return f"*Expired* with {count} approvals — nobody may approve it any more"
    if gate.state == "closed":
        return f"*Closed* ({count})" + (f" — {who}" if who else "")
    return f"{count}" + (f" — {who}" if who else " — waiting for approvers")


def gate_message(
    status: ReleaseStatus,
    gate: GateStatus,
    *,
    ui_url: str,
    namespace: str,
    names: dict[str, str] | None = None,
    mention_ids: list[str] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for a gate's approval request; buttons only while the gate is open."""
    closed = gate.state in CLOSED_STATES
    link = release_url(ui_url, namespace, status.release_id)
    title = f"Approval needed: {status.service} → {status.environment}" if not closed else f"Gate {gate.name}: {status.service} → {status.environment}"
    fields = [
        f"*Release*\n<{link}|{escape(status.release_id)}>",
        f"*Gate*\n{escape(gate.name)}",
        f"*Artifact*\n`{escape(status.artifact_digest or 'unknown')}`",
        f"*Requested by*\n{escape(status.requested_by)}",
        f"*Risk tier*\n{escape(status.tier or (status.policy.tier if status.policy else 'unknown'))}",
    ]
    if status.agent is not None:
        agent = status.agent
        parts = [f"`{escape(agent.id)}`"]
        if agent.model:
            parts.append(f"model {escape(agent.model)}")
        if agent.prompt_sha256:
            parts.append(f"prompt sha256 `{escape(agent.prompt_sha256[:16])}`")
        fields.append("*Agent*\n" + ", ".join(parts))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150), "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f, 2000)} for f in fields[:10]]},
        {"type": "section", "block_id": "signoff_change", "text": {"type": "mrkdwn", "text": _clip("*Change*\n" + escape(status.change_summary or "(no summary)"), 3000)}},
    ]
    if status.tests is not None:
        t = status.tests
        line = f"{t.passed} passed, {t.failed} failed, {t.skipped} skipped, {t.errors} errors"
        if t.coverage is not None:
            line += f"; coverage {t.coverage:.1f}%"
        if t.failures:
            line += "\nFailing: " + ", ".join(escape(f) for f in t.failures[:5])
        blocks.append({"type": "section", "block_id": "signoff_tests", "text": {"type": "mrkdwn", "text": _clip("*Tests*\n" + line, 3000)}})
    reasons = status.policy.reasons if status.policy is not None else []
    if reasons:
        text = "*Why this tier*\n" + "\n".join(f"• {escape(r)}" for r in reasons[:10])
        blocks.append({"type": "section", "block_id": "signoff_reasons", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    rows = approval_rows(status, full=f"signoff release status {status.release_id} --json")
    if rows:
        text = "*What will run*\n" + "\n".join(f"• *{escape(label)}*: {escape(value)}" for label, value in rows)
        blocks.append({"type": "section", "block_id": "signoff_plan", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    needs = f"Needs {gate.required} approval{'s' if gate.required != 1 else ''}"
    if gate.from_groups:
        needs += " from " + ", ".join(escape(g) for g in gate.from_groups)
    if gate.quotas:
        needs += " (at least " + ", ".join(f"{n} {escape(g)}" for g, n in gate.quotas.items()) + ")"
    if mention_ids and not closed:
        needs += ": " + " ".join(f"<@{uid}>" for uid in mention_ids)
    blocks.append({"type": "context", "block_id": "signoff_needs", "elements": [{"type": "mrkdwn", "text": _clip(needs, 3000)}]})
    progress = progress_line(gate, names)
    blocks.append({"type": "section", "block_id": PROGRESS_BLOCK, "text": {"type": "mrkdwn", "text": _clip("*Progress* " + progress, 3000)}})
    if not closed:
        value = button_value(status.release_id, gate.name, status.artifact_digest, status.plan_sha256)
        blocks.append(
            {
                "type": "actions",
                "block_id": ACTIONS_BLOCK,
                "elements": [
                    {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "text": {"type": "plain_text", "text": "Approve"}, "value": value},
                    {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "text": {"type": "plain_text", "text": "Reject"}, "value": value},
                ],
            }
        )
    text = f"{'Approval needed' if not closed else 'Gate ' + gate.state}: {status.service} release {status.release_id} ({progress_line(gate, names)})"
    return _clip(text, 3000), blocks


def message_metadata(release_id: str, gate: str) -> dict[str, Any]:
    """Slack message metadata that ties the message to its gate (searchable, survives edits)."""
    return {"event_type": METADATA_EVENT, "event_payload": {"release_id": release_id, "gate": gate}}


def reject_modal(private_metadata: str, *, release_id: str, gate: str) -> dict[str, Any]:
    """The modal that asks a rejecting approver why (the reason goes into the record)."""
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Reject release"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"Reject *{escape(release_id)}* at gate *{escape(gate)}*?", 3000)}},
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "min_length": 3, "max_length": 1000},
            },
        ],
    }
