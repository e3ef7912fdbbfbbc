"""`signoff mcp`: a Model Context Protocol server on stdio, so agents in IDEs and agent
frameworks ask for releases without writing Python against `SignoffClient`.

The server is the agent: it signs every request as one agent principal (`--agent ID`, with
`SIGNOFF_IDENTITY_KEY` / `SIGNOFF_OIDC_TOKEN`, or the dev stack's key for that agent) and can sign
as nobody else, so it has no way to approve and exposes no approval tool. Tool annotations say
honestly which tools change things, but nothing relies on them: the workflow's gates and the
deploy actuator's evidence check decide. Every `SignoffError` comes back as an MCP tool error
whose text is its one sentence.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal, ParamSpec, TypeVar

import yaml
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations

from signoff.client import SignoffClient, connect_temporal
from signoff.config import Settings
from signoff.errors import ConfigError, ReleaseFileError, Refused, SignoffError, UsageError
from signoff.models import Phase, ReleaseFile, ReleaseStatus, StartRelease
from signoff.releasefile import load_release_file, parse_release
from signoff.trust.credentials import Credential, resolve_credential

P = ParamSpec("P")
R = TypeVar("R")

WaitUntil = Literal["end", "gate"]

INSTRUCTIONS = (
    "signoff ships changes through a governed release: build, test, policy, human approval gates, "
    "canary, automatic rollback. You act as one agent: you can plan, start, watch, explain and abort "
    "releases, never approve them; people approve in Slack, Jira or the CLI."
)


class AgentSession:
    """The one agent principal the server acts as, and its lazily connected client.

    The client connects on the first tool call, so the server starts (and lists its tools) even
    while Temporal is down; that call then fails with the usual one sentence.
    """

    def __init__(self, settings: Settings, agent_id: str) -> None:
        self.settings = settings
        self.agent_id = agent_id
        self._client: SignoffClient | None = None
        self._lock = asyncio.Lock()

    def credential(self, kind: str, ident: str) -> Credential:
        """Sign only as this agent: a request as anyone else (a person's approval) is refused here,
        before any key is touched."""
        if (kind, ident) != ("agent", self.agent_id):
            raise Refused(f"this MCP server acts only as agent {self.agent_id} and cannot sign as {kind}:{ident}; people approve in Slack, Jira or the CLI.")
        return resolve_credential(self.settings, kind, ident)

    async def client(self) -> SignoffClient:
        async with self._lock:
            if self._client is None:
                temporal = await connect_temporal(self.settings)
                self._client = SignoffClient(temporal, settings=self.settings, credentials=self.credential, channel="api")
            return self._client


def explained(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A tool body whose `SignoffError` becomes an MCP tool error carrying its one sentence."""

    @functools.wraps(fn)
    async def tool(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except SignoffError as e:
            raise ToolError(e.diagnostics()) from e

    return tool


def read_release(path: str | None, content: str | None, base_dir: str | None) -> tuple[ReleaseFile, Path]:
    """A release from a file path or from its YAML content (relative paths in it then resolve
    against `base_dir`, default the server's working directory)."""
    if (path is None) == (content is None):
        raise ReleaseFileError("give exactly one of `path` (a release file) or `content` (its YAML text).")
    if path is not None:
        return load_release_file(path)
    try:
        data = yaml.safe_load(content or "")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ReleaseFileError(f"the release content is not valid YAML{where}; fix the syntax and send it again.") from e
    directory = Path(base_dir or ".").resolve()
    if not directory.is_dir():
        raise ReleaseFileError(f"base_dir {directory} is not a directory; give the checkout the release's relative paths refer to.")
    return parse_release(data, "the release content"), directory


def _status(status: ReleaseStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude={"history"})


async def _start_input(client: SignoffClient, release_id: str) -> StartRelease | None:
    """The release's start input, from the first event of its history (the status does not
    carry co-requesters, who are barred from approving too)."""
    async for event in client.handle(release_id).fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        if not payloads:
            return None
        decoded = await client.client.data_converter.decode(payloads[:1], [StartRelease])
        return decoded[0] if isinstance(decoded[0], StartRelease) else None
    return None


def explain(status: ReleaseStatus, spec: ReleaseFile | None, settings: Settings) -> dict[str, Any]:
    """Why the release is where it is: the policy's tier, the rules that fired, denials, and for
    each gate who may still approve (directory members of its groups, minus the people who can
    never approve their own change and those who already did)."""
    from signoff.directory import load_directory
    from signoff.gates import eligible_groups
    from signoff.trust.evidence import forbidden_approvers

    directory = load_directory(settings.directory_path)
    authors = status.change.authors if status.change else None
    barred = forbidden_approvers(status.requested_by, spec, authors) if spec else {status.requested_by.lower(), *(a.lower() for a in authors or [])}
    policy = status.policy
    gates = []
    for gate in status.gates:
        groups = eligible_groups(gate)  # type: ignore[arg-type]  # a GateStatus carries the gate's groups and quotas
        members = sorted(email for email in directory.people if not groups or directory.groups_of(email) & groups)
        approved = {a.by for a in gate.approvals}
        gates.append(
            {
                "name": gate.name,
                "state": gate.state,
                "progress": gate.progress,
                "required": gate.required,
                "from_groups": gate.from_groups,
                "quotas": gate.quotas,
                "approved_by": sorted(approved),
                "eligible_approvers": [m for m in members if m not in barred and m not in approved],
                "never_approve": sorted(barred),
                "refusals": [r.model_dump(mode="json") for r in gate.refusals],
            }
        )
    return {
        "release_id": status.release_id,
        "phase": status.phase.value,
        "reason": status.reason,
        "tier": status.tier,
        "rules_fired": policy.reasons if policy else [],
        "denials": policy.denials if policy else [],
        "policy_sha256": policy.policy_sha256 if policy else None,
        "gates": gates,
    }


def build_server(settings: Settings, agent_id: str) -> MCPServer[Any]:
    """The MCP server with signoff's tools and resources, acting as `agent_id`."""
    session = AgentSession(settings, agent_id)
    server: MCPServer[Any] = MCPServer("signoff", instructions=INSTRUCTIONS)
    read_only = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)

    @server.tool(annotations=read_only)
    @explained
    async def plan_release(path: str | None = None, content: str | None = None, base_dir: str | None = None) -> dict[str, Any]:
        """What the policy decides about a release before anything starts: risk tier, the gates it
        will wait at, denials and the rules that fired. Give a release file `path` or its YAML
        `content` (relative paths then resolve against `base_dir`)."""
        from signoff.plan import approvers, canary_plan, plan_sha256
        from signoff.policy import preview_release
        from signoff.trust.registry import TrustStore

        spec, directory = read_release(path, content, base_dir)
        decision, facts = await asyncio.to_thread(preview_release, spec, directory, policy_dir=settings.policy_dir, opa_url=settings.opa_url)
        registry = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path).current()
        owner = registry.agents[spec.agent.id].owner if spec.agent and spec.agent.id in registry.agents else spec.requested_by
        return {
            "tier": decision.tier,
            "gates": [g.model_dump(mode="json") for g in decision.gates],
            "approvers": approvers(spec, decision, registry.directory, owner, (facts.get("change") or {}).get("authors")),
            "denials": decision.denials,
            "rules_fired": decision.reasons,
            "canary": canary_plan(spec),
            "policy_sha256": decision.policy_sha256,
            # the hash the release started from this file will show in its status (`signoff release plan` signs it)
            "plan_sha256": plan_sha256(spec, decision),
            "facts": facts,
        }

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True))
    @explained
    async def start_release(
        path: str | None = None, content: str | None = None, base_dir: str | None = None, release_id: str | None = None
    ) -> dict[str, Any]:
        """Start a release (or return the existing one with the same id: retrying is safe). Give a
        release file `path` or its YAML `content`; its `agent.id` must be this server's agent. The
        release then builds, tests, and waits at the gates the policy sets until people approve."""
        spec, directory = read_release(path, content, base_dir)
        if spec.agent is None or spec.agent.id != agent_id:
            named = spec.agent.id if spec.agent else "no agent"
            raise ReleaseFileError(f"field 'agent.id' names {named}, but this MCP server acts as agent {agent_id}; set agent.id to {agent_id}.")
        client = await session.client()
        return _status(await client.start_release(spec, base_dir=directory, release_id=release_id))

    @server.tool(annotations=read_only)
    @explained
    async def release_status(release_id: str) -> dict[str, Any]:
        """A release's status: phase, tier, gates with their approvals, canary, outcome."""
        return _status(await (await session.client()).status(release_id))

    @server.tool(annotations=read_only)
    @explained
    async def wait_for_release(release_id: str, ctx: Context, until: WaitUntil = "end", timeout_seconds: float = 600) -> dict[str, Any]:
        """Wait until the release ends (`until="end"`) or reaches a gate or an end (`"gate"`),
        reporting each phase as a progress notification. After `timeout_seconds` it returns the
        current status with `"timed_out": true` (the release goes on)."""
        client = await session.client()
        deadline = time.monotonic() + timeout_seconds
        seen: list[str] = []
        while True:
            status = await client.status(release_id)
            phase = status.phase.value
            if not seen or seen[-1] != phase:
                seen.append(phase)
                await ctx.report_progress(len(seen), None, f"{release_id}: {phase}" + (f" — {status.reason}" if status.reason else ""))
            reached = status.phase.is_final or (until == "gate" and phase == "awaiting_approval")
            if reached or time.monotonic() >= deadline:
                return {**_status(status), "timed_out": not reached}
            await asyncio.sleep(0.5)

    @server.tool(annotations=read_only)
    @explained
    async def list_releases(phase: str | None = None, awaiting: str | None = None) -> dict[str, Any]:
        """Releases, optionally only those in `phase` or waiting for the person `awaiting`."""
        if phase is not None and phase not in {p.value for p in Phase}:
            raise UsageError(f"unknown phase {phase!r}; use one of: {', '.join(p.value for p in Phase)}.")
        releases = await (await session.client()).list_releases(phase=phase, awaiting=awaiting)
        return {"releases": [_status(s) for s in releases]}

    @server.tool(annotations=read_only)
    @explained
    async def explain_decision(release_id: str) -> dict[str, Any]:
        """Why a release waits at a gate or was denied: the tier, the policy rules that fired, the
        denials, and for each gate who can still approve and who never can."""
        client = await session.client()
        status = await client.status(release_id)
        started = await _start_input(client, release_id)
        return explain(status, started.spec if started else None, settings)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True))
    @explained
    async def abort_release(release_id: str, reason: str) -> dict[str, Any]:
        """Abort a release this agent asked for (a running canary is rolled back)."""
        return await (await session.client()).abort(release_id, identity=agent_id, reason=reason)

    @server.tool(annotations=read_only)
    @explained
    async def runbook_list() -> dict[str, Any]:
        """The certified runbooks on-call engineers can run, with their parameters."""
        from signoff.runbooks import catalogue

        return {"runbooks": catalogue(settings)}

    @server.resource("signoff://releases/{release_id}/status", mime_type="application/json")
    async def release_status_resource(release_id: str) -> str:
        """A release's status as JSON."""
        try:
            return json.dumps(_status(await (await session.client()).status(release_id)))
        except SignoffError as e:
            raise ResourceError(e.diagnostics()) from e

    @server.resource("signoff://releases/{release_id}/audit", mime_type="application/json")
    async def release_audit_resource(release_id: str) -> str:
        """A release's signed decision records, in order (`signoff audit show`)."""
        from signoff.audit import show, store_from_settings

        try:
            return json.dumps(show(release_id, store_from_settings(settings)), default=str)
        except SignoffError as e:
            raise ResourceError(e.diagnostics()) from e

    return server


def agent_from(settings: Settings, agent_id: str | None) -> str:
    """The agent the server acts as: `--agent`, else SIGNOFF_AGENT_ID; there is no default, so a
    server never signs as an agent its operator did not name."""
    if agent_id:
        return agent_id
    if os.environ.get("SIGNOFF_AGENT_ID"):
        return os.environ["SIGNOFF_AGENT_ID"]
    raise ConfigError("signoff mcp needs the agent it acts as; pass --agent ID or set SIGNOFF_AGENT_ID (the id registered in the agent registry).")

