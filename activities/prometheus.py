"""Canary measurements from Prometheus: the `run_analysis` activity.

One call is one measurement. Everything that goes wrong on the way is *reported as a verdict*
instead of raised, because the workflow's analysis state machine (workflows/canary.py) decides
what a run of errors means (`consecutive_error_limit`), and because an error must be visible in
ReleaseStatus when it happens:

| what Prometheus said                            | verdict       |
|-------------------------------------------------|---------------|
| unreachable (no answer at all)                  | inconclusive  |
| HTTP error, bad PromQL                          | error         |
| more than one series (ambiguous), range vector  | error         |
| empty vector                                    | inconclusive  |
| NaN or ±Inf (e.g. 0/0 with no traffic)          | inconclusive  |
| one finite value                                | the conditions decide (same pure `evaluate` as the state machine) |

An empty vector or NaN is never success: that is the fail-safe rule of the design.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from temporalio import activity
from urllib3.util.retry import Retry

from activities.judge import judge
from signoff.config import Settings
from signoff.models import AnalysisRequest, JudgeSpec, Measurement
from workflows.canary import Verdict, describe_conditions, evaluate

PLACEHOLDER = re.compile(r"\{(service|digest|version)\}")
_SEVERITY: dict[str, int] = {"successful": 0, "inconclusive": 1, "error": 2, "failed": 3}


class QueryError(Exception):
    """Prometheus could not answer the query; the message is one sentence for ReleaseStatus."""


class PrometheusUnreachable(QueryError):
    """No answer at all: the measuring system failed, not the canary. The measurement is
    inconclusive (the canary pauses and asks people), never an error that rolls back by itself
    and never a success."""


def promql_string(value: str) -> str:
    """Escape `value` for a double- or single-quoted PromQL string literal.

    Backticks (raw strings) cannot be escaped in PromQL, so a value containing one is refused
    rather than allowed to end a raw string and change the query.
    """
    if "`" in value:
        raise ValueError(f"the value {value!r} contains a backtick, which cannot be safely put into a PromQL query")
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def render_query(template: str, *, service: str, digest: str, version: str) -> str:
    """Replace exactly `{service}`, `{digest}` and `{version}`; every other brace is PromQL's own."""
    values = {"service": service, "digest": digest, "version": version}
    return PLACEHOLDER.sub(lambda m: promql_string(values[m.group(1)]), template)


def parse_instant(result: Any) -> float | None:
    """The single value of an instant query result (vector or scalar); None for an empty vector.

    Raises QueryError when the answer is ambiguous (several series) or not an instant value.
    """
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return float(result[1])  # scalar / string result: [timestamp, "value"]
    if not isinstance(result, list):
        raise QueryError(f"Prometheus returned an unexpected result {result!r}; use a query that returns one number")
    if not result:
        return None
    if any("value" not in item for item in result):
        raise QueryError("the query returned a range vector; use an instant query such as rate(x[1m]) instead of x[1m]")
    if len(result) > 1:
        shown = ", ".join(str(item.get("metric", {})) for item in result[:3])
        raise QueryError(
            f"the query returned {len(result)} series ({shown}...), which is ambiguous; aggregate it, e.g. sum(...)"
        )
    return float(result[0]["value"][1])


def parse_range(result: Any) -> list[tuple[dict[str, str], list[float]]]:
    if not isinstance(result, list) or any("values" not in item for item in result):
        raise QueryError("the judge's query did not return range series; use an instant-vector expression")
    return [(dict(item.get("metric", {})), [float(v) for _, v in item["values"]]) for item in result]


def _prometheus_error(e: PrometheusApiClientException) -> str:
    """Prometheus' own error text out of the client's "HTTP Status Code 400 (b'{...}')" message."""
    text = str(e)
    match = re.search(r"\((b(['\"]).*\2)\)\s*$", text, re.S)
    if match:
        try:
            body = json.loads(ast.literal_eval(match.group(1)))
            return f"{body.get('errorType', 'error')}: {body['error']}"
        except (ValueError, SyntaxError, KeyError, TypeError):
            pass
    return text


