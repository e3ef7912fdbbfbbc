"""CanaryRunner inside a small workflow on the time-skipping server.

`run_analysis` is a scripted fake registered under the real activity name, so the runner's
real Temporal behaviour (timers, conditions, activity failures, cancellation, replay) is what is
tested; the Prometheus side has its own tests against a real server (test_prometheus.py).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, Callable, Literal

import pytest
from pydantic import BaseModel, Field
from temporalio import activity, workflow
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from signoff.models import AnalysisRequest, CanarySpec, CanaryStatus, Measurement
from workflows.analysis import AnalysisWorkflow
from workflows.canary import CanaryOutcome, CanaryRunner

# --------------------------------------------------------------------------- harness workflow


class HarnessInput(BaseModel):
    spec: CanarySpec
    on_inconclusive: Literal["rollback", "hold"] = "rollback"
    digest: str = "sha256:" + "a" * 64
    #: Long analyses as AnalysisWorkflow children (what ReleaseWorkflow does with its patch).
    children: bool = False
    analysis_options: dict[str, Any] = Field(default_factory=dict)


class HarnessView(BaseModel):
    status: CanaryStatus
    deploys: list[int] = Field(default_factory=list)
    notes: list[tuple[str, str]] = Field(default_factory=list)
    outcome: CanaryOutcome | None = None


@workflow.defn
class CanaryHarness:
    """The smallest host for a CanaryRunner: deploys and notifications are recorded in state."""

    def __init__(self) -> None:
        self.view = HarnessView(status=CanaryStatus())
        self.promote = False
        self.abort = False

    @workflow.run
    async def run(self, inp: HarnessInput) -> HarnessView:
        runner = CanaryRunner(
            inp.spec,
            self.view.status,
            release_id="rel-test",
            service="checkout",
            digest=inp.digest,
            on_inconclusive=inp.on_inconclusive,
            deploy=self._deploy,
            notify=self._notify,
            is_promote_requested=lambda: self.promote,
            is_abort_requested=lambda: self.abort,
            clear_promote=self._clear_promote,
            analyses_as_children=inp.children,
            analysis_options=inp.analysis_options,
        )
        self.view.outcome = await runner.run()
        return self.view

    async def _deploy(self, weight: int) -> None:
        await workflow.execute_activity(
            "test_set_weight", weight, start_to_close_timeout=timedelta(seconds=10)
        )
        self.view.deploys.append(weight)

    async def _notify(self, kind: str, text: str) -> None:
        self.view.notes.append((kind, text))

    def _clear_promote(self) -> None:
        self.promote = False

    @workflow.signal
    def promote_canary(self) -> None:
        self.promote = True

    @workflow.signal
    def abort_canary(self) -> None:
        self.abort = True

    @workflow.query
    def state(self) -> HarnessView:
        return self.view


# --------------------------------------------------------------------------- scripted activity


class ScriptedAnalysis:
    """`run_analysis` returning scripted verdicts per analysis name; the last entry repeats.

    An entry "raise" makes the activity fail, as an activity crash or timeout would.
    """

    def __init__(self, scripts: dict[str, list[tuple[str, float | None]]]) -> None:
        self.scripts = {name: list(entries) for name, entries in scripts.items()}
        self.calls: list[tuple[str, int | None]] = []

    @activity.defn(name="run_analysis")
    async def run_analysis(self, request: AnalysisRequest) -> Measurement:
        self.calls.append((request.name, request.step))
        script = self.scripts[request.name]
        verdict, value = script.pop(0) if len(script) > 1 else script[0]
        if verdict == "raise":
            raise ApplicationError("the Prometheus client blew up", non_retryable=True)
        return Measurement(metric=request.name, value=value, verdict=verdict, message=f"scripted {verdict} {value}")  # type: ignore[arg-type]


class DeployRecorder:
    """The deploy side effect: counts real activity executions (a replay does not execute)."""

    def __init__(self) -> None:
        self.weights: list[int] = []

    @activity.defn(name="test_set_weight")
    async def set_weight(self, weight: int) -> None:
        self.weights.append(weight)


def canary(**kw: Any) -> CanarySpec:
    return CanarySpec.model_validate(kw)


def analysis(**kw: Any) -> dict[str, Any]:
    return {"query": "sum(rate(x[1m]))", "interval": "PT30S", "success": {"less_than": 0.05}, **kw}


async def start(
    env: WorkflowEnvironment, task_queue: str, spec: CanarySpec, **kw: Any
) -> WorkflowHandle[CanaryHarness, HarnessView]:
    return await env.client.start_workflow(
        CanaryHarness.run,
        HarnessInput(spec=spec, **kw),
        id=f"canary-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        execution_timeout=timedelta(days=3),
    )


async def until(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[CanaryHarness, HarnessView],
    check: Callable[[HarnessView], bool],
    *,
    step: timedelta = timedelta(seconds=5),
    timeout: float = 20.0,
) -> HarnessView:
    """Query until `check` holds, advancing workflow time by `step` between polls.

    Queries alone do not skip time, so without `env.sleep` a workflow waiting on a 30 s
    analysis interval would wait 30 real seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await handle.query(CanaryHarness.state)
        if check(view):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last view: {view}")
        await env.sleep(step)


