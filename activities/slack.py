"""Slack side effects of a release: the approval request message, its updates, notifications.

Activities (names the workflows call):

- ``slack_gate_notice`` (GateNotice → ChatRef): ``opened`` posts the Block Kit approval
  request; ``progress`` / ``closed`` edit that same message in place (chat.update on
  gate.slack_channel / gate.slack_ts); ``reminder`` replies in the message's thread;
  ``escalation`` posts to the channel mentioning the ``escalate_to`` group.
- ``slack_notify`` (NotifyRequest → ChatRef): canary progress, rollbacks, anything else.

Idempotency on activity retry: a post is recorded, right after Slack accepted it, in
``<state_dir>/slack/posted/<key>.json`` and in the activity's heartbeat details, where the key
is derived from (release, gate, event, occurrence). A retried attempt — on this worker via the
file, on another worker via the heartbeat details — returns the recorded ChatRef instead of
posting twice. Edits (chat.update) are naturally idempotent. Each approval message also carries
Slack message metadata (``signoff_gate`` with release and gate), so it can be found from
Slack itself. The remaining window (Slack accepted the post but the worker died before the
record was written) can produce one duplicate message, never a lost one; we accept that
rather than block every post on a channel-history scan.

Without SLACK_BOT_TOKEN the activities do nothing and return an empty ChatRef (logged once),
so a release never fails because chat is not configured. Slack errors that retrying cannot fix
(channel_not_found, invalid_auth, …) are non-retryable ApplicationErrors; rate limits are
retried after Slack's Retry-After.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import ChatRef, GateNotice, NotifyRequest, ReleaseStatus

from signoff.slack_blocks import CLOSED_STATES, escape, gate_message, message_metadata, progress_line, release_url
from signoff.slack_config import SlackConfig, ensure_session, make_web_client
from signoff.directory import ApproverDirectory

log = logging.getLogger("signoff.activities.slack")

# Errors that mean "configuration is wrong": retrying will not help, a person must act.
PERMANENT_ERRORS = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "invalid_blocks",
    "msg_too_long",
    "message_not_found",
    "cant_update_message",
    "restricted_action",
}


class SlackActivities:
    """Bound to one Slack workspace (bot token) and one state directory."""

    def __init__(self, settings: Settings, web_client: AsyncWebClient | None = None, *, config: SlackConfig | None = None) -> None:
        self.settings = settings
        self.config = config or SlackConfig.from_env()
        if web_client is None and self.config.enabled:
            web_client = make_web_client(self.config)
        self.web = web_client
        self.records = Path(settings.state_dir) / "slack" / "posted"
        self._warned = False

    # ------------------------------------------------------------------ activities

    @activity.defn(name="slack_gate_notice")
    async def gate_notice(self, notice: GateNotice) -> ChatRef:
        """Post or update the approval request for one gate event."""
        if not self._ready():
            return ChatRef()
        status, gate = notice.status, notice.gate
        directory = self._directory(notice.directory_path)
        names = _names(directory, gate)
        existing = _ref(gate.slack_channel, gate.slack_ts) or self._recorded(self._key(status.release_id, gate.name, "opened"))
        if notice.event == "opened" or existing is None:
            return await self._post_gate_message(status, notice, directory, names)
        if notice.event in ("progress", "closed"):
            mention = [] if gate.state in CLOSED_STATES else _slack_ids(directory, _approvers(directory, gate.from_groups, gate.quotas))
            text, blocks = gate_message(status, gate, ui_url=self.settings.ui_url, namespace=self.settings.namespace, names=names, mention_ids=mention)
            await self._call("chat_update", channel=existing.channel, ts=existing.ts, text=text, blocks=blocks)
            return existing
        if notice.event == "reminder":
            key = self._key(status.release_id, gate.name, "reminder", str(gate.reminders_sent))
            waiting = _slack_ids(directory, [m for m in _approvers(directory, gate.from_groups, gate.quotas) if m not in {a.by for a in gate.approvals}])
            text = f"Reminder: gate *{escape(gate.name)}* of {escape(status.release_id)} still needs approvals ({progress_line(gate, names)})."
            if waiting:
                text += " " + " ".join(f"<@{u}>" for u in waiting)
            return await self._post_once(key, channel=existing.channel, text=text, thread_ts=existing.ts)
        # escalation: to the channel itself, so it is seen outside the thread.
        key = self._key(status.release_id, gate.name, "escalation", notice.escalate_to or "")
        group = notice.escalate_to or ""
        ids = _slack_ids(directory, directory.members(group) if directory and group else [])
        link = release_url(self.settings.ui_url, self.settings.namespace, status.release_id)
        text = (
            f"Escalation: gate *{escape(gate.name)}* of <{link}|{escape(status.release_id)}> ({escape(status.service)}) "
            f"is still waiting ({progress_line(gate, names)})."
        )
        if ids:
            text += f" {escape(group)}: " + " ".join(f"<@{u}>" for u in ids)
        return await self._post_once(key, channel=existing.channel, text=text)

    @activity.defn(name="slack_notify")
    async def notify(self, request: NotifyRequest) -> ChatRef:
        """A notification for people (canary progress, rollback, incident) in the service's channel."""
        if not self._ready():
            return ChatRef()
        status = request.status
        channel = request.channel or self.config.channel_for(status.service if status else None)
        if channel is None:
            log.warning("no Slack channel for %s; set SIGNOFF_SLACK_CHANNEL", request.release_id)
            return ChatRef()
        directory = self._directory(None)
        ids = _slack_ids(directory, _expand(directory, request.mention)) if directory else []
        text = escape(request.text)
        if status is not None:
            link = release_url(self.settings.ui_url, self.settings.namespace, status.release_id)
            text = f"[<{link}|{escape(status.release_id)}>] {text}"
        if ids:
            text += " " + " ".join(f"<@{u}>" for u in ids)
        digest = hashlib.sha256(request.text.encode()).hexdigest()[:16]
        key = self._key(request.release_id, request.gate or "", f"notify-{request.kind}", digest)
        return await self._post_once(key, channel=channel, text=text, thread_ts=request.thread_ts)

    # ------------------------------------------------------------------ posting

    async def _post_gate_message(self, status: ReleaseStatus, notice: GateNotice, directory: ApproverDirectory | None, names: dict[str, str]) -> ChatRef:
        gate = notice.gate
        channel = gate.slack_channel or self.config.channel_for(status.service)
        if channel is None:
            log.warning("no Slack channel for %s; set SIGNOFF_SLACK_CHANNEL or SIGNOFF_SLACK_CHANNEL_<SERVICE>", status.service)
            return ChatRef()
        mention = [] if gate.state in CLOSED_STATES else _slack_ids(directory, _approvers(directory, gate.from_groups, gate.quotas))
        text, blocks = gate_message(status, gate, ui_url=self.settings.ui_url, namespace=self.settings.namespace, names=names, mention_ids=mention)
        key = self._key(status.release_id, gate.name, "opened")
        return await self._post_once(key, channel=channel, text=text, blocks=blocks, metadata=message_metadata(status.release_id, gate.name))

    async def _post_once(self, key: str, **kwargs: Any) -> ChatRef:
        recorded = self._recorded(key) or _from_heartbeat(key)
        if recorded is not None:
            log.info("Slack message %s was already posted; not posting it again", key)
            return recorded
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        resp = await self._call("chat_postMessage", **kwargs)
        ref = ChatRef(channel=resp.get("channel") or kwargs.get("channel"), ts=resp.get("ts"))
        self._record(key, ref)
        if activity.in_activity():
            activity.heartbeat({"key": key, "channel": ref.channel, "ts": ref.ts})
        return ref

    async def _call(self, method: str, **kwargs: Any) -> Any:
        assert self.web is not None
        ensure_session(self.web)
        try:
            return await getattr(self.web, method)(**kwargs)
        except SlackApiError as e:
            resp = e.response
            error = str(resp.get("error", "unknown")) if resp is not None else "unknown"
            if resp is not None and resp.status_code == 429:
                retry_after = int(resp.headers.get("Retry-After", resp.headers.get("retry-after", 1)) or 1)
                raise ApplicationError(
                    f"Slack rate-limited {method}; retrying after {retry_after}s.", next_retry_delay=timedelta(seconds=retry_after)
                ) from e
            if error in PERMANENT_ERRORS:
                raise ApplicationError(
                    f"Slack refused {method} with {error}; check the bot token, its scopes and that the bot is in the channel.",
                    type="SlackConfigError",
                    non_retryable=True,
                ) from e
            raise ApplicationError(f"Slack answered {method} with {error} (HTTP {getattr(resp, 'status_code', '?')}); it will be retried.") from e
        except SlackClientError as e:
            raise ApplicationError(f"could not reach Slack for {method} ({e.__class__.__name__}); it will be retried.") from e

    # ------------------------------------------------------------------ records

    @staticmethod
    def _key(release_id: str, gate: str, event: str, occurrence: str = "") -> str:
        return hashlib.sha256(f"{release_id}|{gate}|{event}|{occurrence}".encode()).hexdigest()[:40]

    def _recorded(self, key: str) -> ChatRef | None:
        path = self.records / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return _ref(data.get("channel"), data.get("ts"))

    def _record(self, key: str, ref: ChatRef) -> None:
        """Atomic write (temp file + rename): a crash never leaves a half-written record."""
        try:
            self.records.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.records, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"channel": ref.channel, "ts": ref.ts}, f)
            os.replace(tmp, self.records / f"{key}.json")
        except OSError as e:
            log.warning("could not record Slack post %s under %s: %s", key, self.records, e)

    # ------------------------------------------------------------------ helpers

    def _ready(self) -> bool:
        if self.web is not None:
            return True
        if not self._warned:
            log.info("SLACK_BOT_TOKEN is not set; Slack notifications are off")
            self._warned = True
        return False

    def _directory(self, path: str | None) -> ApproverDirectory | None:
        # Always the worker's directory; a path in the notice (older histories) is not trusted.
        directory = ApproverDirectory(self.settings.directory_path)
        try:
            directory.snapshot()
        except ConfigError as e:
            log.warning("approver directory unavailable, nobody will be mentioned: %s", e)
            return None
        return directory


