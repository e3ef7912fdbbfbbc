"""The canary: progressive traffic steps watched by metric analyses, with Argo Rollouts semantics.

Two layers, like `workflows/gate.py`:

- pure rules with no Temporal in them (`evaluate`, `condition_holds`, `AnalysisState`), so they
  are unit- and property-tested directly and the Prometheus activity judges a value with exactly
  the same function the state machine was tested with;
- `CanaryRunner`, the workflow-side object that `ReleaseWorkflow` runs in its `canary` phase: it
  sets weights through a deploy callback, waits on durable timers and on people, and executes the
  `run_analysis` activity for every measurement.

Argo Rollouts' AnalysisRun rules are reproduced faithfully (per-measurement verdicts, `count`,
`failure_limit`, `inconclusive_limit`, `consecutive_error_limit`, errors not counting towards
`count`, error retry after min(interval, 10 s), `dry_run`). Three deliberate deviations make the
analysis fail safe, because "no data looked like success" is the complaint users of those tools
have most often:

1. a missing value (unreachable Prometheus, empty vector) or a NaN/Inf is never judged by the
   conditions; it is *inconclusive* (or *error* when the query itself failed);
2. a run that reaches `count` without a single successful measurement is Inconclusive, not
   Successful (Argo would call `count: 2, inconclusive_limit: 5` with two inconclusive results a
   success);
3. an open-ended (background, `count: 0`) analysis that is stopped when the canary ends is
   Successful only if it has measured success and its latest measurement was not an error.

The module has no side effects at import time and imports only the stdlib, pydantic models and
`temporalio.workflow`, so the sandbox can load it and activities may import the pure functions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Awaitable, Callable, Literal, Sequence

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, is_cancelled_exception
from temporalio.workflow import ChildWorkflowCancellationType, ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from signoff.models import (
        AnalysisOutcome,
        AnalysisReport,
        AnalysisRequest,
        AnalysisSpec,
        CanarySpec,
        CanaryStatus,
        Condition,
        Measurement,
        StartAnalysis,
        append_bounded,
    )

Verdict = Literal["successful", "failed", "inconclusive", "error"]

RUN_ANALYSIS = "run_analysis"
"""Activity name (see activities/__init__.py); AnalysisRequest → Measurement."""

ERROR_RETRY_INTERVAL = timedelta(seconds=10)
"""Argo's DefaultErrorRetryInterval: after an error, measure again after min(interval, this)."""

ANALYSIS_WORKFLOW = "AnalysisWorkflow"
"""Child workflow (workflows/analysis.py) that runs one long analysis and continues-as-new."""

ANALYSIS_MEASURED = "analysis_measured"
"""Signal an AnalysisWorkflow sends its parent with its newest measurements (AnalysisReport)."""

IN_WORKFLOW_COUNT = 20
"""Finite step analyses up to this `count` are measured inside the release's own workflow;
longer ones, open-ended ones (`count: 0`) and background analyses run in an AnalysisWorkflow, whose
history continues-as-new, so a canary left running for days does not fill the release's history."""


def runs_as_child(spec: AnalysisSpec, *, background: bool) -> bool:
    """Does this analysis run as an AnalysisWorkflow child (when the release has the patch)?"""
    return background or spec.count == 0 or spec.count > IN_WORKFLOW_COUNT