def worker(
    env: WorkflowEnvironment, task_queue: str, fake: ScriptedAnalysis, recorder: DeployRecorder | None = None
) -> Worker:
    recorder = recorder or DeployRecorder()
    return Worker(
        env.client, task_queue=task_queue, workflows=[CanaryHarness, AnalysisWorkflow], activities=[fake.run_analysis, recorder.set_weight]
    )


# --------------------------------------------------------------------------- tests


async def test_steps_progress_deploy_and_record_every_measurement(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[
            {"set_weight": 10},
            {"pause": {"duration": "PT5M"}},
            {"analysis": ["error-rate"]},
            {"set_weight": 50},
            {"analysis": ["error-rate", "latency"]},
        ],
        analyses={"error-rate": analysis(count=2), "latency": analysis(count=1, success={"less_than": 0.3})},
    )
    fake = ScriptedAnalysis({"error-rate": [("successful", 0.01)], "latency": [("successful", 0.12)]})
    async with worker(skip_env, task_queue, fake):
        handle = await start(skip_env, task_queue, spec)
        view = await handle.result()
        history = await handle.fetch_history()

    assert view.outcome is not None and view.outcome.result == "promoted"
    assert view.deploys == [10, 50]
    assert view.status.step == 5 and view.status.weight == 50 and view.status.verdict == "promoted"
    assert sorted((m.metric, m.step, m.verdict, m.value) for m in view.status.analyses) == [
        ("error-rate", 3, "successful", 0.01),
        ("error-rate", 3, "successful", 0.01),
        ("error-rate", 5, "successful", 0.01),
        ("error-rate", 5, "successful", 0.01),
        ("latency", 5, "successful", 0.12),
    ]
    assert all(m.at is not None for m in view.status.analyses)
    assert sorted(fake.calls) == sorted([("error-rate", 3), ("error-rate", 3), ("error-rate", 5), ("error-rate", 5), ("latency", 5)])
    # the runner is deterministic: its own history replays without a nondeterminism error
    await Replayer(workflows=[CanaryHarness], data_converter=skip_env.client.data_converter).replay_workflow(history)


async def test_failure_limit_two_tolerates_two_failures_and_acts_on_the_third(
    skip_env: WorkflowEnvironment, task_queue: str
) -> None:
    spec = canary(
        steps=[{"set_weight": 20}, {"analysis": ["error-rate"]}, {"set_weight": 100}],
        analyses={"error-rate": analysis(count=5, failure_limit=2)},
    )
    tolerated = ScriptedAnalysis({"error-rate": [("failed", 0.2), ("failed", 0.3), ("successful", 0.01)]})
    async with worker(skip_env, task_queue, tolerated):
        view = await (await start(skip_env, task_queue, spec)).result()
    assert view.outcome is not None and view.outcome.result == "promoted"
    assert [m.verdict for m in view.status.analyses] == ["failed", "failed"] + ["successful"] * 3
    assert view.deploys == [20, 100]

    third = ScriptedAnalysis(
        {"error-rate": [("failed", 0.2), ("successful", 0.01), ("failed", 0.3), ("failed", 0.31), ("successful", 0.0)]}
    )
    async with worker(skip_env, task_queue, third):
        view = await (await start(skip_env, task_queue, spec)).result()
    assert view.outcome is not None and view.outcome.result == "failed"
    assert view.outcome.analysis == "error-rate" and view.outcome.step == 2
    assert "failure_limit 2" in view.outcome.reason and "0.31" in view.outcome.reason
    assert len(view.status.analyses) == 4  # stopped at the third failure
    assert view.deploys == [20]  # never went further


