"""Long analyses as AnalysisWorkflow children that continue-as-new, and keep their verdicts.

A background analysis used to measure inside the release's own history (about ten events per
measurement), so a canary left running for hours hit Temporal's history limit and was terminated
mid-canary. These tests force the child's continue-as-new with a small `continue_every` (the
time-skipping server) or with Temporal's own suggestion (a dev server whose suggestion threshold is
lowered), and check that counters carried across runs still decide the canary.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from signoff.models import AnalysisRequest, AnalysisSpec, StartAnalysis
from tests.helpers import release_spec, running_worker, start_dev_server, wait_for
from tests.test_canary_runner import CanaryHarness, ScriptedAnalysis, analysis, canary, start, until, worker


async def children_of(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """(workflow id, first run id) of every child the workflow started."""
    found: list[tuple[str, str]] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            execution = event.child_workflow_execution_started_event_attributes.workflow_execution
            found.append((execution.workflow_id, execution.run_id))
    return found


async def run_chain(client: Client, workflow_id: str, first_run_id: str) -> list[WorkflowExecutionStatus | None]:
    """The status of each run of a child, following continue-as-new from its first run."""
    statuses: list[WorkflowExecutionStatus | None] = []
    run_id: str | None = first_run_id
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        statuses.append((await handle.describe()).status)
        run_id = None
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                run_id = event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return statuses


async def event_count(handle: WorkflowHandle[Any, Any]) -> int:
    return len((await handle.fetch_history()).events)


def background(**kw: Any) -> Any:
    """A canary whose 2 h pause is watched by an open-ended background analysis."""
    return canary(
        steps=[{"set_weight": 10}, {"pause": {"duration": "PT2H"}}, {"set_weight": 50}],
        analyses={"availability": analysis(count=0, **kw)},
        background=["availability"],
        inconclusive_deadline="PT5M",
    )


async def test_failure_limit_reached_across_continue_as_new_rolls_the_canary_back(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    """failure_limit 2, three runs of two measurements: the third failure is in the last run."""
    spec = background(interval="PT1M", failure_limit=2)
    script = [("successful", 0.0), ("failed", 0.3), ("successful", 0.0), ("failed", 0.4), ("successful", 0.0), ("failed", 0.5)]
    async with worker(skip_env, task_queue, ScriptedAnalysis({"availability": script})):
        handle = await start(skip_env, task_queue, spec, children=True, analysis_options={"continue_every": 2})
        view = await handle.result()
        [(child_id, first_run)] = await children_of(handle)
        chain = await run_chain(skip_env.client, child_id, first_run)
    assert view.outcome is not None and view.outcome.result == "failed", view.outcome
    assert view.outcome.analysis == "availability" and "3 failed measurements, more than failure_limit 2" in view.outcome.reason
    assert "0.5" in view.outcome.reason  # the last measurement, taken in the third run
    assert view.deploys == [10]  # the 2 h pause was cut short
    assert chain == [WorkflowExecutionStatus.CONTINUED_AS_NEW] * 2 + [WorkflowExecutionStatus.COMPLETED]
    assert [m.verdict for m in view.status.analyses] == [v for v, _ in script]  # every measurement reached the status
    assert child_id.startswith("rel-test-analysis-availability-background-")


async def test_measurement_errors_carried_across_runs_reach_the_consecutive_error_limit(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = background(interval="PT1M", consecutive_error_limit=2)
    async with worker(skip_env, task_queue, ScriptedAnalysis({"availability": [("successful", 0.0), ("raise", None)]})):
        handle = await start(skip_env, task_queue, spec, children=True, analysis_options={"continue_every": 2})
        view = await handle.result()
        [(child_id, first_run)] = await children_of(handle)
        chain = await run_chain(skip_env.client, child_id, first_run)
    assert view.outcome is not None and view.outcome.result == "failed"
    assert "3 consecutive measurement errors, more than consecutive_error_limit 2" in view.outcome.reason
    assert "the Prometheus client blew up" in view.outcome.reason
    assert [m.verdict for m in view.status.analyses] == ["successful", "error", "error", "error"]
    assert len(chain) == 2 and chain[0] == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_successful_background_over_many_runs_is_promoted_with_a_short_release_history(
    skip_env: WorkflowEnvironment, task_queue: str
) -> None:
    """60 measurements over 3 runs: promoted, measurements in the status, and the canary's own
    history a fraction of what the same canary measured in-workflow produces."""
    spec = canary(
        steps=[{"set_weight": 10}, {"pause": {"duration": "PT10M"}}, {"set_weight": 50}],
        analyses={"availability": analysis(count=0, interval="PT10S")},
        background=["availability"],
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"availability": [("successful", 0.01)]})):
        handle = await start(skip_env, task_queue, spec, children=True, analysis_options={"continue_every": 20})
        view = await handle.result()
        [(child_id, first_run)] = await children_of(handle)
        chain = await run_chain(skip_env.client, child_id, first_run)
        outcome = await skip_env.client.get_workflow_handle(child_id).result()
        in_child = await event_count(handle)
        old = await start(skip_env, task_queue, spec)  # the same canary, measured in its own history
        old_view = await old.result()
        in_workflow = await event_count(old)
    assert view.outcome is not None and view.outcome.result == "promoted", view.outcome
    assert view.deploys == [10, 50] and old_view.outcome is not None and old_view.outcome.result == "promoted"
    assert outcome["stopped"] and outcome["phase"] == "successful" and outcome["measured_total"] >= 59
    assert len(chain) >= 3 and chain[-1] == WorkflowExecutionStatus.COMPLETED
    assert set(chain[:-1]) == {WorkflowExecutionStatus.CONTINUED_AS_NEW}
    shown = view.status.analyses
    assert len(shown) + view.status.analyses_dropped == outcome["measured_total"]  # batched, none lost from the count
    assert shown and {m.verdict for m in shown} == {"successful"} and {m.step for m in shown} <= {1, 2}
    assert in_workflow >= 10 * 59  # about ten events per measurement in the release's own history
    assert in_child < in_workflow / 5, (in_child, in_workflow)


async def test_abort_stops_the_child(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """On the real dev server (on the time-skipping server this run left the server unable to
    skip time for the tests after it). The abort asks the child to cancel; when the canary ends
    first, the parent close policy terminates it: either way nothing measures on."""
    spec = background(interval="PT1S")
    async with worker(dev_env, task_queue, ScriptedAnalysis({"availability": [("successful", 0.0)]})):
        handle = await start(dev_env, task_queue, spec, children=True)
        await until(dev_env, handle, lambda v: len(v.status.analyses) >= 1, step=timedelta(seconds=0.2))
        await handle.signal(CanaryHarness.abort_canary)
        view = await handle.result()
        [(child, _)] = await children_of(handle)
        child_handle = dev_env.client.get_workflow_handle(child)
        for _ in range(100):
            if (await child_handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        status = (await child_handle.describe()).status
    assert view.outcome is not None and view.outcome.result == "aborted"
    assert status in (WorkflowExecutionStatus.CANCELED, WorkflowExecutionStatus.TERMINATED), status


async def test_terminating_the_release_terminates_the_child(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """On the real dev server (the time-skipping server does not apply parent close policies)."""
    spec = background(interval="PT1S")
    async with worker(dev_env, task_queue, ScriptedAnalysis({"availability": [("successful", 0.0)]})):
        handle = await start(dev_env, task_queue, spec, children=True)
        await until(dev_env, handle, lambda v: len(v.status.analyses) >= 1, step=timedelta(seconds=0.2))
        [(child, _)] = await children_of(handle)
        await handle.terminate(reason="operator pulled the plug")
        child_handle = dev_env.client.get_workflow_handle(child)
        for _ in range(100):
            if (await child_handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        assert (await child_handle.describe()).status == WorkflowExecutionStatus.TERMINATED


async def test_an_analysis_workflow_started_by_hand_is_refused(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    """Not a release's child: nothing is measured, and no report goes anywhere."""
    from temporalio.client import WorkflowFailureError

    fake = ScriptedAnalysis({"availability": [("successful", 0.0)]})
    request = AnalysisRequest(release_id="rel-x", name="availability", spec=AnalysisSpec.model_validate(analysis(count=0)), service="checkout", digest="sha256:" + "a" * 64)
    async with worker(skip_env, task_queue, fake):
        with pytest.raises(WorkflowFailureError) as raised:
            await skip_env.client.execute_workflow("AnalysisWorkflow", StartAnalysis(request=request), id=f"rogue-{uuid.uuid4().hex[:6]}", task_queue=task_queue)
    assert "only as the child" in str(raised.value.cause)
    assert fake.calls == []


