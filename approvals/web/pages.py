"""What each page shows, gathered from Temporal (status, the release's own input) and the signed
audit log (decision records and whether each verifies). No HTML here: see templates/."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from approvals.web.chart import Threshold, measurement_chart, thresholds_of
from signoff import audit
from signoff.client import RUNBOOK_WORKFLOW, SignoffClient
from signoff.config import Settings
from signoff.errors import NotFound, SignoffError, TemporalUnreachable
from signoff.models import Measurement, Phase, ReleaseFile, ReleaseStatus, RunbookStatus, StartRelease
from signoff.search_attributes import REQUESTER

FILTERS = ("phase", "service", "agent", "awaiting")


@dataclass
class Chart:
    metric: str
    svg: str
    thresholds: list[Threshold]
    measurements: list[Measurement]


@dataclass
class Records:
    """A workflow's decision records, each with its verification status."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verified: bool = False
    note: str = ""


async def release_list(client: SignoffClient, filters: dict[str, str]) -> list[ReleaseStatus]:
    """Releases matching the filters, newest first; phase and awaiting go to Temporal's
    visibility query, service and agent are matched here (they are not search attributes)."""
    releases = await client.list_releases(phase=filters.get("phase") or None, awaiting=filters.get("awaiting") or None)
    if filters.get("phase"):
        # visibility is eventually consistent: a release that moved on since its search attribute
        # was indexed is shown in the phase it is in now, so the filter checks that phase too
        releases = [r for r in releases if r.phase.value == filters["phase"]]
    if filters.get("service"):
        releases = [r for r in releases if r.service == filters["service"]]
    if filters.get("agent"):
        releases = [r for r in releases if r.agent is not None and r.agent.id == filters["agent"]]
    return sorted(releases, key=lambda r: (r.started_at.isoformat() if r.started_at else "", r.release_id), reverse=True)


async def release_spec(client: Client, release_id: str) -> ReleaseFile | None:
    """The release file as the workflow received it (its first history event), for the canary's
    thresholds and weight steps; None once the history is past retention."""
    converter = client.data_converter.payload_converter
    try:
        async for event in client.get_workflow_handle(release_id).fetch_history_events():
            payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
            [start] = converter.from_payloads(payloads, [StartRelease])
            return start.spec if isinstance(start, StartRelease) else None
    except (RPCError, ValueError, TypeError):
        return None
    return None


def canary_charts(status: ReleaseStatus, spec: ReleaseFile | None) -> list[Chart]:
    """One chart per analysis, every measurement in the order it was taken."""
    if status.canary is None:
        return []
    analyses = spec.canary.analyses if spec is not None and spec.canary is not None else {}
    by_metric: dict[str, list[Measurement]] = {}
    for m in status.canary.analyses:
        by_metric.setdefault(m.metric, []).append(m)
    charts = []
    for metric, measurements in by_metric.items():
        thresholds = thresholds_of(analyses.get(metric))
        charts.append(Chart(metric, measurement_chart(metric, measurements, thresholds), thresholds, measurements))
    return charts


def weight_steps(spec: ReleaseFile | None, records: Records) -> dict[str, list[dict[str, Any]]]:
    """The planned steps (from the release file) and the weights actually deployed (records)."""
    planned = []
    if spec is not None and spec.canary is not None:
        for number, step in enumerate(spec.canary.steps, start=1):
            if step.set_weight is not None:
                planned.append({"step": number, "what": f"set weight {step.set_weight}%"})
            elif step.analysis:
                planned.append({"step": number, "what": "analysis " + ", ".join(step.analysis)})
            elif step.pause is not None:
                planned.append({"step": number, "what": f"pause {step.pause.duration or 'until a person promotes'}"})
    deployed = [
        {"when": r["when"], "weight": (r["evidence"] or {}).get("weight"), "by": r["who"]}
        for r in records.rows
        if r["kind"] == "deploy"
    ]
    return {"planned": planned, "deployed": deployed}