async def test_indefinite_pause_waits_for_a_person(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(steps=[{"set_weight": 20}, {"pause": {}}, {"set_weight": 60}])
    async with worker(skip_env, task_queue, ScriptedAnalysis({})):
        handle = await start(skip_env, task_queue, spec)
        view = await until(skip_env, handle, lambda v: v.status.paused)
        assert view.status.step == 2 and "promote" in view.status.pause_reason
        assert [kind for kind, _ in view.notes] == ["paused"]
        await skip_env.sleep(timedelta(days=1))  # nobody acts for a day: still paused
        view = await handle.query(CanaryHarness.state)
        assert view.status.paused and view.deploys == [20] and view.outcome is None
        await handle.signal(CanaryHarness.promote_canary)
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "promoted"
    assert view.deploys == [20, 60] and not view.status.paused


async def test_worker_restart_mid_canary_resumes_without_redeploying(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """On the real dev server (it re-routes a dead worker's sticky tasks): a new worker replays the
    history and carries on at the same step; no deploy and no measurement happens twice."""
    spec = canary(
        steps=[{"set_weight": 20}, {"analysis": ["error-rate"]}, {"pause": {}}, {"set_weight": 60}],
        analyses={"error-rate": analysis(count=2, interval="PT1S")},
    )
    recorder = DeployRecorder()
    fake = ScriptedAnalysis({"error-rate": [("successful", 0.01)]})
    async with worker(dev_env, task_queue, fake, recorder):
        handle = await start(dev_env, task_queue, spec)
        await until(dev_env, handle, lambda v: v.status.paused, step=timedelta(seconds=0.2))
    assert recorder.weights == [20]
    # a new worker process picks the workflow up from its history, at the same step
    async with worker(dev_env, task_queue, ScriptedAnalysis({"error-rate": [("failed", 1.0)]}), recorder):
        view = await handle.query(CanaryHarness.state)
        assert view.status.paused and view.status.step == 3 and len(view.status.analyses) == 2
        await handle.signal(CanaryHarness.promote_canary)
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "promoted"
    assert recorder.weights == [20, 60]  # 20 was not deployed a second time
    assert len(fake.calls) == 2  # the analysis was not measured again either


async def test_manual_abort_stops_during_analysis(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate"]}, {"set_weight": 50}],
        analyses={"error-rate": analysis(count=100, interval="PT1M")},
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"error-rate": [("successful", 0.0)]})):
        handle = await start(skip_env, task_queue, spec)
        await until(skip_env, handle, lambda v: len(v.status.analyses) >= 1)
        await handle.signal(CanaryHarness.abort_canary)
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "aborted" and view.outcome.step == 2
    assert view.deploys == [10] and view.status.verdict == "aborted"
    assert len(view.status.analyses) < 100


async def test_inconclusive_pauses_then_deadline_rolls_back(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate"]}, {"set_weight": 50}],
        analyses={"error-rate": analysis(count=3)},
        inconclusive_deadline="PT20M",
    )
    fake = ScriptedAnalysis({"error-rate": [("successful", 0.01), ("inconclusive", None)]})
    async with worker(skip_env, task_queue, fake):
        handle = await start(skip_env, task_queue, spec, on_inconclusive="rollback")
        view = await until(skip_env, handle, lambda v: v.status.paused)
        assert "error-rate" in view.status.pause_reason and view.status.verdict == "inconclusive"
        kinds = [kind for kind, _ in view.notes]
        assert kinds == ["inconclusive"] and "0:20:00" in view.notes[0][1]
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "failed"
    assert "nobody promoted or rolled back within 0:20:00" in view.outcome.reason
    assert "inconclusive_limit 0" in view.outcome.reason
    assert view.deploys == [10]


async def test_inconclusive_with_hold_keeps_waiting_for_a_person(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate"]}, {"set_weight": 50}],
        analyses={"error-rate": analysis(count=1)},
        inconclusive_deadline="PT10M",
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"error-rate": [("inconclusive", None)]})):
        handle = await start(skip_env, task_queue, spec, on_inconclusive="hold")
        await until(skip_env, handle, lambda v: v.status.paused)
        await skip_env.sleep(timedelta(hours=6))  # long past the deadline
        view = await until(skip_env, handle, lambda v: ("inconclusive_hold" in [k for k, _ in v.notes]))
        assert view.status.paused and view.outcome is None and view.deploys == [10]
        await handle.signal(CanaryHarness.promote_canary)
        view = await handle.result()
    assert view.outcome is not None and view.outcome.result == "promoted"
    assert view.deploys == [10, 50] and not view.status.paused

    # the release file's on_inconclusive overrides the policy's hold
    spec.on_inconclusive = "rollback"
    async with worker(skip_env, task_queue, ScriptedAnalysis({"error-rate": [("inconclusive", None)]})):
        view = await (await start(skip_env, task_queue, spec, on_inconclusive="hold")).result()
    assert view.outcome is not None and view.outcome.result == "failed"