class PrometheusActivities:
    """Measurements against one Prometheus server (SIGNOFF_PROMETHEUS_URL).

    `connect` may be handed in (tests, a server needing auth headers); by default a client
    without retries is built, because the analysis interval is the retry policy and a down
    Prometheus must show up as an error now, not after a hidden backoff.
    """

    def __init__(self, settings: Settings, *, connect: PrometheusConnect | None = None, timeout: float = 10.0) -> None:
        self.url = settings.prometheus_url.rstrip("/")
        self.timeout = timeout
        self.prom = connect or PrometheusConnect(url=self.url, retry=Retry(total=0), timeout=timeout)

    @activity.defn(name="run_analysis")
    async def run_analysis(self, request: AnalysisRequest) -> Measurement:
        """AnalysisRequest → Measurement; never raises for a Prometheus problem (see module doc)."""
        return await asyncio.to_thread(self.measure, request)

    # ------------------------------------------------------------------ synchronous core

    def measure(self, request: AnalysisRequest) -> Measurement:
        """One measurement, carrying the resolved query and the conditions it was judged by, so
        every notice built from it explains itself."""
        spec = request.spec
        try:
            query = render_query(spec.query, service=request.service, digest=request.digest, version=request.version)
        except ValueError:
            query = spec.query
        return self._measure(request).model_copy(update={"query": query, "condition": describe_conditions(spec.success, spec.failure)})

    def _measure(self, request: AnalysisRequest) -> Measurement:
        spec = request.spec
        at = datetime.now(timezone.utc)
        try:
            query = render_query(spec.query, service=request.service, digest=request.digest, version=request.version)
        except ValueError as e:
            return Measurement(metric=request.name, verdict="error", at=at, message=str(e), step=request.step)

        verdict: Verdict
        value: float | None = None
        messages: list[str] = []
        has_conditions = spec.success is not None or spec.failure is not None
        if has_conditions or spec.judge is None:
            try:
                value = parse_instant(self._query(query))
            except PrometheusUnreachable as e:
                return Measurement(metric=request.name, verdict="inconclusive", at=at, message=str(e), step=request.step)
            except QueryError as e:
                return Measurement(metric=request.name, verdict="error", at=at, message=str(e), step=request.step)
            if value is None:
                verdict, text = "inconclusive", "the query returned no data (empty vector), which is never taken as success"
            else:
                verdict, text = evaluate(value, success=spec.success, failure=spec.failure)
            messages.append(text)
        else:
            verdict = "successful"
        if spec.judge is not None:
            judged, score, text = self._judge(request, query, spec.judge)
            messages.append(text)
            if not has_conditions:
                value = score
            if _SEVERITY[judged] > _SEVERITY[verdict]:
                verdict = judged
        if value is not None and not math.isfinite(value):
            value = None  # NaN/Inf do not survive JSON; the message keeps what was seen
        return Measurement(
            metric=request.name, value=value, verdict=verdict, at=at, message="; ".join(messages), step=request.step
        )

    def _query(self, query: str) -> Any:
        try:
            return self.prom.custom_query(query, timeout=self.timeout)
        except PrometheusApiClientException as e:
            raise QueryError(f"Prometheus at {self.url} refused the query {query!r}: {_prometheus_error(e)}") from e
        except requests.RequestException as e:
            raise PrometheusUnreachable(
                f"Prometheus at {self.url} is unreachable ({type(e).__name__}); check SIGNOFF_PROMETHEUS_URL and that it is running"
            ) from e
        except ValueError as e:  # not JSON: something else is listening there
            raise QueryError(f"{self.url} did not answer like a Prometheus server; check SIGNOFF_PROMETHEUS_URL") from e

    def _query_range(self, query: str, start: datetime, end: datetime, step: str) -> Any:
        try:
            return self.prom.custom_query_range(query, start_time=start, end_time=end, step=step, timeout=self.timeout)
        except PrometheusApiClientException as e:
            raise QueryError(f"Prometheus at {self.url} refused the query {query!r}: {_prometheus_error(e)}") from e
        except requests.RequestException as e:
            raise PrometheusUnreachable(
                f"Prometheus at {self.url} is unreachable ({type(e).__name__}); check SIGNOFF_PROMETHEUS_URL and that it is running"
            ) from e
        except ValueError as e:
            raise QueryError(f"{self.url} did not answer like a Prometheus server; check SIGNOFF_PROMETHEUS_URL") from e

    def _judge(self, request: AnalysisRequest, canary_query: str, spec: JudgeSpec) -> tuple[Verdict, float | None, str]:
        """Canary vs baseline series over the same window, judged by activities.judge."""
        try:
            baseline_query = render_query(
                spec.baseline_query, service=request.service, digest=request.digest, version=request.version
            )
            end = datetime.now(timezone.utc)
            start = end - spec.window
            step = f"{max(spec.step.total_seconds(), 0.001):g}s"
            canary = parse_range(self._query_range(canary_query, start, end, step))
            baseline = parse_range(self._query_range(baseline_query, start, end, step))
        except (QueryError, ValueError) as e:
            return "error", None, f"judge: {e}"
        result = judge(canary, baseline, spec)
        return result.verdict, result.score, result.message(spec)


def activities_from_settings(settings: Settings) -> list:
    return [PrometheusActivities(settings).run_analysis]
