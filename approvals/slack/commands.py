"""The `/signoff` slash command: a registry of subcommands, each a small async function.

`status`, `list`, `abort` and `help` live here. Other work extends the registry instead of
editing the dispatcher — the runbook issue adds `runbook …` with::

    from approvals.slack.commands import register_subcommand
    register_subcommand("runbook", run_runbook, usage="runbook run NAME [KEY=VALUE …]", summary="…")

A handler receives a `CommandContext` and returns the text to show the caller (ephemeral).
It raises `SignoffError` with a one-sentence message for anything the caller got wrong; the
dispatcher shows that sentence, never a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from temporalio.service import RPCError

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.directory import ApproverDirectory
from signoff.errors import Refused, TemporalUnreachable, UsageError
from signoff.models import ReleaseStatus
from signoff.slack_blocks import escape, progress_line, release_url

ABORT_GROUP = "on-call"


@dataclass
class CommandContext:
    """Everything a subcommand may use; identity is resolved only when a handler asks for it."""

    args: list[str]
    text: str
    slack_user_id: str
    settings: Settings
    directory: ApproverDirectory
    client_factory: Callable[[], Awaitable[SignoffClient]]
    resolve_identity: Callable[[], Awaitable[str]]
    channel_id: str = ""
    web: Any = None
    signer: Any = None
    team_id: str = ""

    async def client(self) -> SignoffClient:
        return await self.client_factory()

    async def identity(self) -> str:
        return await self.resolve_identity()


SubcommandHandler = Callable[[CommandContext], Awaitable[str]]


@dataclass(frozen=True)
class Subcommand:
    handler: SubcommandHandler
    usage: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(name: str, handler: SubcommandHandler, *, usage: str, summary: str) -> None:
    """Add (or replace) `/signoff NAME …`; `help` lists it automatically."""
    SUBCOMMANDS[name.lower()] = Subcommand(handler=handler, usage=usage, summary=summary)


def help_text(registry: dict[str, Subcommand] | None = None) -> str:
    registry = SUBCOMMANDS if registry is None else registry
    lines = ["*/signoff* — talk to the release orchestrator:"]
    for name in sorted(registry):
        sub = registry[name]
        lines.append(f"• `/signoff {sub.usage}` — {sub.summary}")
    lines.append("• `/signoff help` — this text")
    return "\n".join(lines)


def describe_status(status: ReleaseStatus, settings: Settings, directory: ApproverDirectory | None = None) -> str:
    """One short paragraph: phase, tier, gates with progress, link to the Temporal UI."""
    link = release_url(settings.ui_url, settings.namespace, status.release_id)
    head = f"*<{link}|{escape(status.release_id)}>* — {escape(status.service)} → {escape(status.environment)}: *{status.phase.value}*"
    if status.tier:
        head += f", tier {escape(status.tier)}"
    lines = [head, f"artifact `{escape(status.artifact_digest or 'unknown')}`, requested by {escape(status.requested_by)}"]
    names = _names(status, directory)
    for gate in status.gates:
        lines.append(f"gate *{escape(gate.name)}* ({gate.state}): {progress_line(gate, names)}")
    if status.outcome:
        lines.append(f"outcome: {escape(status.outcome)}" + (f" — {escape(status.reason)}" if status.reason else ""))
    return "\n".join(lines)


def _names(status: ReleaseStatus, directory: ApproverDirectory | None) -> dict[str, str]:
    if directory is None:
        return {}
    out: dict[str, str] = {}
    for gate in status.gates:
        for rec in [*gate.approvals, *gate.rejections]:
            try:
                out[rec.by.lower()] = directory.display_name(rec.by)
            except Exception:  # noqa: BLE001 - a missing directory only costs the pretty name
                out[rec.by.lower()] = rec.by.split("@", 1)[0]
    return out


async def _status(ctx: CommandContext) -> str:
    if len(ctx.args) != 1:
        raise UsageError("give exactly one release id: `/signoff status rel-checkout-7f3a`.")
    client = await ctx.client()
    return describe_status(await client.status(ctx.args[0]), ctx.settings, ctx.directory)


async def _waiting_releases(client: SignoffClient, *, limit: int = 50) -> tuple[list[ReleaseStatus], int]:
    """Running releases waiting for approval; those whose worker did not answer are counted."""
    statuses = await client.list_releases(phase="awaiting_approval", limit=limit)
    answered = [s for s in statuses if not (s.reason or "").startswith("status unavailable")]
    return answered, len(statuses) - len(answered)


async def _list(ctx: CommandContext) -> str:
    client = await ctx.client()
    try:
        releases, silent = await _waiting_releases(client)
    except RPCError as e:
        raise TemporalUnreachable("Temporal did not answer the list query; try again in a minute.") from e
    if not releases and not silent:
        return "No releases are waiting for approval."
    lines = [f"{len(releases)} release{'s' if len(releases) != 1 else ''} waiting for approval:"]
    for status in releases[:20]:
        gates = "; ".join(f"{escape(g.name)} {len(g.approvals)} of {g.required}" for g in status.gates if g.state == "open")
        link = release_url(ctx.settings.ui_url, ctx.settings.namespace, status.release_id)
        lines.append(f"• <{link}|{escape(status.release_id)}> {escape(status.service)} (requested by {escape(status.requested_by)}) {gates}")
    if len(releases) > 20:
        lines.append(f"…and {len(releases) - 20} more; see `signoff release list --phase awaiting_approval`.")
    if silent:
        lines.append(f"{silent} more did not answer in time (is a worker running?).")
    return "\n".join(lines)


async def _abort(ctx: CommandContext) -> str:
    if len(ctx.args) < 2:
        raise UsageError("give a release id and a reason: `/signoff abort rel-checkout-7f3a canary is paging`.")
    release_id, reason = ctx.args[0], " ".join(ctx.args[1:])
    identity = await ctx.identity()
    if identity not in ctx.directory.members(ABORT_GROUP):
        raise Refused(f"only the {ABORT_GROUP} group may abort releases from Slack and {identity} is not in it; ask on-call or use the CLI.")
    client = await ctx.client()
    await client.abort(release_id, identity=identity, reason=reason, channel="slack")
    return f"Release {escape(release_id)} is being aborted by {escape(identity)}: {escape(reason)}"


register_subcommand("status", _status, usage="status RELEASE", summary="phase, gates and progress of a release")
register_subcommand("list", _list, usage="list", summary="releases waiting for approval")
register_subcommand("abort", _abort, usage="abort RELEASE REASON", summary="stop a release (on-call only)")


@dataclass
class ParsedCommand:
    name: str
    args: list[str] = field(default_factory=list)


def parse_command(text: str) -> ParsedCommand:
    words = (text or "").split()
    if not words:
        return ParsedCommand("help")
    return ParsedCommand(words[0].lower(), words[1:])