async def test_background_failure_stops_the_canary_at_once(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"pause": {"duration": "PT2H"}}, {"set_weight": 50}],
        analyses={"availability": analysis(count=0, interval="PT1M")},
        background=["availability"],
    )
    fake = ScriptedAnalysis({"availability": [("successful", 0.0), ("successful", 0.01), ("failed", 0.4)]})
    async with worker(skip_env, task_queue, fake):
        handle = await start(skip_env, task_queue, spec)
        view = await handle.result()
        described = await handle.describe()
    assert view.outcome is not None and view.outcome.result == "failed"
    assert view.outcome.analysis == "availability" and "0.4" in view.outcome.reason
    assert view.deploys == [10]  # the 2 h pause was cut short, the next weight never applied
    assert described.close_time is not None and described.start_time is not None
    assert described.close_time - described.start_time < timedelta(minutes=10)
    assert [m.step for m in view.status.analyses] == [1, 2, 2]  # measured during the weight and pause steps


@pytest.mark.parametrize("children", [False, True], ids=["in-workflow", "analysis-workflow"])
async def test_open_ended_background_with_only_errors_is_not_promoted(skip_env: WorkflowEnvironment, task_queue: str, children: bool) -> None:
    """Prometheus down for the whole canary: a few errors, under the limit, still no promotion
    (also when the analysis runs in an AnalysisWorkflow child that the canary's end stops)."""
    spec = canary(
        steps=[{"set_weight": 10}, {"pause": {"duration": "PT15S"}}],
        analyses={"availability": analysis(count=0, interval="PT30S")},
        background=["availability"],
        inconclusive_deadline="PT5M",
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"availability": [("raise", None)]})):
        view = await (await start(skip_env, task_queue, spec, children=children)).result()
    assert view.outcome is not None and view.outcome.result == "failed"
    assert {m.verdict for m in view.status.analyses} == {"error"}
    assert len(view.status.analyses) <= 4  # under consecutive_error_limit: the end-of-canary rule decided
    assert "the Prometheus client blew up" in view.status.analyses[0].message
    assert "nobody promoted" in view.outcome.reason


async def test_dry_run_is_recorded_but_never_fails(skip_env: WorkflowEnvironment, task_queue: str) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate", "new-metric"]}, {"set_weight": 100}],
        analyses={"error-rate": analysis(count=2), "new-metric": analysis(count=2, dry_run=True)},
    )
    fake = ScriptedAnalysis({"error-rate": [("successful", 0.01)], "new-metric": [("failed", 9.0)]})
    async with worker(skip_env, task_queue, fake):
        view = await (await start(skip_env, task_queue, spec)).result()
    assert view.outcome is not None and view.outcome.result == "promoted"
    dry = [m for m in view.status.analyses if m.metric == "new-metric"]
    assert dry and all(m.dry_run and m.verdict == "failed" for m in dry)
    assert view.deploys == [10, 100]


async def test_activity_failures_are_error_measurements_up_to_the_limit(
    skip_env: WorkflowEnvironment, task_queue: str
) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate"]}],
        analyses={"error-rate": analysis(count=3, consecutive_error_limit=1)},
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"error-rate": [("raise", None)]})):
        view = await (await start(skip_env, task_queue, spec)).result()
    assert view.outcome is not None and view.outcome.result == "failed"
    assert [m.verdict for m in view.status.analyses] == ["error", "error"]
    assert "consecutive_error_limit 1" in view.outcome.reason
    assert "the Prometheus client blew up" in view.outcome.reason


@pytest.mark.parametrize("promote_first", [True, False])
async def test_person_decides_an_inconclusive_result(
    skip_env: WorkflowEnvironment, task_queue: str, promote_first: bool
) -> None:
    spec = canary(
        steps=[{"set_weight": 10}, {"analysis": ["error-rate"]}, {"set_weight": 50}],
        analyses={"error-rate": analysis(count=1)},
    )
    async with worker(skip_env, task_queue, ScriptedAnalysis({"error-rate": [("inconclusive", None)]})):
        handle = await start(skip_env, task_queue, spec)
        await until(skip_env, handle, lambda v: v.status.paused)
        await handle.signal(CanaryHarness.promote_canary if promote_first else CanaryHarness.abort_canary)
        view = await handle.result()
    assert view.outcome is not None
    if promote_first:
        assert view.outcome.result == "promoted" and view.deploys == [10, 50]
    else:
        assert view.outcome.result == "aborted" and view.deploys == [10]