def _ref(channel: str | None, ts: str | None) -> ChatRef | None:
    return ChatRef(channel=channel, ts=ts) if channel and ts else None


def _from_heartbeat(key: str) -> ChatRef | None:
    if not activity.in_activity():
        return None
    for detail in activity.info().heartbeat_details:
        if isinstance(detail, dict) and detail.get("key") == key:
            return _ref(detail.get("channel"), detail.get("ts"))
    return None


def _approvers(directory: ApproverDirectory | None, groups: list[str], quotas: dict[str, int]) -> list[str]:
    if directory is None:
        return []
    out: list[str] = []
    for g in dict.fromkeys([*groups, *quotas]):
        out.extend(m for m in directory.members(g) if m not in out)
    return out


def _expand(directory: ApproverDirectory, mention: list[str]) -> list[str]:
    """Entries are emails or group names."""
    out: list[str] = []
    for entry in mention:
        for email in [entry.lower()] if "@" in entry else directory.members(entry):
            if email not in out:
                out.append(email)
    return out


def _slack_ids(directory: ApproverDirectory | None, emails: list[str]) -> list[str]:
    return directory.slack_ids(emails) if directory is not None else []


def _names(directory: ApproverDirectory | None, gate: Any) -> dict[str, str]:
    if directory is None:
        return {}
    return {rec.by.lower(): directory.display_name(rec.by) for rec in [*gate.approvals, *gate.rejections]}


def activities_from_settings(settings: Settings) -> list[Any]:
    """The bound activity methods for the worker."""
    acts = SlackActivities(settings)
    return [acts.gate_notice, acts.notify]