async def measure_once(request: AnalysisRequest, *, timeout: timedelta) -> Measurement:
    """One `run_analysis` activity; a failed activity is a measurement of verdict error.

    No retries (maximum_attempts=1): the analysis' own interval and consecutive_error_limit
    are the retry policy, and an error must show up in the status when it happens. The result is
    labelled with the analysis, its step and dry_run, and stamped with a time.
    """
    try:
        measured = await workflow.execute_activity(
            RUN_ANALYSIS,
            request,
            result_type=Measurement,
            start_to_close_timeout=timeout,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
    except ActivityError as e:
        if is_cancelled_exception(e):
            raise asyncio.CancelledError() from e
        cause = e.cause if e.cause is not None else e
        measured = Measurement(metric=request.name, verdict="error", message=f"the measurement could not be taken: {cause}")
    return measured.model_copy(
        update={"metric": request.name, "step": request.step, "dry_run": request.spec.dry_run, "at": measured.at or workflow.now()}
    )

# --------------------------------------------------------------------------- pure rules: one value


def usable(value: float | None) -> bool:
    """A value the conditions may judge: present and finite (NaN and ±Inf are 'no answer')."""
    return value is not None and not math.isnan(value) and not math.isinf(value)


def _fmt(x: float) -> str:
    return f"{x:g}"


def describe_condition(condition: Condition) -> str:
    """`less_than: 0.05, greater_than: 0` → '< 0.05 and > 0', for messages people read."""
    parts: list[str] = []
    if condition.less_than is not None:
        parts.append(f"< {_fmt(condition.less_than)}")
    if condition.less_than_or_equal is not None:
        parts.append(f"<= {_fmt(condition.less_than_or_equal)}")
    if condition.greater_than is not None:
        parts.append(f"> {_fmt(condition.greater_than)}")
    if condition.greater_than_or_equal is not None:
        parts.append(f">= {_fmt(condition.greater_than_or_equal)}")
    if condition.in_range is not None:
        low, high = condition.in_range
        parts.append(f"in [{_fmt(low)}, {_fmt(high)}]")
    if condition.equals is not None:
        parts.append(f"== {_fmt(condition.equals)}")
    return " and ".join(parts)


def describe_conditions(success: Condition | None, failure: Condition | None) -> str:
    """Both conditions of an analysis with their thresholds: 'success: < 0.05; failure: >= 0.1'."""
    parts = [f"{name}: {describe_condition(c)}" for name, c in (("success", success), ("failure", failure)) if c is not None]
    return "; ".join(parts) or "none (the value is only recorded)"


def condition_holds(condition: Condition, value: float) -> bool:
    """True when every comparison given in `condition` holds for `value` (a conjunction).

    Structured comparisons only: no user-written expression is ever evaluated. A non-finite value
    never satisfies anything, so a NaN can neither pass a success condition nor dodge a failure
    condition by being incomparable.
    """
    if not usable(value):
        return False
    checks: list[bool] = []
    if condition.less_than is not None:
        checks.append(value < condition.less_than)
    if condition.less_than_or_equal is not None:
        checks.append(value <= condition.less_than_or_equal)
    if condition.greater_than is not None:
        checks.append(value > condition.greater_than)
    if condition.greater_than_or_equal is not None:
        checks.append(value >= condition.greater_than_or_equal)
    if condition.in_range is not None:
        low, high = condition.in_range
        checks.append(low <= value <= high)
    if condition.equals is not None:
        checks.append(value == condition.equals)
    return bool(checks) and all(checks)


def evaluate(value: float | None, *, success: Condition | None, failure: Condition | None) -> tuple[Verdict, str]:
    """The verdict of one measured value, with a sentence saying why (Argo's EvaluateResult).

    - failure condition holds → failed (it wins when both hold);
    - only a success condition, and it does not hold → failed;
    - only a failure condition, and it does not hold → successful;
    - both given and neither holds → inconclusive;
    - no condition at all → successful (the value is only recorded), as in Argo;
    - no value, NaN or ±Inf → inconclusive whatever the conditions say (fail safe).
    """
    if value is None:
        return "inconclusive", "no value was measured, which is never taken as success"
    if not usable(value):
        return "inconclusive", f"the measured value is {value}, which is never taken as success"
    shown = _fmt(value)
    success_holds = condition_holds(success, value) if success is not None else None
    failure_holds = condition_holds(failure, value) if failure is not None else None
    if failure_holds:
        assert failure is not None
        return "failed", f"value {shown} meets the failure condition {describe_condition(failure)}"
    if success is not None and not success_holds:
        if failure is None:
            return "failed", f"value {shown} does not meet the success condition {describe_condition(success)}"
        return (
            "inconclusive",
            f"value {shown} meets neither the success condition {describe_condition(success)} "
            f"nor the failure condition {describe_condition(failure)}",
        )
    if success is not None:
        return "successful", f"value {shown} meets the success condition {describe_condition(success)}"
    if failure is not None:
        return "successful", f"value {shown} does not meet the failure condition {describe_condition(failure)}"
    return "successful", f"value {shown} recorded (no condition given)"


# --------------------------------------------------------------------------- pure rules: a run


class AnalysisPhase(str, Enum):
    running = "running"
    successful = "successful"
    failed = "failed"
    inconclusive = "inconclusive"
    error = "error"

    @property
    def completed(self) -> bool:
        return self is not AnalysisPhase.running


@dataclass
class AnalysisState:
    """Argo's MetricResult bookkeeping for one analysis, and its phase after each measurement.

    `count == 0` means open-ended: measure until `terminate()` (the step or the canary ends).
    """

    count: int = 1
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    dry_run: bool = False
    measured: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    phase: AnalysisPhase = AnalysisPhase.running
    last_verdict: Verdict | None = None

    @classmethod
    def for_spec(cls, spec: AnalysisSpec) -> "AnalysisState":
        return cls(
            count=spec.count,
            failure_limit=spec.failure_limit,
            inconclusive_limit=spec.inconclusive_limit,
            consecutive_error_limit=spec.consecutive_error_limit,
            dry_run=spec.dry_run,
        )

    def carry(self) -> dict[str, Any]:
        """The counters and phase as plain data, to hand to the next run (continue-as-new)."""
        doc = dataclasses.asdict(self)
        doc["phase"] = self.phase.value
        return doc

    @classmethod
    def carried(cls, doc: dict[str, Any]) -> "AnalysisState":
        """The state `carry()` handed over (unknown keys from newer versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["phase"] = AnalysisPhase(values.get("phase", AnalysisPhase.running.value))
        return cls(**values)

    def record(self, verdict: Verdict) -> AnalysisPhase:
        """Account one measurement and return the run's phase (Argo's assessMetricStatus).

        Errors do not count towards `count` (a run made only of errors never completes, it ends
        in Error once consecutive errors exceed the limit); any non-error measurement resets the
        consecutive-error counter. Recording after completion is a programming error.
        """
        if self.phase.completed:
            raise RuntimeError("analysis already completed; no more measurements are taken")
        self.last_verdict = verdict
        if verdict == "error":
            self.errors += 1
            self.consecutive_errors += 1
        else:
            self.measured += 1
            self.consecutive_errors = 0
            if verdict == "successful":
                self.successful += 1
            elif verdict == "failed":
                self.failed += 1
            else:
                self.inconclusive += 1
        self.phase = self._assess()
        return self.phase

    def _assess(self) -> AnalysisPhase:
        if self.failed > self.failure_limit:
            return AnalysisPhase.failed
        if self.inconclusive > self.inconclusive_limit:
            return AnalysisPhase.inconclusive
        if self.consecutive_errors > self.consecutive_error_limit:
            return AnalysisPhase.error
        if self.count > 0 and self.measured >= self.count:
            # Deviation 2 (fail safe): reaching `count` without one success is not a success.
            return AnalysisPhase.successful if self.successful > 0 else AnalysisPhase.inconclusive
        return AnalysisPhase.running

    def terminate(self) -> AnalysisPhase:
        """The step or canary ended while this analysis was still measuring (Argo: terminating).

        Deviation 3 (fail safe): Successful only with at least one success and a latest
        measurement that was not an error; otherwise Inconclusive, never a silent pass.
        """
        if self.phase.completed:
            return self.phase
        ok = self.successful > 0 and self.consecutive_errors == 0
        self.phase = AnalysisPhase.successful if ok else AnalysisPhase.inconclusive
        return self.phase

    def next_delay(self, interval: timedelta) -> timedelta:
        """Wait before the next measurement: the interval, or min(interval, 10 s) after an error."""
        if self.last_verdict == "error":
            return min(interval, ERROR_RETRY_INTERVAL)
        return interval

    def summary(self) -> str:
        """'2 successful, 3 failed (failure_limit 2), ...' for reasons and status lines."""
        if self.phase is AnalysisPhase.failed:
            return f"{self.failed} failed measurements, more than failure_limit {self.failure_limit}"
        if self.phase is AnalysisPhase.error:
            return (
                f"{self.consecutive_errors} consecutive measurement errors, "
                f"more than consecutive_error_limit {self.consecutive_error_limit}"
            )
        if self.phase is AnalysisPhase.inconclusive:
            if self.inconclusive > self.inconclusive_limit:
                return (
                    f"{self.inconclusive} inconclusive measurements, "
                    f"more than inconclusive_limit {self.inconclusive_limit}"
                )
            return (
                f"no successful measurement to rely on ({self.successful} successful, "
                f"{self.inconclusive} inconclusive, {self.errors} errors)"
            )
        return f"{self.successful} successful, {self.failed} failed, {self.inconclusive} inconclusive, {self.errors} errors"


def stops_canary(phase: AnalysisPhase, *, dry_run: bool) -> bool:
    """Failed or Error ends the canary (rollback) — unless the analysis is a dry run."""
    return not dry_run and phase in (AnalysisPhase.failed, AnalysisPhase.error)


def replay(spec: AnalysisSpec, verdicts: Sequence[Verdict]) -> tuple[AnalysisPhase, int]:
    """Feed verdicts to a fresh state until it completes; returns (phase, measurements used).

    The workflow stops measuring at completion, so verdicts after that point are never taken.
    """
    state = AnalysisState.for_spec(spec)
    for used, verdict in enumerate(verdicts, start=1):
        if state.record(verdict).completed:
            return state.phase, used
    return state.phase, len(verdicts)


# --------------------------------------------------------------------------- workflow side


class CanaryOutcome(BaseModel):
    """How the canary ended. `promoted`: every step passed, the caller goes to 100 % and marks
    the digest stable; `failed`: roll back (reason names the analysis, value and condition);
    `aborted`: a person stopped it."""

    result: Literal["promoted", "failed", "aborted"]
    reason: str = ""
    analysis: str | None = None
    step: int | None = None


@dataclass
class _AnalysisResult:
    name: str
    phase: AnalysisPhase
    state: AnalysisState
    last: Measurement | None
    stopped: bool = False


Deploy = Callable[[int], Awaitable[None]]
Notify = Callable[[str, str], Awaitable[None]]


class CanaryRunner:
    """Runs a CanarySpec inside ReleaseWorkflow; deterministic (workflow timers and conditions only).

    The caller owns the side effects it hands in (`deploy(weight)`, `notify(kind, text)`) and the
    promote/abort flags set by its Updates/Signals. Notification kinds: `paused` (an indefinite
    pause waits for a person), `inconclusive` (analysis could not decide: promote or roll back
    before the deadline), `inconclusive_hold` (the deadline passed and the policy says hold).
    `status` is mutated in place so ReleaseStatus shows the step, weight, pause and every
    measurement as they happen.
    """

    def __init__(
        self,
        spec: CanarySpec,
        status: CanaryStatus,
        *,
        release_id: str,
        service: str,
        digest: str,
        on_inconclusive: Literal["rollback", "hold"],
        deploy: Deploy,
        notify: Notify,
        is_promote_requested: Callable[[], bool],
        is_abort_requested: Callable[[], bool],
        clear_promote: Callable[[], None],
        version: str = "",
        measurement_timeout: timedelta = timedelta(seconds=30),
        on_measurement: Callable[[Measurement], None] | None = None,
        is_frozen: Callable[[], bool] = lambda: False,
        analyses_as_children: bool = False,
        analysis_options: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.on_measurement = on_measurement
        self.is_frozen = is_frozen
        self.status = status
        self.release_id = release_id
        self.service = service
        self.digest = digest
        # The local deploy target labels series with version = the digest's first 12 hex digits.
        self.version = version or digest.split(":", 1)[-1][:12]
        self.on_inconclusive: Literal["rollback", "hold"] = spec.on_inconclusive or on_inconclusive
        self.deploy = deploy
        self.notify = notify
        self.is_promote_requested = is_promote_requested
        self.is_abort_requested = is_abort_requested
        self.clear_promote = clear_promote
        self.measurement_timeout = measurement_timeout
        self._background_outcome: CanaryOutcome | None = None
        self._background_states: dict[str, AnalysisState] = {}
        self._holds = 0
        self._decision_lock = asyncio.Lock()
        # Long analyses as AnalysisWorkflow children (patch "analysis-child-workflows"); the
        # options (continue_every, report_every) are StartAnalysis fields, for tests.
        self.analyses_as_children = analyses_as_children
        self.analysis_options = analysis_options or {}
        self._child_ids: dict[str, bool] = {}  # id -> is a background analysis
        self._background_children: dict[str, ChildWorkflowHandle[Any, AnalysisOutcome]] = {}
        self._stopping_background = False
        self._steps_at: list[tuple[Any, int]] = []
        if analyses_as_children:
            workflow.set_signal_handler(ANALYSIS_MEASURED, self._on_report)

    # ------------------------------------------------------------------ the plan

    async def run(self) -> CanaryOutcome:
        """Walk the steps; stop at the first failure, abort or background failure."""
        background: list[asyncio.Task] = []
        try:
            for index, step in enumerate(self.spec.steps, start=1):
                # A freeze that pauses canaries keeps the current weight until it ends.
                await workflow.wait_condition(lambda: (self._holds == 0 and not self.is_frozen()) or self._interrupted() is not None)
                if (stop := self._interrupted()) is not None:
                    return self._finish(stop)
                self.status.step = index
                self._steps_at.append((workflow.now(), index))
                if index == 1:
                    # Background analyses watch from the first step to the end of the canary.
                    background = [asyncio.create_task(self._background(name)) for name in self.spec.background]
                if step.set_weight is not None:
                    # Not cancellable: a half-applied weight change is worse than a late abort,
                    # which is acted on right after the deploy returns.
                    await self.deploy(step.set_weight)
                    self.status.weight = step.set_weight
                    outcome = None
                elif step.pause is not None:
                    outcome = await self._guarded(self._pause(index, step.pause.duration))
                else:
                    outcome = await self._guarded(self._analysis_step(index, step.analysis or []))
                if outcome is not None:
                    return self._finish(outcome)
            await workflow.wait_condition(lambda: self._holds == 0 or self._interrupted() is not None)
            if (stop := self._interrupted()) is not None:
                return self._finish(stop)
            outcome = await self._guarded(self._close_background(background))
            if outcome is not None:
                return self._finish(outcome)
            return self._finish(CanaryOutcome(result="promoted", reason="every canary step passed", step=self.status.step))
        finally:
            # No await here: this also runs on workflow cancellation or eviction.
            for task in background:
                task.cancel()

    def _finish(self, outcome: CanaryOutcome) -> CanaryOutcome:
        if outcome.step is None:
            outcome.step = self.status.step
        self.status.verdict = outcome.result
        self.status.paused = False
        self.status.pause_reason = ""
        return outcome

    def _interrupted(self) -> CanaryOutcome | None:
        """A person's abort, or a background analysis that failed: both stop the canary at once."""
        if self.is_abort_requested():
            return CanaryOutcome(result="aborted", reason="a person aborted the canary")
        return self._background_outcome

    async def _guarded(self, work: Awaitable[CanaryOutcome | None]) -> CanaryOutcome | None:
        """Run one step, dropping it the moment the canary is interrupted."""
        task = asyncio.ensure_future(work)
        try:
            await workflow.wait_condition(lambda: task.done() or self._interrupted() is not None)
        except BaseException:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if (stop := self._interrupted()) is not None:
            return stop
        return task.result()

    @staticmethod
    async def _cancel_all(tasks: list[asyncio.Task]) -> None:
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ pauses and people

    async def _pause(self, index: int, duration: timedelta | None) -> CanaryOutcome | None:
        """`pause: {duration}` waits (a promote ends it early); `pause: {}` waits for a person."""
        self.status.paused = True
        if duration is None:
            self.status.pause_reason = (
                f"step {index} waits for a person to promote the canary (Slack, or "
                f"`signoff release promote {self.release_id} --as EMAIL`)"
            )
            await self._tell("paused", f"Release {self.release_id} of {self.service}: {self.status.pause_reason}.")
        else:
            self.status.pause_reason = f"step {index} pauses for {duration}"
        try:
            try:
                await workflow.wait_condition(self.is_promote_requested, timeout=duration)
                self.clear_promote()
            except asyncio.TimeoutError:
                pass
        finally:
            if self._holds == 0 and not self.is_frozen():  # a freeze's pause outlasts the step's
                self.status.paused = False
                self.status.pause_reason = ""
        return None

    async def _decide_inconclusive(self, names: list[str], reason: str, index: int) -> CanaryOutcome | None:
        """Pause and ask approvers to promote or roll back; the deadline applies the policy.

        Returns None when a person promoted (carry on), or the outcome that ends the canary.
        """
        async with self._decision_lock:
            self._holds += 1
            self.status.paused = True
            self.status.pause_reason = reason
            self.status.verdict = "inconclusive"
            deadline = self.spec.inconclusive_deadline
            try:
                await self._tell(
                    "inconclusive",
                    f"Release {self.release_id} of {self.service} is paused: {reason}. Promote it "
                    f"(`signoff release promote {self.release_id} --as EMAIL`) or roll it back "
                    f"(`signoff release abort {self.release_id} --as EMAIL --reason TEXT`) within {deadline}; "
                    f"after that the policy's default applies ({self.on_inconclusive}).",
                )
                decided = self.is_promote_requested() or self.is_abort_requested()
                if not decided:
                    try:
                        await workflow.wait_condition(
                            lambda: self.is_promote_requested() or self.is_abort_requested(), timeout=deadline
                        )
                    except asyncio.TimeoutError:
                        if self.on_inconclusive == "rollback":
                            return CanaryOutcome(
                                result="failed",
                                reason=f"{reason}, and nobody promoted or rolled back within {deadline}, "
                                "so the policy's default (rollback) applied",
                                analysis=", ".join(names),
                                step=index,
                            )
                        await self._tell(
                            "inconclusive_hold",
                            f"Release {self.release_id} of {self.service}: the {deadline} deadline passed and the "
                            "policy says hold, so the canary keeps waiting for a person to promote or roll back.",
                        )
                        await workflow.wait_condition(lambda: self.is_promote_requested() or self.is_abort_requested())
                if self.is_abort_requested():
                    return CanaryOutcome(result="aborted", reason="a person aborted the canary", step=index)
                self.clear_promote()
                return None
            finally:
                self._holds -= 1
                if self._holds == 0:
                    self.status.paused = False
                    self.status.pause_reason = ""
                    if self.status.verdict == "inconclusive":
                        self.status.verdict = None

    async def _tell(self, kind: str, text: str) -> None:
        """Notifications are best effort: a Slack outage must not decide a canary."""
        try:
            await self.notify(kind, text)
        except Exception as e:  # noqa: BLE001 - CancelledError is not an Exception and still propagates
            workflow.logger.warning("canary notification %s failed: %s", kind, e)

    # ------------------------------------------------------------------ analyses

    async def _analysis_step(self, index: int, names: list[str]) -> CanaryOutcome | None:
        """Run the step's analyses together; the first that fails ends the step at once."""
        tasks = {asyncio.ensure_future(self._analyse(name, step=index)): name for name in names}
        pending: list[asyncio.Future] = list(tasks)
        results: list[_AnalysisResult] = []
        try:
            while pending:
                done, still = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending = list(still)
                for task in sorted(done, key=lambda t: names.index(tasks[t])):
                    result = task.result()
                    results.append(result)
                    if stops_canary(result.phase, dry_run=result.state.dry_run):
                        return self._failure(result, index)
        finally:
            for task in pending:
                task.cancel()
        inconclusive = [r for r in sorted(results, key=lambda r: names.index(r.name)) if self._acts(r) and r.phase is AnalysisPhase.inconclusive]
        if inconclusive:
            reason = "; ".join(self._describe(r) for r in inconclusive)
            return await self._decide_inconclusive([r.name for r in inconclusive], reason, index)
        return None

    async def _background(self, name: str) -> None:
        """A background analysis watches every step; failure stops the canary, inconclusive pauses it."""
        while self._background_outcome is None and not self._stopping_background:
            result = await self._analyse(name, step=None)
            if result.stopped:  # the canary closed it: `_close_background` judges what it saw
                self._background_states[name] = result.state
                return
            if not self._acts(result) or result.phase is AnalysisPhase.successful:
                return
            if stops_canary(result.phase, dry_run=False):
                self._background_outcome = self._failure(result, self.status.step)
                return
            outcome = await self._decide_inconclusive([name], self._describe(result), self.status.step)
            if outcome is not None:
                self._background_outcome = outcome
                return
            # A person promoted past the inconclusive result: watch again with fresh counters.

    async def _close_background(self, tasks: list[asyncio.Task]) -> CanaryOutcome | None:
        """The steps are done: stop open-ended background analyses and judge what they saw."""
        if self.analyses_as_children:
            # Children are stopped, not cancelled: each returns the counters it carried.
            self._stopping_background = True
            for handle in list(self._background_children.values()):
                await self._stop(handle)
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._cancel_all(tasks)
        if self._background_outcome is not None:
            return self._background_outcome
        unsure: list[_AnalysisResult] = []
        for name in self.spec.background:
            state = self._background_states.get(name)
            if state is None or state.dry_run:
                continue
            if state.terminate() is AnalysisPhase.inconclusive:
                unsure.append(_AnalysisResult(name=name, phase=state.phase, state=state, last=None))
        if unsure:
            reason = "; ".join(self._describe(r) for r in unsure)
            return await self._decide_inconclusive([r.name for r in unsure], reason, self.status.step)
        return None

    @staticmethod
    def _acts(result: _AnalysisResult) -> bool:
        """dry_run analyses are measured and shown but never act on the canary."""
        return not result.state.dry_run

    def _describe(self, result: _AnalysisResult) -> str:
        text = f"analysis {result.name!r} is {result.phase.value} ({result.state.summary()})"
        if result.last is not None and result.last.message:
            text += f"; last measurement: {result.last.message}"
        if result.last is not None and result.last.query:
            text += f"; condition {result.last.condition}; query `{result.last.query}`"
        return text

    def _failure(self, result: _AnalysisResult, index: int) -> CanaryOutcome:
        return CanaryOutcome(result="failed", reason=self._describe(result), analysis=result.name, step=index)

    async def _analyse(self, name: str, *, step: int | None) -> _AnalysisResult:
        """Measure one analysis until its state machine completes (Argo's AnalysisRun loop)."""
        spec = self.spec.analyses[name]
        if self.analyses_as_children and runs_as_child(spec, background=step is None):
            return await self._analyse_in_child(name, spec, step=step)
        state = AnalysisState.for_spec(spec)
        if step is None:
            self._background_states[name] = state
        if spec.initial_delay > timedelta(0):
            await workflow.sleep(spec.initial_delay)
        while True:
            last = await self._measure(name, spec, self.status.step if step is None else step)
            if state.record(last.verdict).completed:
                return _AnalysisResult(name=name, phase=state.phase, state=state, last=last)
            delay = state.next_delay(spec.interval)
            if delay > timedelta(0):
                await workflow.sleep(delay)

    async def _analyse_in_child(self, name: str, spec: AnalysisSpec, *, step: int | None) -> _AnalysisResult:
        """`_analyse`'s loop in an AnalysisWorkflow child, whose history continues-as-new so the
        release's stays short. Its measurements arrive by signal (`_on_report`, for the status
        and notices only); its verdict is its result, which no signal can forge.

        The child ends with the release (ParentClosePolicy.TERMINATE), and cancelling this task
        (an abort, a failed step) cancels it without waiting.
        """
        where = "background" if step is None else f"step{step}"
        # A random suffix: nobody can start a workflow under this id before the release does.
        child_id = f"{self.release_id}-analysis-{name}-{where}-{workflow.uuid4().hex[:8]}"
        self._child_ids[child_id] = step is None
        args = StartAnalysis(
            request=self._request(name, spec, self.status.step if step is None else step),
            measurement_timeout=self.measurement_timeout,
            **self.analysis_options,
        )
        handle = await workflow.start_child_workflow(
            ANALYSIS_WORKFLOW,
            args,
            id=child_id,
            result_type=AnalysisOutcome,
            parent_close_policy=ParentClosePolicy.TERMINATE,
            cancellation_type=ChildWorkflowCancellationType.TRY_CANCEL,
        )
        if step is None:
            self._background_children[name] = handle
            if self._stopping_background:  # the canary closed while this child was starting
                await self._stop(handle)
        try:
            outcome = await handle
        except ChildWorkflowError as e:
            if is_cancelled_exception(e):
                raise asyncio.CancelledError() from e
            # Terminated or failed without a verdict: fail safe, as an analysis in error.
            state = AnalysisState.for_spec(spec)
            state.phase = AnalysisPhase.error
            last = Measurement(metric=name, verdict="error", step=step, message=f"analysis workflow {child_id} ended without a verdict: {e.cause or e}")
            self._show(last)
            return _AnalysisResult(name=name, phase=state.phase, state=state, last=last)
        finally:
            if self._background_children.get(name) is handle:
                del self._background_children[name]
        state = AnalysisState.carried(outcome.state)
        return _AnalysisResult(name=name, phase=state.phase, state=state, last=outcome.last, stopped=outcome.stopped)

    @staticmethod
    async def _stop(handle: ChildWorkflowHandle[Any, AnalysisOutcome]) -> None:
        """Ask a background child to stop and return its counters; one that already ended has
        its result on the way (the signal then fails, harmlessly)."""
        try:
            await handle.signal("stop")
        except Exception as e:  # noqa: BLE001 - CancelledError is not an Exception and still propagates
            workflow.logger.info("analysis %s not stopped by signal: %s", handle.id, e)

    def _on_report(self, report: AnalysisReport) -> None:
        """Measurements from a child: shown in the status (background ones labelled with the step
        running when they were taken); the newest of each report is passed on as a notice.
        Reports from workflows this canary did not start are ignored."""
        background = self._child_ids.get(report.analysis_id)
        if background is None:
            return
        self.status.analyses_dropped += report.skipped
        for i, measurement in enumerate(report.measurements):
            if background:
                measurement = measurement.model_copy(update={"step": self._step_at(measurement.at)})
            self._show(measurement, notify=i == len(report.measurements) - 1)

    def _step_at(self, at: Any) -> int:
        """The canary step that was running at `at` (the current one when unknown)."""
        for started, index in reversed(self._steps_at):
            try:
                if at is None or started <= at:
                    return index
            except TypeError:  # a naive time from an old activity: the current step
                return self.status.step
        return self._steps_at[0][1] if self._steps_at else self.status.step

    async def _measure(self, name: str, spec: AnalysisSpec, step: int) -> Measurement:
        """One measurement (see `measure_once`), shown in the status as it happens."""
        measurement = await measure_once(self._request(name, spec, step), timeout=self.measurement_timeout)
        self._show(measurement)
        return measurement

    def _request(self, name: str, spec: AnalysisSpec, step: int | None) -> AnalysisRequest:
        return AnalysisRequest(
            release_id=self.release_id,
            name=name,
            spec=spec,
            service=self.service,
            digest=self.digest,
            version=self.version,
            step=step,
        )

    def _show(self, measurement: Measurement, *, notify: bool = True) -> None:
        append_bounded(self.status, "analyses", measurement)
        if notify and self.on_measurement is not None:
            self.on_measurement(measurement)
