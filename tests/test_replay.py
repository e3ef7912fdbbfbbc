"""Saved histories of real runs replay against the current workflow code.

A workflow change that would make Temporal fail releases already in flight (a reordered
activity, a removed timer, a new command before an old one) shows up here as a
nondeterminism error instead of in production. The histories are produced by real runs:
regenerate them with `python tests/make_histories.py` (see its docstring for when).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from signoff.converter import data_converter
from temporalio.worker import Replayer

from workers.registry import all_workflows
from workers.worker import SANDBOX_MODES, workflow_runner

with workflow.unsafe.imports_passed_through():
    from signoff.models import PolicyDecision, PolicyRequest, ReleaseStatus, StartRelease

HISTORIES = Path(__file__).resolve().parent / "histories"
FILES = sorted(HISTORIES.rglob("*.json"))  # v1/ .. v5/: histories from before later patches (v2: before proofs; v3: before freezes-memo and lean-release-history; v4: before the baseline marker; v5: baseline release-2026-12, before slack-edit-decided-in-turn), kept for compatibility

#: The end each saved run reached, from its file name (the workflow id make_histories.py used).
EXPECTED_END = {
    "release-succeeded": "succeeded",
    "release-gated-approved": "succeeded",
    "release-gated-batched": "succeeded",
    "release-denied": "denied",
    "release-start-refused": "denied",
    "release-failed-build": "failed",
    "release-aborted-during-build": "aborted",
    "release-rolled-back": "rolled_back",
    "runbook-refused": "refused",
    "runbook-restart": "succeeded",
    "release-stopped-by-suspension": "aborted",
    "release-build-timed-out": "failed",
    "agent-suspended": "suspended",  # AgentControlResult.status
    "release-waiting-for-window": "succeeded",
    "release-background-analysis": "succeeded",  # its background analysis ran in a child (patch analysis-child-workflows)
    "analysis-continued": "successful",  # that child's last run (AnalysisOutcome.phase), continued with carried counters
}
#: Histories whose result has no phase or status: the end they must show instead.
EXPECTED_FINDINGS = {"drift-detected": ["detected"]}
EXPECTED_REAPED = {"reaper-run": ["nothing_serving"]}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def final_result(history: WorkflowHistory) -> dict[str, Any]:
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, "a saved history must be a finished run"
    payloads = list(last.workflow_execution_completed_event_attributes.result.payloads)
    [result] = data_converter.payload_converter.from_payloads(payloads, [dict])
    return result


def test_histories_exist_for_every_workflow_type() -> None:
    assert FILES, f"no saved histories in {HISTORIES}; run `python tests/make_histories.py`"
    types = Counter(workflow_type(load(p)) for p in FILES)
    registered = {w.__temporal_workflow_definition.name for w in all_workflows()}  # type: ignore[attr-defined]
    missing = registered - set(types)
    assert not missing, f"no saved history for {sorted(missing)}; run `python tests/make_histories.py`"
    assert types["ReleaseWorkflow"] >= 4  # succeeded, gated, denied, failed (and more)


@pytest.mark.parametrize("mode", SANDBOX_MODES)
@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(HISTORIES).with_suffix("")) for p in FILES])
async def test_saved_history_replays_without_nondeterminism(path: Path, mode: str) -> None:
    """Every saved history replays on what the worker runs (`shared`) and under the SDK's strict
    sandbox, which fails the replay on any forbidden call in the workflow code it executes."""
    history = load(path)
    result = final_result(history)
    if path.stem in EXPECTED_END:
        assert result.get("phase", result.get("status")) == EXPECTED_END[path.stem], result.get("reason")
    if path.stem in EXPECTED_FINDINGS:
        assert [f["status"] for f in result["findings"]] == EXPECTED_FINDINGS[path.stem]
    if path.stem in EXPECTED_REAPED:
        assert [r["outcome"] for r in result["reaped"]] == EXPECTED_REAPED[path.stem]
    replayer = Replayer(workflows=all_workflows(), data_converter=data_converter, workflow_runner=workflow_runner(mode))
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None, f"{path.name} no longer replays: {replay.replay_failure!r}"


@workflow.defn(name="ReleaseWorkflow", sandboxed=False)
class ReleaseWorkflowThatSkipsTheBuild:
    """A deliberately incompatible plan (asks the policy first): replay must refuse it."""

    @workflow.run
    async def run(self, args: StartRelease) -> ReleaseStatus:
        await workflow.execute_activity(
            "evaluate_policy", PolicyRequest(input={}), start_to_close_timeout=timedelta(seconds=5), result_type=PolicyDecision
        )
        return ReleaseStatus(release_id=args.release_id, service=args.spec.service, requested_by=args.spec.requested_by)


async def test_an_incompatible_change_is_caught() -> None:
    """The replayer really compares commands: a reordered plan fails on a real history."""
    path = HISTORIES / "v1" / "release-failed-build.json"
    assert path.exists(), "run `python tests/make_histories.py`"
    replayer = Replayer(workflows=[ReleaseWorkflowThatSkipsTheBuild], data_converter=data_converter)
    replay = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert isinstance(replay.replay_failure, workflow.NondeterminismError), repr(replay.replay_failure)


def test_the_saved_analysis_run_was_continued_as_new_by_a_release_child() -> None:
    """analysis-continued is a later run of a release's AnalysisWorkflow: replaying it checks the
    path that starts from carried counters."""
    started = load(HISTORIES / "analysis-continued.json").events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id and started.parent_workflow_execution.workflow_id == "release-background-analysis"


def test_a_release_started_now_records_one_patch_marker_not_one_per_patch() -> None:
    """Each patch a run asks costs a marker and a TemporalChangeVersion upsert (a visibility
    write). A release started on this code records only the baseline, which implies the rest;
    the histories from before (v4/) asked each patch and still replay (above)."""
    import base64

    from workflows.release import RELEASE_BASELINE, RELEASE_BASELINE_BEFORE, RELEASE_PATCHES, RELEASE_PATCHES_BEFORE, SLACK_EDIT_IN_TURN

    def patches(path: Path) -> list[str]:
        out = []
        for event in json.loads(path.read_text())["events"]:
            marker = event.get("markerRecordedEventAttributes")
            if marker and marker["markerName"] == "core_patch":
                out.append(json.loads(base64.b64decode(marker["details"]["patch-data"]["payloads"][0]["data"]))["id"])
        return out

    now = patches(HISTORIES / "release-gated-batched.json")
    before = patches(HISTORIES / "v4" / "release-gated-batched.json")
    assert now == [RELEASE_BASELINE], now
    assert len(before) > 1 and set(before) <= RELEASE_PATCHES, before
    # The releases saved under the previous baseline still replay (above) with what it implied.
    previous = {p for path in (HISTORIES / "v5").glob("release-*.json") for p in patches(path)}
    assert previous == {RELEASE_BASELINE_BEFORE}, previous
    assert RELEASE_PATCHES - RELEASE_PATCHES_BEFORE == {SLACK_EDIT_IN_TURN}
