"""Trace queries over the signed log: which releases deployed a digest, what an agent did, who
changed a path and which model generated it (`signoff audit trace`), and the last release of a
service that succeeded with verified provenance (`signoff release last-good`).

Answers come from the signed decision records themselves, never from what a workflow reports
now, and each result says whether its records verify: a tampered record is flagged in the
answer, not silently dropped or trusted. The log is read once and verified once per query.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from signoff.audit import statement_of, verify
from signoff.errors import NotFound, UsageError
from signoff.models import parse_duration


@dataclass
class Trail:
    """One workflow's story as its signed records tell it."""

    workflow_id: str
    kind: str = "release"
    service: str | None = None
    subject_digest: str | None = None
    deployed: list[str] = field(default_factory=list)
    rolled_back_to: list[str] = field(default_factory=list)
    agent: str | None = None
    model: str | None = None
    people: set[str] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)
    outcome: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    provenance: str | None = None
    target: dict[str, Any] | None = None
    indexes: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "kind": self.kind,
            "service": self.service,
            "digest": self.subject_digest,
            "deployed": self.deployed,
            "rolled_back_to": self.rolled_back_to,
            "agent": self.agent,
            "model": self.model,
            "people": sorted(self.people),
            "paths": self.paths,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "provenance": self.provenance,
            "verified": not self.problems,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class TraceQuery:
    digest: str | None = None
    agent: str | None = None
    path: str | None = None
    person: str | None = None
    model: str | None = None
    since: datetime | None = None

    def matches(self, trail: Trail) -> bool:
        if self.digest and self.digest not in {*trail.deployed, *trail.rolled_back_to}:
            return False
        if self.agent and trail.agent != self.agent:
            return False
        if self.model and trail.model != self.model:
            return False
        if self.person and self.person.lower() not in trail.people:
            return False
        if self.path and not any(fnmatch.fnmatchcase(p, self.path) for p in trail.paths):
            return False
        return not (self.since and (_time(trail.started_at) or datetime.min.replace(tzinfo=timezone.utc)) < self.since)


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """`--since`: an ISO date or time (UTC unless it says), or a span back from now (`36h`, `7d`)."""
    if not text:
        return None
    span = parse_duration(text)
    if isinstance(span, timedelta):
        return (now or datetime.now(timezone.utc)) - span
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO date/time (2026-11-30, 2026-11-30T09:00Z) nor a span (36h, 7d).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def trails(entries: Iterable[dict[str, Any]]) -> dict[str, Trail]:
    """Every workflow's trail, in log order."""
    found: dict[str, Trail] = {}
    for entry in entries:
        wid = entry.get("workflow_id")
        if not wid or "corrupt" in entry:
            continue
        trail = found.setdefault(str(wid), Trail(workflow_id=str(wid)))
        if isinstance(entry.get("index"), int):
            trail.indexes.add(entry["index"])
        try:
            statement = statement_of(entry["envelope"])
        except (KeyError, TypeError, ValueError):
            continue
        _read(trail, statement)
    return found


def _read(trail: Trail, statement: dict[str, Any]) -> None:
    predicate = statement.get("predicate") if isinstance(statement.get("predicate"), dict) else {}
    subject = (statement.get("subject") or [{}])[0]
    name = str(subject.get("name") or "")
    digest = (subject.get("digest") or {}).get("sha256")
    kind, outcome, at = predicate.get("kind"), predicate.get("outcome"), predicate.get("at")
    evidence = predicate.get("evidence") if isinstance(predicate.get("evidence"), dict) else {}
    actor = predicate.get("actor") if isinstance(predicate.get("actor"), dict) else {}
    trail.started_at = trail.started_at or at
    if name.startswith("agent:"):
        trail.kind, trail.agent = "agent", name.removeprefix("agent:")
    elif name.startswith("runbook:") or str(kind or "").startswith("runbook") or "runbook" in predicate:
        trail.kind = "runbook"
    elif "@" in name and trail.service is None:
        trail.service = name.split("@", 1)[0]
    if digest and trail.kind == "release":
        trail.subject_digest = f"sha256:{digest}"
    agent = actor.get("agent") if isinstance(actor.get("agent"), dict) else None
    if agent:
        trail.agent, trail.model = agent.get("id") or trail.agent, agent.get("model") or trail.model
    for who in (actor.get("identity"), actor.get("requested_by")):
        if isinstance(who, str) and "@" in who:
            trail.people.add(who.lower())
        elif isinstance(who, str) and who and trail.kind == "runbook":
            trail.agent = who  # a runbook run asked for by an agent names it as its requester
    if kind == "start" and isinstance(evidence.get("principal"), str) and evidence["principal"].startswith("agent:"):
        trail.agent = evidence["principal"].removeprefix("agent:")
    if kind == "policy" and isinstance(evidence.get("input"), dict):
        trail.paths = [str(p) for p in evidence["input"].get("paths") or []]
    if kind == "change" and not trail.paths:
        trail.paths = [str(p) for p in evidence.get("paths") or []]
    if kind == "deploy" and (evidence.get("weight") or 0) > 0 and digest and f"sha256:{digest}" not in trail.deployed:
        trail.deployed.append(f"sha256:{digest}")
    if kind in ("deploy", "rollback") and isinstance(evidence.get("target"), dict):
        trail.target = evidence["target"]
    if kind == "rollback" and isinstance(evidence.get("to"), str):
        trail.rolled_back_to.append(evidence["to"])
    if kind == "provenance" and outcome == "verified":
        trail.provenance = "sigstore"
    if kind == "build" and evidence.get("provenance"):
        trail.provenance = trail.provenance or "signoff-build"
    if kind in ("release_outcome", "runbook_outcome") or (trail.kind == "agent" and outcome in ("suspended", "active", "refused")):
        trail.outcome, trail.ended_at = outcome, at


def attach_verification(found: dict[str, Trail], store: Any, public_key: Any) -> None:
    """Verify the whole log once; each problem goes to the trail whose record it names, and a
    problem no trail owns (a broken chain between records) goes to every trail after it."""
    report = verify(store, public_key)
    owner = {i: t for t in found.values() for i in t.indexes}
    for problem in report.problems:
        index = getattr(problem, "index", None)
        if isinstance(index, int) and index in owner:
            owner[index].problems.append(str(problem))
        else:
            for trail in found.values():
                if not isinstance(index, int) or any(i >= index for i in trail.indexes):
                    trail.problems.append(f"the log itself: {problem}")


def trace(store: Any, public_key: Any, query: TraceQuery) -> list[dict[str, Any]]:
    """The releases, runbook runs and agent decisions that match, each with its verification."""
    found = trails(store.entries())
    attach_verification(found, store, public_key)
    return [t.to_dict() for t in found.values() if query.matches(t)]


def last_good(store: Any, public_key: Any, service: str) -> dict[str, Any]:
    """The digest of the service's last release that succeeded with verified provenance (its
    Sigstore bundle verified, or built by signoff with signed provenance) and verified records."""
    found = trails(store.entries())
    attach_verification(found, store, public_key)
    good = [
        t for t in found.values()
        if t.kind == "release" and t.service == service and t.outcome == "succeeded" and t.provenance and not t.problems and t.subject_digest
    ]
    if not good:
        raise NotFound(f"no release of {service} succeeded with verified provenance and intact records; there is no last good digest to roll back to.")
    best = max(good, key=lambda t: t.ended_at or "")
    return {"service": service, "digest": best.subject_digest, "release_id": best.workflow_id, "at": best.ended_at, "provenance": best.provenance}


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
