"""The policy input document (policies/README.md), built from what the workflow knows.

The workflow calls `build_policy_input` in workflow code, so it is a pure, deterministic
function: no I/O, no clock (the caller passes `now`, i.e. `workflow.now()`), and no imports
beyond signoff.models and the standard library.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from signoff.models import ChangeFacts, ProvenanceResult, ReleaseFile, SbomResult, ScanResult, TestSummary, WindowState

INPUT_VERSION = 1


def normalize_path(path: str) -> str:
    """Paths as the policy matches them: forward slashes, no leading "./" or "/"."""
    p = path.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.lstrip("/")


def _iso_utc(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _coverage_threshold(spec: ReleaseFile, configured: Any) -> float | None:
    """The stricter of the organisation's threshold and the release file's own `test.coverage`.

    A release file may raise the bar for itself but never lower the organisation's.
    """
    candidates = [c for c in (configured, spec.test.coverage if spec.test else None) if isinstance(c, (int, float))]
    return float(max(candidates)) if candidates else None


def _change(spec: ReleaseFile, change: ChangeFacts | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": spec.change.summary, "commit": spec.change.commit}
    if change is not None:
        doc.update(
            commit=change.commit,
            base=change.base,
            authors=list(change.authors),
            committers=list(change.committers),
            signed=change.signed,
            commits=change.commits,
            insertions=change.insertions,
            deletions=change.deletions,
            statuses={normalize_path(p.path): p.status for p in change.paths},
        )
    return doc


def _findings(scans: list[ScanResult]) -> dict[str, Any]:
    """Severity counts and rule ids across every scanner's SARIF (see policies/README.md)."""
    rules = [
        {"scan": s.name, "rule": f.rule, "level": f.level, "location": f.location}
        for s in scans
        for f in s.findings
        if f.level in ("error", "warning")
    ]
    return {
        "scans": [s.name for s in scans],
        "errors": sum(s.errors for s in scans),
        "warnings": sum(s.warnings for s in scans),
        "notes": sum(s.notes for s in scans),
        "rules": rules[:200],
    }


def _agent(ident: str, model: str | None, prompt_sha256: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": ident, "model": model, "prompt_sha256": prompt_sha256}
    if usage is not None:
        doc["budgets"] = dict(usage.get("budgets") or {})
        doc["usage"] = {k: v for k, v in usage.items() if k != "budgets"}
    return doc


def build_policy_input(
    spec: ReleaseFile,
    *,
    digest: str | None,
    tests: TestSummary | None,
    provenance: ProvenanceResult | None,
    now: datetime,
    config: dict[str, Any] | None = None,
    sandbox: dict[str, str] | None = None,
    change: ChangeFacts | None = None,
    scans: list[ScanResult] | None = None,
    sbom: SbomResult | None = None,
    usage: dict[str, Any] | None = None,
    window: WindowState | None = None,
) -> dict[str, Any]:
    """The facts about one release that the policy decides on (see policies/README.md).

    `tests` / `provenance` are None when the release has no test step / provenance block (or
    they have not run yet); the policy then treats them as absent, not as passed. `usage` (the
    worker's count of what the agent used today, with its registry budgets) is given only when
    the release is decided; without it no budget is judged.
    """
    merged_config: dict[str, Any] = dict(config or {})
    threshold = _coverage_threshold(spec, merged_config.get("coverage_threshold"))
    if threshold is None:
        # Absent, not null: a null here would replace the organisation's threshold in the policy.
        merged_config.pop("coverage_threshold", None)
    else:
        merged_config["coverage_threshold"] = threshold
    agent = spec.agent
    doc: dict[str, Any] = {
        "version": INPUT_VERSION,
        "service": spec.service,
        "environment": spec.environment.strip().lower(),
        "requester": spec.requested_by,
        "agent": None if agent is None else _agent(agent.id, agent.model, agent.prompt_sha256, usage),
        "co_requesters": list(spec.change.co_requested_by),
        "change": _change(spec, change),
        # Derived from Git when the release names its repository; otherwise what the file declares.
        "paths": [normalize_path(p.path) for p in change.paths] if change else [normalize_path(p) for p in spec.change.paths],
        "declared_paths": [normalize_path(p) for p in spec.change.paths],
        "paths_source": "git" if change else "declared",
        "tests": None
        if tests is None
        else {
            "passed": tests.passed,
            "failed": tests.failed,
            "skipped": tests.skipped,
            "errors": tests.errors,
            "coverage": tests.coverage,
            "flaky": list(tests.flaky),
        },
        "provenance": None
        if provenance is None
        else {
            "verified": provenance.verified,
            "reason": provenance.reason,
            "identity": provenance.identity,
            "issuer": provenance.issuer,
        },
        "artifact_digest": digest,
        "built_by_signoff": spec.build is not None,
        "findings": _findings(scans or []),
        "sbom": None
        if sbom is None
        else {
            "sha256": sbom.sha256,
            "components": [{"name": c.name, "version": c.version, "licenses": list(c.licenses), "supplier": c.supplier} for c in sbom.components[:500]],
        },
        "sandbox": dict(sandbox or {}),
        "time": _iso_utc(now),
        "config": merged_config,
    }
    if window is not None:
        # Deploy windows and freezes as of the decision (absent when the worker predates them).
        doc["window"] = {
            "open": window.open,
            "reasons": list(window.reasons),
            "windows": list(window.windows),
            "freezes": list(window.freezes),
            "next_open": _iso_utc(window.next_open) if window.next_open else None,
        }
    return doc
