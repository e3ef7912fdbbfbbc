"""Agents as governed principals: the worker's side of `signoff agent suspend|resume`.

`decide_agent_control` asks the policy (policies/agents.rego) who may; `set_agent_standing`
writes the worker's suspension list that the registry overlays on the agents file (so every
proof the agent signs is refused from then on); `agent_standing` is what a release re-reads
before it stops for a suspension; `running_releases_of_agent` finds the in-flight releases
with one visibility query on the `SignoffAgent` search attribute.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.errors import ConfigError, PolicyError
from signoff.models import AgentStandingChange
from signoff.policy import evaluate_query, policy_sha256
from signoff.search_attributes import AGENT, KIND, PHASE
from signoff.trust.registry import TrustStore, write_agent_standing

AGENT_DENIALS = "data.signoff.agents.denials"


class AgentActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path)

    def _registry(self) -> Any:
        try:
            return self.store.current()
        except ConfigError as e:
            raise ApplicationError(str(e), type="DirectoryError", non_retryable=True) from e

    @activity.defn(name="decide_agent_control")
    async def decide_agent_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """The policy's denials for a suspend/resume request (the agent's facts come from the
        worker's registry, never from the request)."""
        from signoff.trust.registry import read_agent_standings

        agent_id = str(request.get("agent_id", ""))
        entry = self._registry().agents.get(agent_id)
        if request.get("control_id") in read_agent_standings(self.settings.agent_standings_path).get(agent_id, {}).get("applied", []):
            return {"denials": ["this signed request was already carried out once; sign a new one (replay refused)"], "policy_sha256": None, "input": {}}
        document = {
            "action": request.get("action"),
            "reason": request.get("reason", ""),
            "channel": request.get("channel", "cli"),
            "principal": request.get("principal", {}),
            "agent": {"id": agent_id, "known": entry is not None, "owner": entry.owner if entry else "", "status": entry.status if entry else ""},
        }
        try:
            denials = evaluate_query(AGENT_DENIALS, document, policy_dir=self.settings.policy_dir) or []
            sha = policy_sha256(self.settings.policy_dir)
        except PolicyError as e:
            raise ApplicationError(str(e), type="PolicyError", non_retryable=True) from e
        return {"denials": sorted(denials), "policy_sha256": sha, "input": document}

    @activity.defn(name="set_agent_standing")
    async def set_agent_standing(self, change: AgentStandingChange) -> dict[str, Any]:
        """Write the new standing; returns the one it replaced (idempotent when retried)."""
        previous = write_agent_standing(
            self.settings.agent_standings_path,
            change.agent_id,
            {"status": change.status, "by": change.by, "reason": change.reason, "control_id": change.control_id, "at": _now()},
        )
        return previous or {}

    @activity.defn(name="agent_standing")
    async def agent_standing(self, agent_id: str) -> dict[str, Any]:
        """The agent's status as the worker's registry says now (what a release trusts, not a signal)."""
        from signoff.trust.registry import read_agent_standings

        entry = self._registry().agents.get(agent_id)
        standing = read_agent_standings(self.settings.agent_standings_path).get(agent_id, {})
        return {"known": entry is not None, "status": entry.status if entry else "unknown", **{k: v for k, v in standing.items() if k not in ("status", "applied")}}

    @activity.defn(name="running_releases_of_agent")
    async def running_releases_of_agent(self, agent_id: str) -> list[str]:
        query = f"{KIND.name} = 'release' AND {AGENT.name} = '{agent_id}' AND ExecutionStatus = 'Running'"
        return [wf.id async for wf in activity.client().list_workflows(query)]


    @activity.defn(name="agent_usage")
    async def agent_usage(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the agent used since `since` (the release's UTC midnight), and its budgets.

        Releases and canaries are counted from visibility (one query each; this release and
        releases the policy denied do not count); build minutes from the signed log's build
        records, which carry each build's duration (this release's own build is not counted:
        its record may or may not be written yet, and the answer must not depend on that)."""
        agent_id, release_id, since = str(request["agent_id"]), str(request["release_id"]), str(request["since"])
        entry = self._registry().agents.get(agent_id)
        client = activity.client()
        mine = f"{KIND.name} = 'release' AND {AGENT.name} = '{agent_id}'"
        today = [wf async for wf in client.list_workflows(f"{mine} AND StartTime >= '{since}'")]
        releases = [wf.id for wf in today if wf.id != release_id and (wf.typed_search_attributes.get(PHASE) or "") != "denied"]
        canaries = [wf.id async for wf in client.list_workflows(f"{mine} AND {PHASE.name} = 'canary' AND ExecutionStatus = 'Running'")]
        return {
            "releases_today": len(releases),
            "build_minutes_today": round(await asyncio.to_thread(self.build_minutes, agent_id, since, release_id), 3),
            "canaries_now": len(canaries),
            "budgets": dict(entry.budgets) if entry else {},
        }

    def build_minutes(self, agent_id: str, since: str, release_id: str) -> float:
        """Minutes the agent's builds ran since `since`, other than this release's own build."""
        from signoff.audit import statement_of, store_from_settings

        start = datetime.fromisoformat(since)
        seconds = 0.0
        for entry in store_from_settings(self.settings).entries():
            if entry.get("workflow_id") == release_id:
                continue
            try:
                predicate = statement_of(entry["envelope"]).get("predicate") or {}
            except (KeyError, TypeError, ValueError):
                continue
            actor = predicate.get("actor") or {}
            if predicate.get("kind") != "build" or (actor.get("agent") or {}).get("id") != agent_id:
                continue
            try:
                at = datetime.fromisoformat(str(predicate.get("at")))
            except ValueError:
                continue
            if at >= start:
                seconds += float((predicate.get("evidence") or {}).get("duration_seconds") or 0)
        return seconds / 60


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def activities_from_settings(settings: Settings) -> list[Any]:
    acts = AgentActivities(settings)
    return [acts.decide_agent_control, acts.set_agent_standing, acts.agent_standing, acts.running_releases_of_agent, acts.agent_usage]