def read_records(settings: Settings, workflow_id: str) -> Records:
    """The workflow's rows from the audit log, and `audit verify`'s verdict on each."""
    store = audit.store_from_settings(settings)
    try:
        rows = audit.show(workflow_id, store)
    except NotFound as e:
        return Records(note=str(e))
    records = Records(rows=rows)
    try:
        report = audit.verify(
            store, audit.view_trust(settings), workflow_id=workflow_id, checkpoints=audit.checkpoint_store_from_settings(settings).all()
        )
    except SignoffError as e:
        records.note = f"not verified: {e}"
        for row in rows:
            row["verification"] = "not verified"
        return records
    by_index: dict[int, list[str]] = {}
    for problem in report.problems:
        index = getattr(problem, "index", None)  # problems about the whole log or workflow name no entry
        if index is None:
            records.problems.append(str(problem))
        else:
            by_index.setdefault(index, []).append(str(problem))
    for row in rows:
        row["problems"] = by_index.pop(row["index"], [])
        row["verification"] = "verified" if not row["problems"] else "FAILED"
    records.problems += [p for elsewhere in by_index.values() for p in elsewhere]  # other workflows' entries break the chain too
    records.verified = report.ok
    return records


async def release_page(client: SignoffClient, settings: Settings, release_id: str) -> dict[str, Any]:
    """Everything the release page shows. A release Temporal no longer holds (past retention) is
    shown from its signed records alone; NotFound only when neither knows it."""
    records = await asyncio.to_thread(read_records, settings, release_id)
    try:
        status, spec = await asyncio.gather(client.status(release_id), release_spec(client.client, release_id))
    except NotFound:
        if not records.rows:
            raise
        status, spec = status_from_records(release_id, records), None
    return {
        "r": status,
        "spec": spec,
        "charts": canary_charts(status, spec),
        "steps": weight_steps(spec, records),
        "records": records,
        "signatures": signatures_by_person(records),
    }


def status_from_records(release_id: str, records: Records) -> ReleaseStatus:
    """What the signed records alone say of a release whose Temporal history is gone."""
    first = records.rows[0]
    outcome = next((r["outcome"] for r in reversed(records.rows) if r["kind"] == "release_outcome"), None)
    started = next((r for r in records.rows if r["kind"] == "start"), first)
    status = ReleaseStatus(
        release_id=release_id,
        service=str(first.get("subject") or "?").split("@", 1)[0],  # records name their subject service@release
        environment="unknown",
        requested_by=str(started["who"]),
        reason="Temporal no longer holds this release (past its retention); what is shown comes from its signed decision records only.",
        history=[{"phase": r["outcome"], "at": r["when"]} for r in records.rows if r["kind"] == "release_outcome"],
    )
    if outcome in {p.value for p in Phase}:
        status.phase = Phase(outcome)
    return status


def signatures_by_person(records: Records) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(gate, person, decision) → the approval attempt's decision record and its verification,
    so each approval on the page links to the signed record that holds its proof."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in records.rows:
        attempt = (row.get("evidence") or {}).get("attempt")
        if row["kind"] != "approval_attempt" or not isinstance(attempt, dict):
            continue
        key = (str(attempt.get("gate") or ""), str(attempt.get("identity") or "").lower(), str(attempt.get("decision") or "approve"))
        found[key] = {"record": row["index"], "sequence": row["sequence"], "outcome": row["outcome"], "verification": row.get("verification")}
    return found


async def runbook_list(client: SignoffClient, *, limit: int = 200) -> list[RunbookStatus]:
    """Runbook runs from Temporal's visibility store (by workflow type: a remediation started by a
    release carries no SignoffKind), each status read with a time bound; a run
    whose worker does not answer is listed from its search attributes rather than left out."""
    try:
        found = [wf async for wf in client.client.list_workflows(f"WorkflowType = '{RUNBOOK_WORKFLOW}'", limit=limit)]
    except RPCError as e:
        raise TemporalUnreachable(f"Temporal did not list the runbook runs ({e.message}); check that it is reachable and try again.") from e

    async def one(wf: Any) -> RunbookStatus:
        try:
            return await asyncio.wait_for(client.runbooks.status(wf.id), timeout=3.0)
        except (asyncio.TimeoutError, SignoffError):
            attrs = wf.typed_search_attributes
            return RunbookStatus(
                run_id=wf.id, runbook="?", requested_by=attrs.get(REQUESTER) or "?", reason="status unavailable: no worker answered in time"
            )

    return list(await asyncio.gather(*(one(wf) for wf in found)))


async def runbook_page(client: SignoffClient, settings: Settings, run_id: str) -> dict[str, Any]:
    status = await client.runbooks.status(run_id)
    records = await asyncio.to_thread(read_records, settings, status.workflow_id or run_id)
    charts = [
        Chart(f"{c.stage}: {c.name}", measurement_chart(c.name, c.measurements, []), [], c.measurements) for c in status.checks if c.measurements
    ]
    return {"run": status, "records": records, "charts": charts}
