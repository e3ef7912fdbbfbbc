"""The reaper: releases that ended without saying how.

A release always records its outcome (`release_outcome`) — unless Temporal ended it from the
outside: terminated by an operator, timed out, failed on a history limit. Then nothing rolled
back a canary it left serving and nothing says what happened. `reap_releases` finds those
releases in visibility (closed as Terminated, TimedOut, Failed or Canceled within the lookback),
skips the ones whose outcome is in the signed log, and for each of the others:

* reads what it was shipping from its start input in the history and from its signed records;
* asks its deploy target what serves now; if the release's digest still takes canary traffic,
  rolls the service back to the stable digest (weight 0 for the new one);
* appends a signed `release_reaped` record as the release's next decision (so its sequence
  stays contiguous and `audit verify` finds its outcome), naming the reaper's run.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio import activity
from temporalio.client import Client
from signoff.converter import data_converter

from signoff.audit import OUTCOME_KINDS, append_record, signer_from_settings, statement_of, store_from_settings
from signoff.config import Settings
from signoff.models import DecisionInput, StartRelease

log = logging.getLogger(__name__)

REAPED_KIND = "release_reaped"
UNENDED_STATUSES = ("Terminated", "TimedOut", "Failed", "Canceled")


class ReaperActivities:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self._client = client

    async def client(self) -> Client:
        """The worker's own client inside an activity; a connection from settings otherwise."""
        if self._client is None and activity.in_activity():
            return activity.client()
        if self._client is None:
            from signoff.client import connect_temporal

            self._client = await connect_temporal(self.settings)
        return self._client

    @activity.defn(name="reap_releases")
    async def reap_releases(self, lookback_hours: float) -> list[dict[str, Any]]:
        """Find, roll back and record every release that ended without an outcome record."""
        client = await self.client()
        since = (datetime.now(timezone.utc) - timedelta(hours=lookback_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses = " OR ".join(f"ExecutionStatus = '{s}'" for s in UNENDED_STATUSES)
        query = f"WorkflowType = 'ReleaseWorkflow' AND CloseTime > '{since}' AND ({statuses})"
        closed = [(wf.id, wf.run_id, wf.status.name if wf.status else "?") async for wf in client.list_workflows(query)]
        if not closed:
            return []
        store = store_from_settings(self.settings)
        entries = await asyncio.to_thread(store.entries)
        ended = {e.get("workflow_id") for e in entries if e.get("kind") in OUTCOME_KINDS | {REAPED_KIND}}
        reaped = []
        for workflow_id, run_id, status in closed:
            if workflow_id in ended:
                continue
            mine = [e for e in entries if e.get("workflow_id") == workflow_id and isinstance(e.get("sequence"), int)]
            reaped.append(await self.reap(client, store, workflow_id, run_id, status, mine))
        return reaped

    async def reap(self, client: Client, store: Any, workflow_id: str, run_id: str, status: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        from activities.deploy import target_for

        start = await self.start_input(client, workflow_id, run_id)
        spec = start.spec
        digest = self.shipping(records) or spec.artifact
        target = target_for(self.settings, spec.deploy)
        before = await asyncio.to_thread(target.current, spec.service)
        outcome, after = "nothing_serving", before
        if digest and before.canary == digest and before.stable and before.stable != digest:
            after = await asyncio.to_thread(target.rollback, spec.service, before.stable, release_id=workflow_id)
            outcome = "rolled_back"
        elif digest and before.stable == digest:
            outcome = "left_serving"  # it had been promoted: it is the stable digest now
        shown = f"{digest[:19]}…" if digest else "its build"
        if outcome == "rolled_back":
            reason = f"{workflow_id} ended {status.lower()} mid-canary with {shown} serving; rolled back to {str(before.stable)[:19]}…"
        elif outcome == "left_serving":
            reason = f"{workflow_id} ended {status.lower()} after {shown} became stable; nothing to roll back"
        else:
            reason = f"{workflow_id} ended {status.lower()} before {shown} took traffic; nothing to roll back"
        info = activity.info() if activity.in_activity() else None
        decision = DecisionInput(
            kind=REAPED_KIND,
            outcome=outcome,
            subject_name=spec.service,
            subject_digest=digest or "sha256:" + "0" * 64,
            reasons=[reason],
            actor={"orchestrator": "signoff", "reaper": info.workflow_id if info else "reaper"},
            evidence={
                "status": status,
                "reaper_run": info.workflow_run_id if info else None,
                "before": before.model_dump(mode="json"),
                "after": after.model_dump(mode="json"),
                "target": spec.deploy.model_dump(mode="json"),
            },
            workflow_id=workflow_id,
            run_id=run_id,
            at=datetime.now(timezone.utc),
            sequence=max((e["sequence"] for e in records), default=0) + 1,
        )
        entry = await asyncio.to_thread(append_record, store, decision, signer_from_settings(self.settings))
        log.warning("reaped %s: %s", workflow_id, reason)
        return {"release_id": workflow_id, "status": status, "outcome": outcome, "reason": reason, "entry": entry["index"]}

    @staticmethod
    async def start_input(client: Client, workflow_id: str, run_id: str) -> StartRelease:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [args] = data_converter.payload_converter.from_payloads(list(started.input.payloads), [StartRelease])
        return args

    @staticmethod
    def shipping(records: list[dict[str, Any]]) -> str | None:
        """The digest the release's last deploy record put out (the signed log's word for it)."""
        for entry in reversed(records):
            if entry.get("kind") != "deploy":
                continue
            subject = (statement_of(entry["envelope"]).get("subject") or [{}])[0]
            sha = (subject.get("digest") or {}).get("sha256")
            if sha:
                return f"sha256:{sha}"
        return None


def activities_from_settings(settings: Settings) -> list:
    return [ReaperActivities(settings).reap_releases]
