"""The analysis state machine against the documented Argo Rollouts AnalysisRun rules.

References: Argo Rollouts docs "Analysis & Progressive Delivery" (failureLimit, inconclusiveLimit,
consecutiveErrorLimit, count/interval, dryRun) and utils/evaluate EvaluateResult. The three
fail-safe deviations are tested as such (see workflows/canary.py).
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.models import AnalysisSpec, Condition
from workflows.canary import (
    AnalysisPhase,
    AnalysisState,
    condition_holds,
    describe_condition,
    evaluate,
    replay,
    stops_canary,
)

LT = Condition(less_than=0.05)
GT = Condition(greater_than=0.2)


def spec(**kw: object) -> AnalysisSpec:
    return AnalysisSpec(query="vector(1)", **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- one value


@pytest.mark.parametrize(
    ("value", "success", "failure", "expected"),
    [
        (0.01, LT, None, "successful"),  # success condition holds
        (0.30, LT, None, "failed"),  # only success given, does not hold → failed
        (0.30, None, GT, "failed"),  # failure condition holds
        (0.01, None, GT, "successful"),  # only failure given, does not hold → successful
        (0.10, LT, GT, "inconclusive"),  # both given, neither holds → inconclusive
        (0.01, LT, GT, "successful"),
        (0.30, LT, GT, "failed"),
        (0.30, Condition(greater_than=0.0), GT, "failed"),  # both hold: failure wins (Argo)
        (0.30, None, None, "successful"),  # no condition: value only recorded
    ],
)
def test_evaluate_follows_argo_evaluate_result(
    value: float, success: Condition | None, failure: Condition | None, expected: str
) -> None:
    verdict, message = evaluate(value, success=success, failure=failure)
    assert verdict == expected
    assert f"{value:g}" in message


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("success", "failure"), [(LT, None), (None, GT), (LT, GT), (None, None), (Condition(less_than=math.inf), None)]
)
def test_no_value_or_nan_is_never_successful(value: float | None, success: Condition | None, failure: Condition | None) -> None:
    verdict, message = evaluate(value, success=success, failure=failure)
    assert verdict == "inconclusive"
    assert "never taken as success" in message


def test_conditions_are_structured_comparisons() -> None:
    assert condition_holds(Condition(less_than_or_equal=1), 1.0)
    assert not condition_holds(Condition(less_than=1), 1.0)
    assert condition_holds(Condition(greater_than_or_equal=1), 1.0)
    assert condition_holds(Condition(in_range=(0.5, 1.0)), 1.0)  # inclusive bounds
    assert not condition_holds(Condition(in_range=(0.5, 1.0)), 1.01)
    assert condition_holds(Condition(equals=3), 3.0)
    both = Condition(greater_than=0, less_than=1)  # several comparisons: all must hold
    assert condition_holds(both, 0.5) and not condition_holds(both, 1.5)
    assert not condition_holds(Condition(greater_than=-math.inf), math.nan)
    assert describe_condition(both) == "< 1 and > 0"
    with pytest.raises(ValueError):
        Condition()


# --------------------------------------------------------------------------- a run


def test_count_completes_after_count_measurements() -> None:
    state = AnalysisState.for_spec(spec(count=3, interval=timedelta(seconds=30)))
    assert [state.record("successful") for _ in range(3)] == [
        AnalysisPhase.running,
        AnalysisPhase.running,
        AnalysisPhase.successful,
    ]
    assert state.next_delay(timedelta(seconds=30)) == timedelta(seconds=30)
    with pytest.raises(RuntimeError):
        state.record("successful")


def test_failure_limit_two_tolerates_two_failures_and_acts_on_the_third() -> None:
    s = spec(count=10, failure_limit=2, success=LT)
    assert replay(s, ["failed", "failed", "successful"]) == (AnalysisPhase.running, 3)
    assert replay(s, ["failed", "successful", "failed", "successful", "failed", "successful"]) == (AnalysisPhase.failed, 5)
    assert replay(spec(count=5, failure_limit=2), ["failed", "failed", "successful", "successful", "successful"]) == (
        AnalysisPhase.successful,
        5,
    )


def test_default_failure_limit_zero_fails_on_first_failure() -> None:
    assert replay(spec(count=5), ["successful", "failed", "successful"]) == (AnalysisPhase.failed, 2)


def test_inconclusive_limit() -> None:
    assert replay(spec(count=5), ["successful", "inconclusive"]) == (AnalysisPhase.inconclusive, 2)
    assert replay(spec(count=5, inconclusive_limit=1), ["inconclusive", "successful", "inconclusive"]) == (
        AnalysisPhase.inconclusive,
        3,
    )
    assert replay(spec(count=3, inconclusive_limit=1), ["inconclusive", "successful", "successful"]) == (
        AnalysisPhase.successful,
        3,
    )


def test_consecutive_error_limit_and_errors_do_not_count() -> None:
    s = spec(count=2)  # consecutive_error_limit defaults to 4, as in Argo
    assert s.consecutive_error_limit == 4
    assert replay(s, ["error"] * 4) == (AnalysisPhase.running, 4)
    assert replay(s, ["error"] * 5) == (AnalysisPhase.error, 5)
    # errors are retried and do not count towards `count`; a non-error resets the streak
    assert replay(s, ["successful", "error", "error", "error", "error", "successful"]) == (AnalysisPhase.successful, 6)
    assert replay(spec(count=10, consecutive_error_limit=1), ["error", "successful", "error", "error"]) == (
        AnalysisPhase.error,
        4,
    )


def test_error_retry_interval_is_min_of_interval_and_ten_seconds() -> None:
    state = AnalysisState.for_spec(spec(count=3))
    state.record("error")
    assert state.next_delay(timedelta(minutes=1)) == timedelta(seconds=10)
    assert state.next_delay(timedelta(seconds=2)) == timedelta(seconds=2)
    state.record("successful")
    assert state.next_delay(timedelta(minutes=1)) == timedelta(minutes=1)


def test_failure_is_checked_before_inconclusive_and_error() -> None:
    state = AnalysisState.for_spec(spec(count=5, inconclusive_limit=5))
    state.record("inconclusive")
    assert state.record("failed") is AnalysisPhase.failed
    assert "failure_limit 0" in state.summary()


def test_count_reached_without_a_success_is_inconclusive_not_successful() -> None:
    """Fail-safe deviation 2: Argo would call this run Successful."""
    phase, _ = replay(spec(count=2, inconclusive_limit=5), ["inconclusive", "inconclusive"])
    assert phase is AnalysisPhase.inconclusive


def test_open_ended_analysis_runs_until_terminated() -> None:
    state = AnalysisState.for_spec(spec(count=0))
    for _ in range(50):
        assert state.record("successful") is AnalysisPhase.running
    assert state.terminate() is AnalysisPhase.successful

    errored = AnalysisState.for_spec(spec(count=0))
    errored.record("successful")
    errored.record("error")
    assert errored.terminate() is AnalysisPhase.inconclusive  # latest news was an error

    unmeasured = AnalysisState.for_spec(spec(count=0))
    assert unmeasured.terminate() is AnalysisPhase.inconclusive  # never measured: not a pass


def test_dry_run_never_stops_the_canary() -> None:
    s = spec(count=3, dry_run=True)
    phase, _ = replay(s, ["failed"])
    assert phase is AnalysisPhase.failed  # still measured and shown as failed...
    assert not stops_canary(phase, dry_run=True)  # ...but never acts
    assert stops_canary(phase, dry_run=False)
    assert stops_canary(AnalysisPhase.error, dry_run=False)
    assert not stops_canary(AnalysisPhase.inconclusive, dry_run=False)  # inconclusive pauses instead


# --------------------------------------------------------------------------- properties

limits = st.integers(min_value=0, max_value=6)


@settings(max_examples=400, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=6),
    failure_limit=limits,
    inconclusive_limit=limits,
    error_limit=limits,
    verdicts=st.lists(st.sampled_from(["error", "inconclusive", "failed"]), max_size=40),
    terminate=st.booleans(),
)
def test_no_sequence_without_a_success_is_ever_successful(
    count: int, failure_limit: int, inconclusive_limit: int, error_limit: int, verdicts: list, terminate: bool
) -> None:
    state = AnalysisState.for_spec(
        spec(
            count=count,
            failure_limit=failure_limit,
            inconclusive_limit=inconclusive_limit,
            consecutive_error_limit=error_limit,
        )
    )
    for verdict in verdicts:
        if state.record(verdict).completed:
            break
        assert state.phase is AnalysisPhase.running
    if terminate:
        state.terminate()
    assert state.phase is not AnalysisPhase.successful


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=6),
    failure_limit=limits,
    verdicts=st.lists(st.sampled_from(["successful", "failed", "inconclusive", "error"]), min_size=1, max_size=40),
)
def test_failed_exactly_when_failures_exceed_the_limit_first(count: int, failure_limit: int, verdicts: list) -> None:
    s = spec(count=count, failure_limit=failure_limit, inconclusive_limit=100, consecutive_error_limit=100)
    phase, used = replay(s, verdicts)
    taken = verdicts[:used]
    assert (phase is AnalysisPhase.failed) == (taken.count("failed") > failure_limit)
    if phase is AnalysisPhase.successful:
        assert len([v for v in taken if v != "error"]) == count and "successful" in taken
