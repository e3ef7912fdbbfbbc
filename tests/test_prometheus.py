"""run_analysis and the statistical judge against a REAL Prometheus scraping the example service.

The good and bad builds of examples/service are built with its build.py, run as processes,
given steady traffic, and registered for scraping through a file_sd target file in the same
format the local deploy target writes (labels service, digest, version, track). Prometheus
scrapes every second. Nothing on the Prometheus side is faked.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.judge import classify, judge, pair_series, remove_outliers
from activities.prometheus import PrometheusActivities, parse_instant, promql_string, render_query
from signoff.config import Settings
from signoff.models import AnalysisRequest, AnalysisSpec, CanarySpec, JudgeSpec
from tests.prom import PrometheusServer, free_port, start_prometheus, write_targets
from tests.test_canary_runner import CanaryHarness, DeployRecorder, HarnessInput

REPO = Path(__file__).resolve().parent.parent
SERVICE_DIR = REPO / "examples" / "service"

ERROR_RATE = (
    'sum(rate(http_requests_total{{service="{{service}}",{sel},code=~"5.."}}[5s]))'
    ' / sum(rate(http_requests_total{{service="{{service}}",{sel}}}[5s]))'
)
CANARY_ERROR_RATE = ERROR_RATE.format(sel='digest="{digest}"')


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("example_service_build", SERVICE_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Service:
    """One running artifact of the example service, with a steady trickle of requests."""

    def __init__(self, artifact: Path, digest: str) -> None:
        self.digest = digest
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(artifact), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        deadline = time.monotonic() + 15
        while not self._get("/healthz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"example service {artifact} did not start")
            time.sleep(0.05)

    def _get(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return True  # a 500 from the bad build is still an answer
        except OSError:
            return False

    def start_traffic(self, threads: int = 2, pause: float = 0.04) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self._get("/")
                self._stop.wait(pause)

        for _ in range(threads):
            thread = threading.Thread(target=loop, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class Stack:
    def __init__(self, prom: PrometheusServer, good: Service, bad: Service) -> None:
        self.prom, self.good, self.bad = prom, good, bad
        self.activities = PrometheusActivities(Settings(prometheus_url=prom.url))

    def request(self, spec: AnalysisSpec, *, digest: str, service: str = "checkout", name: str = "error-rate") -> AnalysisRequest:
        return AnalysisRequest(
            release_id="rel-test", name=name, spec=spec, service=service, digest=digest, version=digest.split(":")[1][:12]
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """good (stable) and bad (canary) builds of checkout, scraped every second by a real Prometheus."""
    tmp = tmp_path_factory.mktemp("prom-stack")
    build = _build_module()
    digests = {flavour: build.build(flavour, tmp / f"{flavour}.pyz") for flavour in ("good", "bad")}
    services: list[Service] = []
    prom: PrometheusServer | None = None
    try:
        good = Service(tmp / "good.pyz", digests["good"])
        services.append(good)
        bad = Service(tmp / "bad.pyz", digests["bad"])
        services.append(bad)
        targets = tmp / "state" / "prometheus" / "targets"
        groups = []
        for svc, track in ((good, "stable"), (bad, "canary")):
            labels = {"service": "checkout", "digest": svc.digest, "version": svc.digest.split(":")[1][:12], "track": track}
            groups.append({"targets": [f"127.0.0.1:{svc.port}"], "labels": labels})
        prom = start_prometheus(tmp, file_sd_dir=targets)
        write_targets(targets / "checkout.json", groups)  # picked up while running, like a deploy
        for svc in services:
            svc.start_traffic()
        prom.wait_for('sum by (digest) (rate(http_requests_total{service="checkout"}[5s])) > 0', at_least=2, timeout=30)
        yield Stack(prom, good, bad)
    finally:
        if prom is not None:
            prom.stop()
        for svc in services:
            svc.stop()


# --------------------------------------------------------------------------- thresholds


def test_error_rate_is_successful_for_good_and_failed_for_bad(stack: Stack) -> None:
    spec = AnalysisSpec(query=CANARY_ERROR_RATE, success={"less_than": 0.05})
    good = stack.activities.measure(stack.request(spec, digest=stack.good.digest))
    bad = stack.activities.measure(stack.request(spec, digest=stack.bad.digest))
    assert good.verdict == "successful", good.message
    assert good.value == 0.0
    assert bad.verdict == "failed", bad.message
    assert bad.value is not None and 0.15 < bad.value < 0.45  # the bad build fails 30 % of requests
    assert "does not meet the success condition < 0.05" in bad.message
    assert good.at is not None and bad.at is not None


def test_version_placeholder_selects_the_series_by_label(stack: Stack) -> None:
    spec = AnalysisSpec(query=ERROR_RATE.format(sel='version="{version}"'), failure={"greater_than": 0.1})
    bad = stack.activities.measure(stack.request(spec, digest=stack.bad.digest))
    assert bad.verdict == "failed" and bad.value is not None and bad.value > 0.1, bad.message


def test_empty_result_is_inconclusive(stack: Stack) -> None:
    spec = AnalysisSpec(query=CANARY_ERROR_RATE, success={"less_than": 0.05})
    unknown = "sha256:" + "f" * 64  # nothing serves this digest
    m = stack.activities.measure(stack.request(spec, digest=unknown))
    assert m.verdict == "inconclusive" and m.value is None
    assert "empty vector" in m.message


def test_nan_is_inconclusive_not_success(stack: Stack) -> None:
    # 5xx rate / 5xx rate for the good build: 0/0 = NaN. A naive `< 0.05` check would not fail it.
    nan_query = (
        'sum(rate(http_requests_total{service="{service}",digest="{digest}",code="500"}[5s]))'
        ' / sum(rate(http_requests_total{service="{service}",digest="{digest}",code="500"}[5s]))'
    )
    assert math.isnan(float(stack.prom.query(render_query(nan_query, service="checkout", digest=stack.good.digest, version=""))[0]["value"][1]))
    spec = AnalysisSpec(query=nan_query, success={"less_than": 0.05}, failure={"greater_than": 0.5})
    m = stack.activities.measure(stack.request(spec, digest=stack.good.digest))
    assert m.verdict == "inconclusive" and m.value is None
    assert "nan" in m.message


def test_several_series_are_an_error_not_a_guess(stack: Stack) -> None:
    spec = AnalysisSpec(query='sum by (digest) (rate(http_requests_total{service="{service}"}[5s]))', success={"greater_than": 0})
    m = stack.activities.measure(stack.request(spec, digest=stack.good.digest))
    assert m.verdict == "error" and "2 series" in m.message and "aggregate" in m.message


def test_bad_promql_is_an_error_with_prometheus_reason(stack: Stack) -> None:
    spec = AnalysisSpec(query='sum(rate(http_requests_total{service="{service}"}[5s])', success={"less_than": 1})
    m = stack.activities.measure(stack.request(spec, digest=stack.good.digest))
    assert m.verdict == "error" and "bad_data" in m.message and "parse error" in m.message


def test_injected_label_value_stays_a_string(stack: Stack) -> None:
    """A hostile version cannot turn the query into `... or vector(0)` and fake a success."""
    spec = AnalysisSpec(query=ERROR_RATE.format(sel='version="{version}"'), success={"less_than": 0.05})
    request = stack.request(spec, digest=stack.bad.digest).model_copy(update={"version": 'x"} or vector(0) or x{a="'})
    m = stack.activities.measure(request)
    assert m.verdict == "inconclusive" and "empty vector" in m.message
    request = request.model_copy(update={"version": "`"})
    m = stack.activities.measure(request)
    assert m.verdict == "error" and "backtick" in m.message


def test_prometheus_down_is_inconclusive_never_success(tmp_path: Path) -> None:
    prom = start_prometheus(tmp_path)
    try:
        activities = PrometheusActivities(Settings(prometheus_url=prom.url))
        spec = AnalysisSpec(query="vector(0)", success={"less_than": 0.05})
        request = AnalysisRequest(release_id="r", name="error-rate", spec=spec, service="checkout", digest="sha256:" + "a" * 64)
        assert activities.measure(request).verdict == "successful"  # it answers while it is up
        prom.stop()
        started = time.monotonic()
        down = activities.measure(request)
        assert down.verdict == "inconclusive" and down.value is None
        assert "unreachable" in down.message and "SIGNOFF_PROMETHEUS_URL" in down.message
        assert time.monotonic() - started < 5  # no hidden retry/backoff delaying the verdict
    finally:
        prom.stop()


# --------------------------------------------------------------------------- judge


def _judge_spec(**kw: Any) -> JudgeSpec:
    base = {"baseline_query": ERROR_RATE.format(sel='track="stable"'), "window": timedelta(seconds=30), "step": timedelta(seconds=1)}
    return JudgeSpec(**{**base, **kw})


def _wait_for_points(stack: Stack, points: int = 8, timeout: float = 20.0) -> None:
    canary_rate = render_query(ERROR_RATE.format(sel='track="canary"'), service="checkout", digest="", version="")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        series = stack.prom.query(f"count_over_time(({canary_rate})[30s:1s])")
        if series and float(series[0]["value"][1]) >= points:
            return
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {points} points of the error-rate series after {timeout}s")


def test_judge_fails_the_bad_canary_against_the_good_baseline(stack: Stack) -> None:
    _wait_for_points(stack)
    spec = AnalysisSpec(query=ERROR_RATE.format(sel='track="canary"'), judge=_judge_spec())
    m = stack.activities.measure(stack.request(spec, digest=stack.bad.digest))
    assert m.verdict == "failed", m.message
    assert m.value == 0.0  # the score: no series passed
    assert "→ high" in m.message
    assert "fewer than 50" in m.message  # a 30 s window at 1 s has under 50 points


def test_judge_passes_when_canary_matches_baseline_and_respects_direction(stack: Stack) -> None:
    _wait_for_points(stack)
    same = AnalysisSpec(query=ERROR_RATE.format(sel='track="stable"'), judge=_judge_spec())
    m = stack.activities.measure(stack.request(same, digest=stack.good.digest))
    assert m.verdict == "successful" and m.value == 100.0, m.message
    # only decreases count against this metric: the bad build's higher error rate passes
    decrease = AnalysisSpec(query=ERROR_RATE.format(sel='track="canary"'), judge=_judge_spec(direction="decrease"))
    m = stack.activities.measure(stack.request(decrease, digest=stack.bad.digest))
    assert m.verdict == "successful", m.message


def test_judge_combined_with_a_condition_takes_the_worse_verdict(stack: Stack) -> None:
    _wait_for_points(stack)
    spec = AnalysisSpec(
        query=ERROR_RATE.format(sel='track="canary"'), success={"less_than": 0.9}, judge=_judge_spec()
    )
    m = stack.activities.measure(stack.request(spec, digest=stack.bad.digest))
    assert m.verdict == "failed"  # the threshold alone would pass (0.3 < 0.9); the judge does not
    assert m.value is not None and 0.15 < m.value < 0.45  # the value shown is the measured one


def test_judge_without_data_is_inconclusive(stack: Stack) -> None:
    spec = AnalysisSpec(query='sum(rate(http_requests_total{digest="{digest}"}[5s]))', judge=_judge_spec())
    m = stack.activities.measure(stack.request(spec, digest="sha256:" + "e" * 64))
    assert m.verdict == "inconclusive" and m.value is None and "never taken as success" in m.message


# --------------------------------------------------------------------------- the canary on real metrics


@pytest.mark.parametrize("flavour", ["good", "bad"])
async def test_canary_promotes_good_and_fails_bad_on_real_metrics(
    stack: Stack, skip_env: WorkflowEnvironment, task_queue: str, flavour: str
) -> None:
    spec = CanarySpec.model_validate(
        {
            "steps": [{"set_weight": 10}, {"analysis": ["error-rate"]}, {"set_weight": 50}, {"analysis": ["error-rate"]}],
            "analyses": {"error-rate": {"query": CANARY_ERROR_RATE, "interval": "PT2S", "count": 2, "success": {"less_than": 0.05}}},
        }
    )
    digest = stack.good.digest if flavour == "good" else stack.bad.digest
    async with Worker(skip_env.client, task_queue=task_queue, workflows=[CanaryHarness], activities=[stack.activities.run_analysis, DeployRecorder().set_weight]):
        view = await skip_env.client.execute_workflow(
            CanaryHarness.run,
            HarnessInput(spec=spec, digest=digest),
            id=f"canary-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=10),
        )
    assert view.outcome is not None
    if flavour == "good":
        assert view.outcome.result == "promoted" and view.deploys == [10, 50]
        assert [m.verdict for m in view.status.analyses] == ["successful"] * 4
    else:
        assert view.outcome.result == "failed" and view.deploys == [10]  # rolled back at the first analysis
        assert view.outcome.step == 2 and "does not meet the success condition < 0.05" in view.outcome.reason
        assert [(m.verdict, m.step) for m in view.status.analyses] == [("failed", 2)]
        assert view.status.analyses[0].value is not None and view.status.analyses[0].value >= 0.05  # meets the failure condition


async def test_prometheus_down_mid_canary_is_never_promoted(
    tmp_path: Path, skip_env: WorkflowEnvironment, task_queue: str
) -> None:
    prom = start_prometheus(tmp_path)
    activities = PrometheusActivities(Settings(prometheus_url=prom.url))
    spec = CanarySpec.model_validate(
        {
            "steps": [
                {"set_weight": 10},
                {"analysis": ["up"]},
                {"pause": {"duration": "PT10M"}},
                {"set_weight": 50},
                {"analysis": ["up"]},
            ],
            "analyses": {"up": {"query": "vector(0)", "interval": "PT2S", "count": 2, "success": {"less_than": 0.05}}},
            "inconclusive_deadline": "PT1M",
        }
    )
    try:
        async with Worker(skip_env.client, task_queue=task_queue, workflows=[CanaryHarness], activities=[activities.run_analysis, DeployRecorder().set_weight]):
            handle = await skip_env.client.start_workflow(
                CanaryHarness.run,
                HarnessInput(spec=spec),
                id=f"canary-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                execution_timeout=timedelta(minutes=30),
            )
            deadline = time.monotonic() + 30
            while not (await handle.query(CanaryHarness.state)).status.paused:
                assert time.monotonic() < deadline, "the first analysis never finished"
                await skip_env.sleep(timedelta(seconds=1))
            prom.stop()  # Prometheus dies during the pause between the first and the second analysis
            view = await handle.result()
    finally:
        prom.stop()
    # Unreachable is inconclusive: the canary pauses and asks people; when the deadline passes
    # the policy's default (rollback) applies. It is never promoted.
    assert view.outcome is not None and view.outcome.result == "failed"
    assert view.deploys == [10, 50]
    verdicts = [(m.step, m.verdict) for m in view.status.analyses]
    assert verdicts == [(2, "successful"), (2, "successful"), (5, "inconclusive")]
    assert "unreachable" in view.status.analyses[-1].message
    assert "inconclusive" in view.outcome.reason


# --------------------------------------------------------------------------- pure helpers


def test_placeholders_are_replaced_and_escaped() -> None:
    template = 'x{service="{service}",digest="{digest}",version="{version}"}'
    rendered = render_query(template, service="checkout", digest="sha256:ab", version='1"2\\3\n')
    assert rendered == 'x{service="checkout",digest="sha256:ab",version="1\\"2\\\\3\\n"}'
    assert promql_string("it's") == "it\\'s"
    with pytest.raises(ValueError, match="backtick"):
        promql_string("a`b")
    assert render_query("sum(x{a=~\"{b}\"})", service="s", digest="d", version="v") == 'sum(x{a=~"{b}"})'


def test_parse_instant_shapes() -> None:
    assert parse_instant([1.0, "0.5"]) == 0.5  # scalar
    assert parse_instant([]) is None
    assert parse_instant([{"metric": {}, "value": [1.0, "2"]}]) == 2.0
    assert math.isnan(parse_instant([{"metric": {}, "value": [1.0, "NaN"]}]) or 0.0)


def test_judge_rules_without_prometheus() -> None:
    spec = JudgeSpec(baseline_query="b", allowed_effect=0.5)
    base = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95] * 10
    slightly = [v * 1.2 for v in base]  # significant but within the allowed 50 % effect
    much = [v * 2.0 for v in base]
    assert classify(slightly, base, spec).classification == "pass"
    assert classify(much, base, spec).classification == "high"
    assert classify([1.0, 2.0], base, spec).classification == "nodata"
    # zero IQR keeps rare spikes: they are the signal in an error-rate series
    assert remove_outliers([0, 0, 0, 0, 0, 0, 5]) == [0, 0, 0, 0, 0, 0, 5]
    assert 100.0 not in remove_outliers([1, 2, 3, 2, 1, 2, 3, 2, 100])
    # two series on each side pair by labels, ignoring the track/digest labels
    pairs = pair_series(
        [({"code": "500", "track": "canary"}, [1.0]), ({"code": "200", "track": "canary"}, [2.0])],
        [({"code": "200", "track": "stable"}, [3.0]), ({"code": "500", "track": "stable"}, [4.0])],
    )
    assert sorted((p[0]["code"], p[1], p[2]) for p in pairs) == [("200", [2.0], [3.0]), ("500", [1.0], [4.0])]
    result = judge([({}, much)], [({}, base)], JudgeSpec(baseline_query="b"))
    assert result.verdict == "failed" and result.score == 0.0 and not result.warnings
    marginal = judge(
        [({"q": str(i)}, base) for i in range(4)] + [({"q": "4"}, much)],
        [({"q": str(i)}, base) for i in range(5)],
        JudgeSpec(baseline_query="b", pass_score=95, marginal_score=75),
    )
    assert marginal.score == 80.0 and marginal.verdict == "inconclusive"
    empty = judge([], [], JudgeSpec(baseline_query="b"))
    assert empty.score is None and empty.verdict == "inconclusive"
