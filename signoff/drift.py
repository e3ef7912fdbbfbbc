"""Drift: what a target serves versus what signoff last shipped there, as the signed log says.

Pure functions over trails (signoff/trace.py) and the log's drift records, so the scheduled
check (activities/drift.py, workflows/drift.py) and its tests share one definition of "expected"
and of "already reported". A drift is open from its `detected` record until a `cleared` one.
"""

from __future__ import annotations

from typing import Any, Iterable

from signoff.audit import statement_of
from signoff.trace import Trail

DRIFT_SUBJECT = "drift:"


def expected_serving(trails: Iterable[Trail]) -> dict[str, dict[str, Any]]:
    """Per service, the digest its last finished release left serving, and where.

    A release that succeeded leaves its digest; one that rolled back (or was aborted in canary)
    leaves the digest it rolled back to. Releases that never deployed say nothing."""
    out: dict[str, dict[str, Any]] = {}
    finished = [t for t in trails if t.kind == "release" and t.service and t.target and t.ended_at]
    for trail in sorted(finished, key=lambda t: t.ended_at or ""):
        if trail.outcome == "succeeded" and trail.subject_digest:
            digest = trail.subject_digest
        elif trail.rolled_back_to:
            digest = trail.rolled_back_to[-1]
        else:
            continue
        out[str(trail.service)] = {"digest": digest, "release_id": trail.workflow_id, "target": trail.target}
    return out


def open_drifts(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per service, the drift reported and not cleared yet (its expected and serving digests)."""
    state: dict[str, dict[str, Any]] = {}
    for entry in entries:
        try:
            statement = statement_of(entry["envelope"])
        except (KeyError, TypeError, ValueError):
            continue
        name = str(((statement.get("subject") or [{}])[0]).get("name") or "")
        predicate = statement.get("predicate") or {}
        if not name.startswith(DRIFT_SUBJECT) or predicate.get("kind") != "drift":
            continue
        service = name.removeprefix(DRIFT_SUBJECT)
        if predicate.get("outcome") == "detected":
            state[service] = dict(predicate.get("evidence") or {})
        elif predicate.get("outcome") == "cleared":
            state.pop(service, None)
    return state


def judge(service: str, expected: dict[str, Any], serving: str | None, already: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the check reports for one service: a new drift, one that cleared, or nothing (in
    line, or a drift already reported for the same digests)."""
    finding = {"service": service, "expected": expected["digest"], "serving": serving, "release_id": expected["release_id"]}
    if serving == expected["digest"]:
        return {**finding, "status": "cleared"} if already else None
    if already and already.get("serving") == serving and already.get("expected") == expected["digest"]:
        return None
    return {**finding, "status": "detected"}
