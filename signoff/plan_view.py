"""What an approver must see before deciding, as (label, text) rows: one renderer for the Slack
request, the Jira ticket and `signoff release status`, so every channel shows the same facts.

The rows are plain text; each channel escapes them its own way (Slack entities, Jira
{noformat}). Long values are cut and end with where to read them in full.
"""

from __future__ import annotations

from signoff.models import CanaryStep, PlanSummary, ReleaseStatus

#: Longest value shown per row; the full record is in `signoff release status ID --json`.
LIMIT = 300


def cut(text: str, full: str, limit: int = LIMIT) -> str:
    """`text`, or its start and where the rest is."""
    return text if len(text) <= limit else text[: limit - 1] + f"… (cut; full: {full})"


def canary_steps(steps: list[CanaryStep]) -> list[str]:
    """The canary plan as people read it: `weight 10%`, `pause 5m`, `analysis error-rate`."""
    out: list[str] = []
    for step in steps:
        if step.set_weight is not None:
            out.append(f"weight {step.set_weight}%")
        if step.pause is not None:
            out.append(f"pause {step.pause.duration}" if step.pause.duration else "pause until promoted")
        if step.analysis:
            out.append("analysis " + ", ".join(step.analysis))
    return out


def _settings(plan: PlanSummary) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted(plan.deploy_settings.items())) or "(none)"


def approval_rows(status: ReleaseStatus, *, full: str) -> list[tuple[str, str]]:
    """The facts of the approval request; `full` says where the untruncated record is."""
    rows: list[tuple[str, str]] = []
    policy = status.policy
    if policy is not None:
        rules = policy.reasons or ["(no rule fired)"]
        rows.append(("Risk tier and rules fired", cut(f"{policy.tier}: " + "; ".join(rules), full)))
    change = status.change
    if change is not None:
        paths = ", ".join(p.path for p in change.paths)
        rows.append(("Paths (from git)", cut(f"{len(change.paths)} path(s): {paths}", full)))
        rows.append(("Diff", f"{change.commits} commit(s), +{change.insertions} −{change.deletions}, by {', '.join(change.authors) or 'unknown'}"))
    if status.tests is not None:
        t = status.tests
        line = f"{t.passed} passed, {t.failed} failed, {t.skipped} skipped"
        line += f"; coverage {t.coverage:.1f}%" if t.coverage is not None else "; coverage not measured"
        line += f"; flaky: {', '.join(t.flaky)}" if t.flaky else "; no flaky tests"
        rows.append(("Tests", cut(line, full)))
    if status.scans:
        rows.append(("Scanners", cut("; ".join(f"{s.name}: {s.errors} error(s), {s.warnings} warning(s)" + (f" ({', '.join(sorted({f.rule for f in s.findings}))})" if s.findings else "") for s in status.scans), full)))
    if status.provenance is not None:
        p = status.provenance
        rows.append(("Provenance", ("verified" if p.verified else f"NOT verified ({p.reason})") + (f", signed by {p.identity} via {p.issuer}" if p.identity else "")))
    plan = status.plan
    if plan is not None:
        if plan.build_command:
            rows.append(("Build command", cut(plan.build_command, full)))
        if plan.test_command:
            rows.append(("Test command", cut(plan.test_command, full)))
        rows.append(("Deploy target", cut(f"{plan.deploy_target} ({_settings(plan)})", full)))
        rows.append(("Canary plan", cut(" → ".join(plan.canary) + f"; on failure: {plan.on_failure}" if plan.canary else "none: ships at 100% at once", full)))
        rows.append(("Rollback target", plan.rollback_target or "none (nothing serves yet; a rollback sets weight 0)"))
    if status.plan_sha256:
        rows.append(("Plan hash (your approval binds it)", status.plan_sha256))
    return rows
