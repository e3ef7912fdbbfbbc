"""`signoff release plan`, `signoff release last-good` and `signoff audit trace`: what a release
would go through (advisor mode, signed, starts nothing) and what the signed log says happened.

Registered on the `release` and `audit` groups by signoff/cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from signoff.cli import Out, audit, command, release
from signoff.config import Settings
from signoff.errors import ConfigError, NotFound, SignoffError


def _log(settings: Settings) -> tuple[Any, Any]:
    from signoff.audit import store_from_settings, view_trust

    return store_from_settings(settings), view_trust(settings)


def _rollback_target(settings: Settings, service: str) -> dict[str, Any] | None:
    from signoff.trace import last_good

    try:
        return last_good(*_log(settings), service)
    except (NotFound, ConfigError):
        return None  # nothing good recorded yet: the rollback goes to whatever serves at promotion


@release.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", "out_file", default=None, type=click.Path(path_type=Path), help="also write the signed statement (DSSE JSON) here")
@command
async def release_plan(out: Out, file: Path, out_file: Path | None) -> None:
    """Advisor mode: tier, gates and who could approve them, denials, canary and rollback target,
    as a signed in-toto statement; nothing is started."""
    from signoff.plan import approvers, canary_plan, now_iso, plan_core, plan_sha256, sign_statement, statement
    from signoff.policy import preview_release_file
    from signoff.releasefile import load_release_file
    from signoff.trust.credentials import _cached_key, resolve_credential
    from signoff.trust.registry import TrustStore

    settings = Settings.from_env()
    spec, _ = load_release_file(file)
    decision, facts = preview_release_file(file, policy_dir=settings.policy_dir)
    registry = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path).current()
    kind, ident = ("agent", spec.agent.id) if spec.agent else ("person", spec.requested_by)
    owner = registry.agents.get(ident).owner if kind == "agent" and ident in registry.agents else spec.requested_by
    who_may = approvers(spec, decision, registry.directory, owner, (facts.get("change") or {}).get("authors"))
    credential = resolve_credential(settings, kind, ident)
    if credential.key_path is None:
        raise ConfigError(f"a plan is signed with a key, and {credential.principal} has only a token; set SIGNOFF_IDENTITY_KEY to its private key.")
    predicate = {
        "plan_sha256": plan_sha256(spec, decision),
        "core": plan_core(spec, decision),
        "approvers": who_may,
        "canary": canary_plan(spec),
        "rollback_target": _rollback_target(settings, spec.service),
        "facts": facts,
        "planned_by": credential.principal,
        "planned_at": now_iso(),
    }
    envelope = sign_statement(statement(predicate, spec), _cached_key(credential.key_path))
    if out_file is not None:
        try:
            out_file.write_text(json.dumps(envelope, indent=2) + "\n")
        except OSError as e:
            raise SignoffError(f"cannot write the plan to {out_file} ({e.strerror}); choose another --out path.") from e
    if credential.notice:
        click.echo(credential.notice, err=True)
    doc = {
        "tier": decision.tier,
        "gates": [g.model_dump(mode="json") for g in decision.gates],
        "denials": decision.denials,
        "approvers": who_may,
        "canary": predicate["canary"],
        "rollback_target": predicate["rollback_target"],
        "facts": facts,
        "policy_sha256": decision.policy_sha256,
        "plan_sha256": predicate["plan_sha256"],
        "statement": envelope,
    }

    def text() -> str:
        lines = [f"plan {doc['plan_sha256'][:19]}…  tier {decision.tier}  (policy {decision.policy_sha256[:12]}); nothing was started"]
        lines += [f"gate {g.name}: {g.required} of {', '.join(who_may[g.name]) or 'nobody eligible'}" for g in decision.gates] or ["no gates"]
        lines += [f"denied: {d}" for d in decision.denials]
        lines.append("canary: " + " → ".join(doc["canary"]))
        target = doc["rollback_target"]
        lines.append(f"rollback target: {target['digest']} ({target['release_id']})" if target else "rollback target: whatever serves when it promotes")
        return "\n".join(lines)

    out.emit(doc, text, ok=not decision.denials)


@release.command("last-good")
@click.argument("service")
@command
async def release_last_good(out: Out, service: str) -> None:
    """The last digest of SERVICE that succeeded with verified provenance (from the signed log)."""
    from signoff.trace import last_good

    doc = last_good(*_log(Settings.from_env()), service)
    out.emit(doc, f"{doc['digest']}  ({doc['release_id']}, {doc['provenance']} provenance, {doc['at']})")


@audit.command("trace")
@click.option("--digest", default=None, help="releases that deployed (or rolled back to) this digest")
@click.option("--agent", default=None, help="everything this agent did")
@click.option("--path", default=None, metavar="GLOB", help="releases whose derived paths match")
@click.option("--person", default=None, metavar="EMAIL", help="releases and runs this person asked for or decided on")
@click.option("--model", default=None, help="releases an agent with this model asked for")
@click.option("--since", default=None, help="ISO date/time or a span back from now (36h, 7d)")
@command
async def audit_trace(out: Out, digest: str | None, agent: str | None, path: str | None, person: str | None, model: str | None, since: str | None) -> None:
    """Releases, runbook runs and agent decisions from the signed log, each with its verification."""
    from signoff.trace import TraceQuery, parse_since, trace

    query = TraceQuery(digest=digest, agent=agent, path=path, person=person, model=model, since=parse_since(since))
    rows = trace(*_log(Settings.from_env()), query)

    def line(r: dict[str, Any]) -> str:
        mark = "verified" if r["verified"] else "NOT VERIFIED: " + "; ".join(r["problems"][:2])
        who = r["agent"] + (f" ({r['model']})" if r["model"] else "") if r["agent"] else ", ".join(r["people"][:2])
        return f"{r['workflow_id']}  {r['kind']}  {r['service'] or '-'}  {r['outcome'] or 'in flight'}  {r['digest'] or '-'}  {who}  [{mark}]"

    out.emit({"results": rows}, lambda: "\n".join(line(r) for r in rows) or "nothing matches", ok=all(r["verified"] for r in rows))
