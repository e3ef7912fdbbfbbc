"""Kayenta-style statistical judge: is the canary's series worse than the baseline's?

Threshold conditions catch an obviously broken canary; they miss a latency regression of 20 %
that never crosses a fixed line. The judge compares the canary's samples with the baseline's over
the same window with a Mann-Whitney U test (no normality assumption, robust to the skewed
distributions of latencies and error rates), as Kayenta's MannWhitneyClassifier does:

- non-finite samples are dropped and outliers removed with Tukey's fences (1.5 × IQR) — unless
  the IQR is zero, where fences would throw away every rare error and hide exactly the signal
  we are looking for;
- each series is classified Pass / High / Low / NoData: High (Low) means the canary is
  significantly greater (smaller) at `alpha` *and* the Hodges-Lehmann shift exceeds the allowed
  effect; only the configured `direction` counts against the canary;
- the score is the percentage of classified series that pass; `pass_score` and `marginal_score`
  map it to successful / inconclusive / failed, and no classifiable series at all is
  inconclusive (never success);
- fewer than 50 points per side gives a warning in the message: the test has little power.

Effect size: the Hodges-Lehmann estimate of the shift (median of all pairwise differences)
relative to the baseline's median, e.g. 0.1 = 10 % worse; when the baseline median is 0 (an error
rate with no errors) a relative change is undefined and the absolute shift is used instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from scipy.stats import mannwhitneyu

from signoff.models import JudgeSpec

Classification = Literal["pass", "high", "low", "nodata"]
Verdict = Literal["successful", "failed", "inconclusive", "error"]

MIN_POINTS = 3
"""Fewer points than this on either side and no test is attempted (NoData)."""
WARN_POINTS = 50
"""Kayenta's advice: below this the comparison has little statistical power."""

# Labels that tell the canary's series from the baseline's; ignored when pairing series.
TRACK_LABELS = frozenset({"__name__", "digest", "track", "instance", "job", "version", "pod"})


@dataclass
class SeriesJudgement:
    labels: dict[str, str]
    classification: Classification
    n_canary: int = 0
    n_baseline: int = 0
    p_value: float | None = None
    shift: float | None = None
    effect: float | None = None
    canary_median: float | None = None
    baseline_median: float | None = None

    def describe(self) -> str:
        name = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())) + "}"
        if self.classification == "nodata":
            return f"{name}: no data to compare ({self.n_canary} canary, {self.n_baseline} baseline points)"
        return (
            f"{name}: canary median {self.canary_median:g} vs baseline {self.baseline_median:g}, "
            f"effect {self.effect:+.3g}, p={self.p_value:.3g} → {self.classification}"
        )


@dataclass
class JudgeResult:
    score: float | None
    verdict: Verdict
    series: list[SeriesJudgement] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def message(self, spec: JudgeSpec) -> str:
        if self.score is None:
            head = "judge: no series could be compared, which is never taken as success"
        else:
            passed = sum(1 for s in self.series if s.classification == "pass")
            scored = sum(1 for s in self.series if s.classification != "nodata")
            head = (
                f"judge score {self.score:g} (pass ≥ {spec.pass_score:g}, marginal ≥ {spec.marginal_score:g}): "
                f"{passed} of {scored} series passed"
            )
        parts = [head] + [s.describe() for s in self.series] + [f"warning: {w}" for w in self.warnings]
        return "; ".join(parts)


def finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def remove_outliers(values: Sequence[float]) -> list[float]:
    """Tukey's fences; keeps everything when the IQR is 0 (see the module docstring)."""
    clean = finite(values)
    if len(clean) < 4:
        return clean
    q1, q3 = np.percentile(clean, [25, 75])
    iqr = q3 - q1
    if iqr == 0:
        return clean
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    return [v for v in clean if low <= v <= high]


def hodges_lehmann(canary: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of all pairwise differences canary_i − baseline_j: a robust estimate of the shift."""
    diffs = np.subtract.outer(np.asarray(canary, dtype=float), np.asarray(baseline, dtype=float))
    return float(np.median(diffs))


def classify(canary: Sequence[float], baseline: Sequence[float], spec: JudgeSpec, labels: dict[str, str] | None = None) -> SeriesJudgement:
    """Kayenta's per-metric classification of one canary/baseline pair."""
    c, b = remove_outliers(canary), remove_outliers(baseline)
    result = SeriesJudgement(labels=labels or {}, classification="nodata", n_canary=len(c), n_baseline=len(b))
    if len(c) < MIN_POINTS or len(b) < MIN_POINTS:
        return result
    alternative = {"increase": "greater", "decrease": "less", "either": "two-sided"}[spec.direction]
    if len(set(c) | set(b)) == 1:
        p_value = 1.0  # identical constant samples: nothing to detect (scipy would warn)
    else:
        p_value = float(mannwhitneyu(c, b, alternative=alternative).pvalue)
    shift = hodges_lehmann(c, b)
    baseline_median = float(np.median(b))
    effect = shift / abs(baseline_median) if baseline_median != 0 else shift
    result.p_value, result.shift, result.effect = p_value, shift, effect
    result.canary_median, result.baseline_median = float(np.median(c)), baseline_median
    significant = p_value < spec.alpha and abs(effect) > spec.allowed_effect
    if significant and shift > 0 and spec.direction in ("increase", "either"):
        result.classification = "high"
    elif significant and shift < 0 and spec.direction in ("decrease", "either"):
        result.classification = "low"
    else:
        result.classification = "pass"
    return result


def _key(labels: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items() if k not in TRACK_LABELS))


def pair_series(
    canary: list[tuple[dict[str, str], list[float]]], baseline: list[tuple[dict[str, str], list[float]]]
) -> list[tuple[dict[str, str], list[float], list[float]]]:
    """Match canary and baseline series by their labels, ignoring the labels that tell them apart.

    One series on each side always pairs. A series with no partner is kept with an empty side so
    it shows up as NoData instead of disappearing.
    """
    if len(canary) == 1 and len(baseline) == 1:
        return [(dict(_key(canary[0][0])), canary[0][1], baseline[0][1])]
    base = {_key(labels): values for labels, values in baseline}
    pairs: list[tuple[dict[str, str], list[float], list[float]]] = []
    for labels, values in canary:
        key = _key(labels)
        pairs.append((dict(key), values, base.pop(key, [])))
    for key, values in base.items():
        pairs.append((dict(key), [], values))
    return pairs


def judge(
    canary: list[tuple[dict[str, str], list[float]]],
    baseline: list[tuple[dict[str, str], list[float]]],
    spec: JudgeSpec,
) -> JudgeResult:
    """Score the canary against the baseline (0–100) and map the score to a verdict."""
    series = [classify(c, b, spec, labels) for labels, c, b in pair_series(canary, baseline)]
    warnings = [
        f"only {min(s.n_canary, s.n_baseline)} data points for {s.describe().split(':')[0]} "
        f"(fewer than {WARN_POINTS}); the comparison has little statistical power"
        for s in series
        if s.classification != "nodata" and min(s.n_canary, s.n_baseline) < WARN_POINTS
    ]
    scored = [s for s in series if s.classification != "nodata"]
    if not scored:
        return JudgeResult(score=None, verdict="inconclusive", series=series, warnings=warnings)
    score = round(100.0 * sum(1 for s in scored if s.classification == "pass") / len(scored), 2)
    if score >= spec.pass_score:
        verdict: Verdict = "successful"
    elif score >= spec.marginal_score:
        verdict = "inconclusive"
    else:
        verdict = "failed"
    return JudgeResult(score=score, verdict=verdict, series=series, warnings=warnings)
