"""`signoff agent …`: agents as governed principals (list, show, suspend, resume).

Registered on the `signoff` group by signoff/cli.py. Listing reads the worker's registry (the
agents file with the worker's suspensions over it); suspend and resume are signed requests the
worker's policy decides, like every other change.
"""

from __future__ import annotations

from typing import Any

import click

from signoff.cli import Out, _client, _email, cli, command
from signoff.config import Settings
from signoff.errors import NotFound


def _agents() -> dict[str, Any]:
    from signoff.trust.registry import TrustStore, read_agent_standings

    settings = Settings.from_env()
    registry = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path).current()
    standings = read_agent_standings(settings.agent_standings_path)
    return {
        ident: {
            "id": ident,
            "owner": entry.owner,
            "status": entry.status,
            "services": entry.services,
            "environments": entry.environments,
            "budgets": entry.budgets,
            "last_change": {k: v for k, v in standings[ident].items() if k != "applied"} if ident in standings else None,
        }
        for ident, entry in sorted(registry.agents.items())
    }


def _line(doc: dict[str, Any]) -> str:
    change = doc.get("last_change") or {}
    why = f" — {change.get('status')} by {change.get('by')}: {change.get('reason')}" if change.get("status") == "suspended" else ""
    return f"{doc['id']}  {doc['status']}  for {doc['owner']}  services {', '.join(doc['services'])}{why}"


@cli.group()
def agent() -> None:
    """The software agents that may ask for changes: list, show, suspend, resume."""


@agent.command("list")
@command
async def agent_list(out: Out) -> None:
    agents = list(_agents().values())
    out.emit({"agents": agents}, lambda: "\n".join(_line(a) for a in agents) or "no agents registered")


@agent.command("show")
@click.argument("agent_id")
@command
async def agent_show(out: Out, agent_id: str) -> None:
    doc = _agents().get(agent_id)
    if doc is None:
        raise NotFound(f"no agent {agent_id} is registered; check the id with `signoff agent list`.")
    client = await _client()
    doc = {**doc, "in_flight": await client.running_releases_of(agent_id)}
    out.emit(doc, lambda: _line(doc) + f"\nin-flight releases: {', '.join(doc['in_flight']) or 'none'}")


@agent.command("suspend")
@click.argument("agent_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", required=True, help="what the agent did (recorded and shown to approvers)")
@command
async def agent_suspend(out: Out, agent_id: str, identity: str, reason: str) -> None:
    """Refuse the agent's requests from now on and stop its in-flight releases."""
    client = await _client()
    result = await client.control_agent(agent_id, "suspend", identity=_email(identity), reason=reason)
    out.emit(result, lambda: f"{result.reason}\nstopping {len(result.stopping)} in-flight release(s): {', '.join(result.stopping) or 'none'}")


@agent.command("resume")
@click.argument("agent_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", default="", help="why it may act again")
@command
async def agent_resume(out: Out, agent_id: str, identity: str, reason: str) -> None:
    client = await _client()
    result = await client.control_agent(agent_id, "resume", identity=_email(identity), reason=reason)
    out.emit(result, result.reason)