# --------------------------------------------------------------------------- the real release

#: Temporal suggests continue-as-new after this many events (default 4 Ki): an analysis run
#: holds three or four measurements, so a 12 s canary spans several runs.
SUGGEST_AFTER = 40


@pytest_asyncio.fixture(scope="module")
async def suggesting_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that suggests continue-as-new early: the production trigger, forced."""
    env = await start_dev_server(extra_args=["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"])
    try:
        yield env
    finally:
        await env.shutdown()


def watched_release(**analysis_fields: Any) -> Any:
    return release_spec(
        canary={
            "steps": [{"set_weight": 20}, {"pause": {"duration": "12s"}}, {"set_weight": 50}],
            "analyses": {"availability": {"query": "up", "interval": "1s", "count": 0, "success": {"less_than": 0.05}, **analysis_fields}},
            "background": ["availability"],
        }
    )


async def test_a_release_background_analysis_continues_as_new_and_keeps_its_verdicts(suggesting_env: WorkflowEnvironment, task_queue: str) -> None:
    """The real ReleaseWorkflow: a background analysis over several runs is promoted with its
    measurements in the release status; one whose failures straddle the runs rolls back."""
    client = suggesting_env.client
    good = ScriptedAnalysis({"availability": [("successful", 0.01)]})
    async with running_worker(client, task_queue, replace=[good.run_analysis]) as sc:
        rid = f"bg-{uuid.uuid4().hex[:6]}"
        await sc.start_release(watched_release(), release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=90)
        handle = client.get_workflow_handle(rid)
        [(child, first_run)] = await children_of(handle)
        chain = await run_chain(client, child, first_run)
        events = [e async for e in handle.fetch_history_events()]
        kinds = [e.event_type for e in events]
        activities = {e.activity_task_scheduled_event_attributes.activity_type.name for e in events if e.HasField("activity_task_scheduled_event_attributes")}
    assert done.phase.value == "succeeded", done.reason
    assert len(chain) >= 3 and set(chain[:-1]) == {WorkflowExecutionStatus.CONTINUED_AS_NEW}, chain
    assert done.canary is not None and len(done.canary.analyses) >= 8
    assert {m.verdict for m in done.canary.analyses} == {"successful"} and {m.step for m in done.canary.analyses} <= {1, 2, 3}
    # The release's history holds no measurement, only a report per child run (the first
    # measurement, one before each continue-as-new, the last when the canary closed).
    assert "run_analysis" not in activities and "deploy" in activities, activities
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) <= len(chain) + 1 < len(good.calls)

    # failure_limit 2: failures 1, 2 and 3 fall in different runs of the child
    bad = ScriptedAnalysis({"availability": [("successful", 0.0), ("failed", 0.2), ("successful", 0.0), ("successful", 0.0), ("failed", 0.3), ("successful", 0.0), ("successful", 0.0), ("failed", 0.4), ("successful", 0.0)]})
    async with running_worker(client, task_queue, replace=[bad.run_analysis]) as sc:
        rid = f"bg-{uuid.uuid4().hex[:6]}"
        await sc.start_release(watched_release(failure_limit=2), release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=90)
        [(child, first_run)] = await children_of(client.get_workflow_handle(rid))
        chain = await run_chain(client, child, first_run)
    assert done.phase.value == "rolled_back", done.reason
    assert "3 failed measurements, more than failure_limit 2" in (done.reason or "") and "0.4" in (done.reason or "")
    assert len(chain) >= 2 and chain[-1] == WorkflowExecutionStatus.COMPLETED


async def test_forged_analysis_reports_change_no_verdict(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """An attacker with a raw Temporal client signals the release `analysis_measured` reports
    claiming failures: one from an analysis id the canary never started is ignored outright; one
    naming the real child (its id is in the release's history) is at most shown, never judged:
    the verdict is the child's result, and the canary is promoted."""
    from signoff.models import AnalysisReport, Measurement
    from workflows.canary import ANALYSIS_MEASURED

    spec = canary(
        steps=[{"set_weight": 10}, {"pause": {"duration": "PT4S"}}, {"set_weight": 50}],
        analyses={"availability": analysis(count=0, interval="PT1S")},
        background=["availability"],
    )
    forged = Measurement(metric="availability", value=1.0, verdict="failed", message="forged failure")
    async with worker(dev_env, task_queue, ScriptedAnalysis({"availability": [("successful", 0.0)]})):
        handle = await start(dev_env, task_queue, spec, children=True)
        await until(dev_env, handle, lambda v: len(v.status.analyses) >= 1, step=timedelta(seconds=0.2))
        raw = dev_env.client.get_workflow_handle(handle.id)
        await raw.signal(ANALYSIS_MEASURED, AnalysisReport(analysis_id="not-a-child", name="availability", measurements=[forged.model_copy(update={"message": "from nowhere"})] * 5))
        [(child, _)] = await children_of(handle)
        await raw.signal(ANALYSIS_MEASURED, AnalysisReport(analysis_id=child, name="availability", measurements=[forged] * 5))
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "promoted", view.outcome
    assert not any(m.message == "from nowhere" for m in view.status.analyses)
    assert view.deploys == [10, 50]
