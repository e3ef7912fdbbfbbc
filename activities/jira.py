"""Jira side effects: the approval ticket of a gate, and the incident ticket of a rollback.

Many organisations approve production changes in their ticketing system and want every rollback
to leave an incident ticket with the evidence. These activities talk to Jira with the `jira`
library (``SIGNOFF_JIRA_URL``, ``SIGNOFF_JIRA_USER`` + ``SIGNOFF_JIRA_TOKEN``,
``SIGNOFF_JIRA_PROJECT``). Without ``SIGNOFF_JIRA_URL`` they do nothing and return an empty
`ChatRef`, so Jira is optional.

Idempotency: an activity can be retried after its side effect happened (the worker crashed, the
HTTP response was lost). Tickets therefore carry deterministic labels
(``signoff-release-<id>`` + ``signoff-gate-<gate>``, or ``signoff-incident-<id>``) and every
activity *searches* for them before creating; closing comments carry a marker and are only added
when absent; transitions are only made when the ticket is not already in the target status.

Failures: Jira unreachable, 5xx or 429 → a retryable `ApplicationError` (the workflow runs these
activities in a background outbox with retries, so the release never waits on Jira); bad
credentials, an unknown project or issue type → non-retryable, with the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import requests
from jira import JIRA, JIRAError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.models import ChatRef, GateNotice, GateStatus, NotifyRequest, ReleaseStatus
from signoff.plan_view import approval_rows

log = logging.getLogger(__name__)

# Labels are the contract with approvals/jira/parse.py, which reads them back from webhooks.
BASE_LABEL = "signoff"
RELEASE_LABEL_PREFIX = "signoff-release-"
GATE_LABEL_PREFIX = "signoff-gate-"
DIGEST_LABEL_PREFIX = "signoff-digest-"
PLAN_LABEL_PREFIX = "signoff-plan-"
INCIDENT_LABEL_PREFIX = "signoff-incident-"

CLOSED_STATES = {"approved", "rejected", "expired", "closed"}
T = TypeVar("T")


def _setting(extra: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = extra.get(name) or os.environ.get(name)
    return value if value else default


@dataclass(frozen=True)
class JiraSettings:
    """SIGNOFF_JIRA_* settings, read from `Settings.extra` first and then the environment."""

    url: str | None = None
    user: str | None = None
    token: str | None = None
    project: str | None = None
    issue_type: str = "Task"
    incident_issue_type: str = "Task"
    approved_status: str = "Approved"
    done_status: str = "Done"
    declined_status: str = "Declined"
    timeout_seconds: float = 15.0
    reindex_grace_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "JiraSettings":
        extra = settings.extra or {}
        issue_type = _setting(extra, "SIGNOFF_JIRA_ISSUE_TYPE", "Task") or "Task"
        return cls(
            url=_setting(extra, "SIGNOFF_JIRA_URL"),
            user=_setting(extra, "SIGNOFF_JIRA_USER"),
            token=_setting(extra, "SIGNOFF_JIRA_TOKEN"),
            project=_setting(extra, "SIGNOFF_JIRA_PROJECT"),
            issue_type=issue_type,
            incident_issue_type=_setting(extra, "SIGNOFF_JIRA_INCIDENT_ISSUE_TYPE", issue_type) or issue_type,
            approved_status=_setting(extra, "SIGNOFF_JIRA_APPROVED_STATUS", "Approved") or "Approved",
            done_status=_setting(extra, "SIGNOFF_JIRA_DONE_STATUS", "Done") or "Done",
            declined_status=_setting(extra, "SIGNOFF_JIRA_DECLINED_STATUS", "Declined") or "Declined",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.url)


# --------------------------------------------------------------------------- labels and text


def label_value(value: str) -> str:
    """Jira labels cannot contain whitespace; release ids and gate names normally have none."""
    return re.sub(r"\s+", "_", value.strip())


def gate_labels(release_id: str, gate: str, digest: str | None, plan: str | None = None) -> list[str]:
    """The labels that tie a ticket to its gate and to the artifact and plan it shows."""
    labels = [BASE_LABEL, RELEASE_LABEL_PREFIX + label_value(release_id), GATE_LABEL_PREFIX + label_value(gate)]
    if digest and digest.startswith("sha256:"):
        labels.append(DIGEST_LABEL_PREFIX + digest.removeprefix("sha256:"))
    if plan and plan.startswith("sha256:"):
        labels.append(PLAN_LABEL_PREFIX + plan.removeprefix("sha256:"))
    return labels


def incident_label(release_id: str) -> str:
    return INCIDENT_LABEL_PREFIX + label_value(release_id)


def release_url(ui_url: str, namespace: str, release_id: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{release_id}"


def _untrusted(text: str) -> str:
    """Text written by requesters or agents, shown verbatim: inside {noformat} Jira renders no
    markup, links or mentions, and the text cannot close the block itself."""
    return "{noformat}" + text.replace("{noformat}", "{ noformat }") + "{noformat}"


def _one_line(text: str, limit: int = 250) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _progress(gate: GateStatus) -> str:
    if gate.progress:
        return gate.progress
    who = ", ".join(a.by for a in gate.approvals)
    return f"{len(gate.approvals)} of {gate.required}" + (f": {who}" if who else "")


def approval_ticket(status: ReleaseStatus, gate: GateStatus, *, ui_url: str, namespace: str, approved: str = "Approved", declined: str = "Declined") -> tuple[str, str]:
    """(summary, description) with the evidence the Slack message shows."""
    link = release_url(ui_url, namespace, status.release_id)
    summary = _one_line(f"Approval needed: {status.service} → {status.environment} ({status.release_id}, gate {gate.name})")
    lines = [
        f"h3. Approval needed: {status.service} → {status.environment}",
        "",
        f"*Release:* [{status.release_id}|{link}]",
        f"*Gate:* {gate.name}",
        f"*Artifact:* {{{{{status.artifact_digest or 'unknown'}}}}}",
        f"*Requested by:* {status.requested_by}",
        f"*Risk tier:* {status.tier or (status.policy.tier if status.policy else 'unknown')}",
    ]
    if status.agent is not None:
        agent = status.agent
        parts = [agent.id] + ([f"model {agent.model}"] if agent.model else []) + ([f"prompt sha256 {agent.prompt_sha256}"] if agent.prompt_sha256 else [])
        lines.append("*Agent:* " + _one_line(", ".join(parts)))
    lines += ["", "*Change:*", _untrusted(status.change_summary or "(no summary)")]
    if status.tests is not None:
        t = status.tests
        line = f"{t.passed} passed, {t.failed} failed, {t.skipped} skipped, {t.errors} errors"
        if t.coverage is not None:
            line += f"; coverage {t.coverage:.1f}%"
        lines.append(f"*Tests:* {line}")
        if t.failures:
            lines.append(_untrusted("Failing: " + ", ".join(t.failures[:10])))
    if status.provenance is not None:
        p = status.provenance
        lines.append(f"*Provenance:* {'verified' if p.verified else 'NOT verified'}" + (f" ({p.identity}, {p.issuer})" if p.identity else ""))
    if status.policy is not None and status.policy.reasons:
        lines += ["*Why this tier:*", _untrusted("\n".join(status.policy.reasons[:10]))]
    rows = approval_rows(status, full=f"signoff release status {status.release_id} --json")
    if rows:
        lines += ["", "h4. What will run"] + [f"*{label}:* " + _untrusted(value) for label, value in rows]
    needs = f"{gate.required} approval{'s' if gate.required != 1 else ''}"
    if gate.from_groups:
        needs += " from " + ", ".join(gate.from_groups)
    if gate.quotas:
        needs += " (at least " + ", ".join(f"{n} {g}" for g, n in gate.quotas.items()) + ")"
    lines += [
        f"*Needs:* {needs}",
        f"*Progress:* {_progress(gate)}",
        "",
        f"To approve, move this ticket to *{approved}* or comment {{{{/approve [reason]}}}}. "
        f"To reject, move it to *{declined}* or comment {{{{/reject <reason>}}}}. "
        "Your Jira account must be in the approver directory; the requester cannot approve.",
        f"Follow the release in the [Temporal UI|{link}] or with {{{{signoff release status {status.release_id}}}}}.",
    ]
    return summary, "\n".join(lines)


def outcome_comment(status: ReleaseStatus, gate: GateStatus, *, ui_url: str, namespace: str) -> str:
    """The closing comment: who decided, and what happens next."""
    link = release_url(ui_url, namespace, status.release_id)
    approvers = ", ".join(a.by for a in gate.approvals) or "nobody"
    count = f"{len(gate.approvals)} of {gate.required}"
    if gate.state == "approved":
        head = f"Gate *{gate.name}* approved ({count}) by {approvers}; the release continues."
    elif gate.state == "rejected":
        who = "; ".join(f"{r.by}: {r.reason}" if r.reason else r.by for r in gate.rejections) or "an approver"
        head = f"Gate *{gate.name}* rejected by {_one_line(who, 500)}; the release stops."
    elif gate.state == "expired":
        head = f"Gate *{gate.name}* expired with {count} approvals; the release is rejected."
    else:
        head = f"Gate *{gate.name}* closed ({count}); release phase {status.phase.value}."
    return f"{head}\nRelease: [{status.release_id}|{link}]\n{_marker(status.release_id, gate.name, 'closed')}"


def _marker(release_id: str, gate: str, event: str) -> str:
    return f"(signoff {event} {release_id}/{gate})"


def incident_ticket(req: NotifyRequest, *, ui_url: str, namespace: str) -> tuple[str, str]:
    """(summary, description): what was rolled back, the measurements that caused it, and where
    the signed decision records are."""
    status = req.status
    link = release_url(ui_url, namespace, req.release_id)
    what = "Rollback" if req.kind in ("incident", "rollback") else req.kind.replace("_", " ").capitalize()
    subject = f"{status.service} release {req.release_id}" if status else req.release_id
    summary = _one_line(f"{what}: {subject}: {req.text}")
    lines = [
        f"h3. {what}: {subject}",
        "",
        "*Why:*",
        _untrusted(req.text or "(no reason given)"),
        f"*Release:* [{req.release_id}|{link}]",
    ]
    if status is not None:
        lines += [
            f"*Environment:* {status.environment}",
            f"*Phase:* {status.phase.value}" + (f" ({status.outcome})" if status.outcome else ""),
            f"*Rolled-back artifact:* {{{{{status.artifact_digest or 'unknown'}}}}}",
            f"*Restored artifact:* {{{{{status.previous_digest or 'none (canary weight set to 0)'}}}}}",
            f"*Requested by:* {status.requested_by}",
        ]
        if status.agent is not None:
            lines.append(f"*Agent:* {status.agent.id}" + (f" (model {status.agent.model})" if status.agent.model else ""))
        approvers = sorted({a.by for g in status.gates for a in g.approvals})
        if approvers:
            lines.append("*Approved by:* " + ", ".join(approvers))
        canary = status.canary
        if canary is not None:
            lines += ["", f"h4. Canary (step {canary.step}, weight {canary.weight}%, verdict {canary.verdict or 'none'})"]
            if canary.analyses:
                lines.append("||metric||step||query||value||condition||verdict||message||")
                for m in canary.analyses[-50:]:
                    value = "no data" if m.value is None else f"{m.value:g}"
                    message = _one_line(m.message, 200).replace("|", "/") or " "
                    # Jira wiki markup: braces and pipes escaped, so the query reads as it was sent.
                    query = _one_line(m.query, 300).replace("{", "\\{").replace("}", "\\}").replace("|", "\\|") or " "
                    condition = _one_line(m.condition, 200).replace("|", "/") or " "
                    lines.append(f"|{m.metric}|{'' if m.step is None else m.step} |{query}|{value}|{condition}|{m.verdict}{' (dry run)' if m.dry_run else ''}|{message}|")
            else:
                lines.append("No canary measurements were recorded.")
    lines += [
        "",
        "h4. Decision records",
        f"Every decision of this release is signed and chained: {{{{signoff audit show {req.release_id}}}}}; "
        f"check the chain with {{{{signoff audit verify {req.release_id}}}}}.",
    ]
    return summary, "\n".join(lines)


# --------------------------------------------------------------------------- activities


def _jql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class JiraActivities:
    """Jira tickets for gates and incidents; `jira_factory` lets tests hand in a client."""

    def __init__(self, settings: Settings, jira_factory: Callable[[], JIRA] | None = None) -> None:
        self.settings = settings
        self.jira_settings = JiraSettings.from_settings(settings)
        self._factory = jira_factory or self._connect

    # ------------------------------------------------------------------ the two activities

    @activity.defn(name="jira_gate_notice")
    async def gate_notice(self, notice: GateNotice) -> ChatRef:
        """Open the gate's approval ticket, or comment and close it when the gate closes."""
        if not self.jira_settings.enabled or "jira" not in notice.gate.channels:
            return ChatRef()
        if notice.event == "opened":
            key = await self._find_or_create(
                "creating the approval ticket",
                self._gate_jql(notice),
                lambda jira: self._create_gate_ticket(jira, notice),
            )
            return ChatRef(key=key)
        if notice.event == "closed" or notice.gate.state in CLOSED_STATES:
            return ChatRef(key=await self._run("closing the approval ticket", lambda jira: self._close_gate_ticket(jira, notice)))
        return ChatRef(key=await self._run(f"commenting the {notice.event} on the approval ticket", lambda jira: self._progress_comment(jira, notice)))

    @activity.defn(name="jira_open_incident")
    async def open_incident(self, req: NotifyRequest) -> ChatRef:
        """Open the incident ticket of a rollback (or failed runbook) once, with its evidence."""
        if not self.jira_settings.enabled:
            return ChatRef()
        jql = f"project = {_jql_string(self._project())} AND labels = {_jql_string(incident_label(req.release_id))} ORDER BY created ASC"
        key = await self._find_or_create("opening the incident ticket", jql, lambda jira: self._create_incident(jira, req))
        return ChatRef(key=key)

    # ------------------------------------------------------------------ blocking work

    def _connect(self) -> JIRA:
        s = self.jira_settings
        if not s.user or not s.token:
            raise ApplicationError(
                "SIGNOFF_JIRA_URL is set but SIGNOFF_JIRA_USER or SIGNOFF_JIRA_TOKEN is not; set both or unset SIGNOFF_JIRA_URL.",
                type="JiraNotConfigured",
                non_retryable=True,
            )
        # max_retries=0: Temporal's retry policy owns retrying, with backoff that survives restarts.
        return JIRA(
            server=s.url,
            basic_auth=(s.user, s.token),
            max_retries=0,
            timeout=s.timeout_seconds,
            options={"check_update": False},
        )

    def _project(self) -> str:
        if not self.jira_settings.project:
            raise ApplicationError(
                "SIGNOFF_JIRA_URL is set but SIGNOFF_JIRA_PROJECT is not; set it to the project key for signoff tickets.",
                type="JiraNotConfigured",
                non_retryable=True,
            )
        return self.jira_settings.project

    def _gate_jql(self, notice: GateNotice) -> str:
        release_label, gate_label = gate_labels(notice.status.release_id, notice.gate.name, None)[1:3]
        return (
            f"project = {_jql_string(self._project())} AND labels = {_jql_string(release_label)}"
            f" AND labels = {_jql_string(gate_label)} ORDER BY created ASC"
        )

    def _search(self, jira: JIRA, jql: str) -> str | None:
        found = jira.search_issues(jql, maxResults=5, fields="labels,status")
        keys = [issue.key for issue in found]  # type: ignore[union-attr]
        if len(keys) > 1:
            log.warning("jira: %d tickets match %s; using the oldest, %s", len(keys), jql, keys[0])
        return keys[0] if keys else None

    async def _find_or_create(self, what: str, jql: str, create: Callable[[JIRA], str]) -> str:
        """Search first, so an attempt that runs after a lost response finds its own ticket.

        Jira's search index can lag a create by a moment; on a retry we search twice, a grace
        period apart, before creating.
        """
        retried = activity.in_activity() and activity.info().attempt > 1

        def find() -> tuple[JIRA, str | None]:
            jira = self._factory()
            return jira, self._search(jira, jql)

        jira, key = await self._call(what, find)
        if key is None and retried and self.jira_settings.reindex_grace_seconds > 0:
            await asyncio.sleep(self.jira_settings.reindex_grace_seconds)
            key = await self._call(what, lambda: self._search(jira, jql))
        if key is None:
            key = await self._call(what, lambda: create(jira))
            log.info("jira: %s → %s", what, key)
        return key

    async def _run(self, what: str, work: Callable[[JIRA], T]) -> T:
        return await self._call(what, lambda: work(self._factory()))

    async def _call(self, what: str, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except ApplicationError:
            raise
        except JIRAError as e:
            raise _jira_failure(e, what, self.jira_settings.url or "") from e
        except (requests.RequestException, OSError) as e:
            raise ApplicationError(
                f"Jira at {self.jira_settings.url} did not answer while {what} ({e.__class__.__name__}); the activity will retry.",
                type="JiraUnavailable",
            ) from e

    def _create_gate_ticket(self, jira: JIRA, notice: GateNotice) -> str:
        status, gate = notice.status, notice.gate
        summary, description = approval_ticket(
            status,
            gate,
            ui_url=self.settings.ui_url,
            namespace=self.settings.namespace,
            approved=self.jira_settings.approved_status,
            declined=self.jira_settings.declined_status,
        )
        issue = jira.create_issue(
            fields={
                "project": {"key": self._project()},
                "issuetype": {"name": self.jira_settings.issue_type},
                "summary": summary,
                "description": description,
                "labels": gate_labels(status.release_id, gate.name, status.artifact_digest, status.plan_sha256),
            },
            prefetch=False,
        )
        return str(issue.key)

    def _create_incident(self, jira: JIRA, req: NotifyRequest) -> str:
        summary, description = incident_ticket(req, ui_url=self.settings.ui_url, namespace=self.settings.namespace)
        labels = [BASE_LABEL, "signoff-incident", incident_label(req.release_id)]
        if req.status is not None:
            labels.append("signoff-service-" + label_value(req.status.service))
        issue = jira.create_issue(
            fields={
                "project": {"key": self._project()},
                "issuetype": {"name": self.jira_settings.incident_issue_type},
                "summary": summary,
                "description": description,
                "labels": labels,
            },
            prefetch=False,
        )
        return str(issue.key)

    def _gate_key(self, jira: JIRA, notice: GateNotice) -> str | None:
        if notice.gate.jira_key:
            try:
                return str(jira.issue(notice.gate.jira_key, fields="labels").key)
            except JIRAError as e:
                if e.status_code != 404:
                    raise
        return self._search(jira, self._gate_jql(notice))

    def _comment_once(self, jira: JIRA, key: str, body: str, marker: str) -> None:
        if any(marker in str(getattr(c, "body", "")) for c in jira.comments(key)):
            return
        jira.add_comment(key, body)

    def _close_gate_ticket(self, jira: JIRA, notice: GateNotice) -> str | None:
        key = self._gate_key(jira, notice)
        if key is None:
            log.info("jira: no approval ticket for %s/%s to close", notice.status.release_id, notice.gate.name)
            return None
        text = outcome_comment(notice.status, notice.gate, ui_url=self.settings.ui_url, namespace=self.settings.namespace)
        self._comment_once(jira, key, text, _marker(notice.status.release_id, notice.gate.name, "closed"))
        target = self.jira_settings.done_status if notice.gate.state == "approved" else self.jira_settings.declined_status
        current = str(jira.issue(key, fields="status").fields.status.name)
        if current.casefold() == target.casefold():
            return key
        for t in jira.transitions(key):
            to_name = str((t.get("to") or {}).get("name", ""))
            if target.casefold() in (to_name.casefold(), str(t.get("name", "")).casefold()):
                jira.transition_issue(key, str(t["id"]))
                return key
        log.warning("jira: %s cannot move from %s to %s; set SIGNOFF_JIRA_DONE_STATUS/DECLINED_STATUS to statuses its workflow allows", key, current, target)
        return key

    def _progress_comment(self, jira: JIRA, notice: GateNotice) -> str | None:
        key = self._gate_key(jira, notice)
        if key is None:
            return None
        gate = notice.gate
        if notice.event == "reminder":
            text, tag = f"Reminder: gate *{gate.name}* is still waiting ({_progress(gate)}).", f"reminder-{gate.reminders_sent}"
        elif notice.event == "escalation":
            text, tag = f"Escalated to {notice.escalate_to or 'the escalation group'}: gate *{gate.name}* is still waiting ({_progress(gate)}).", "escalation"
        else:
            seen = len(gate.approvals) + len(gate.rejections) + len(gate.revocations)
            text, tag = f"Progress on gate *{gate.name}*: {_progress(gate)}.", f"progress-{seen}"
        marker = _marker(notice.status.release_id, gate.name, tag)
        self._comment_once(jira, key, f"{text}\n{marker}", marker)
        return key


def _jira_failure(e: JIRAError, what: str, url: str) -> ApplicationError:
    code = e.status_code
    if code is None or code >= 500 or code in (408, 409, 429):
        return ApplicationError(
            f"Jira at {url} failed while {what} (HTTP {code}); the activity will retry.", type="JiraUnavailable"
        )
    if code in (401, 403):
        return ApplicationError(
            f"Jira refused signoff's credentials while {what} (HTTP {code}); check SIGNOFF_JIRA_USER and SIGNOFF_JIRA_TOKEN.",
            type="JiraAuthFailed",
            non_retryable=True,
        )
    detail = _one_line(str(e.text or (e.response.text if e.response is not None else "")), 300)
    return ApplicationError(
        f"Jira rejected {what} (HTTP {code}: {detail}); check SIGNOFF_JIRA_PROJECT, SIGNOFF_JIRA_ISSUE_TYPE and the statuses.",
        type="JiraRejected",
        non_retryable=True,
    )


def activities_from_settings(settings: Settings) -> list[Any]:
    """The bound activity methods for the worker (names: jira_gate_notice, jira_open_incident)."""
    jira = JiraActivities(settings)
    return [jira.gate_notice, jira.open_incident]
