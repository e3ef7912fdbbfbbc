"""The canary's measurements as an inline SVG chart, rendered on the server.

No chart library and no script: the page must work on networks without internet and under a
Content-Security-Policy that forbids scripts. Each measurement is a point, each numeric bound
of the analysis' success and failure conditions a horizontal line, and a failed measurement a
red cross, so a reader sees at once which value crossed which threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from signoff.models import AnalysisSpec, Condition, Measurement

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
VERDICT_COLOURS = {"successful": "#1a7f37", "failed": "#cf222e", "inconclusive": "#8c959f", "error": "#9a6700"}


@dataclass(frozen=True)
class Threshold:
    """One bound of a condition: ``failure ≥ 0.05`` is kind failure, op ≥, value 0.05."""

    kind: str
    op: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.kind} {self.op} {self.value:g}"


def thresholds_of(spec: AnalysisSpec | None) -> list[Threshold]:
    """Every numeric bound of the analysis' success and failure conditions."""
    if spec is None:
        return []
    found: list[Threshold] = []
    for kind, condition in (("success", spec.success), ("failure", spec.failure)):
        found.extend(_bounds(kind, condition))
    return found


def _bounds(kind: str, condition: Condition | None) -> list[Threshold]:
    if condition is None:
        return []
    ops = {"less_than": "<", "less_than_or_equal": "≤", "greater_than": ">", "greater_than_or_equal": "≥", "equals": "="}
    found = [Threshold(kind, op, float(getattr(condition, name))) for name, op in ops.items() if getattr(condition, name) is not None]
    if condition.in_range is not None:
        low, high = condition.in_range
        found += [Threshold(kind, "≥", float(low)), Threshold(kind, "≤", float(high))]
    return found


def measurement_chart(metric: str, measurements: list[Measurement], thresholds: list[Threshold]) -> str:
    """An SVG document fragment: the metric's measurements in order against its thresholds.

    Measurements without a value (inconclusive: no data) are drawn as hollow markers on the
    axis, so a warm-up with empty answers is visible instead of silently missing.
    """
    values = [m.value for m in measurements if m.value is not None] + [t.value for t in thresholds]
    top = max(values + [0.0]) * 1.15 or 1.0
    bottom = min(values + [0.0])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / max(len(measurements), 1))

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - bottom) / ((top - bottom) or 1.0))

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'data-metric="{escape(metric)}" aria-label="{escape(metric)}: {len(measurements)} measurement(s)">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa" stroke="#d0d7de"/>',
    ]
    for tick in (bottom, (bottom + top) / 2, top):
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.3g}</text>')
    for t in thresholds:
        colour = VERDICT_COLOURS["failed" if t.kind == "failure" else "successful"]
        parts.append(
            f'<line class="threshold" data-kind="{t.kind}" data-threshold="{t.value:g}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{y(t.value):.1f}" y2="{y(t.value):.1f}" stroke="{colour}" stroke-dasharray="6 4"><title>{escape(t.label)}</title></line>'
        )
        # success bounds are labelled on the left, failure bounds on the right: they often share a value
        anchor, at_x = ("start", LEFT + 4) if t.kind == "success" else ("end", WIDTH - RIGHT - 4)
        parts.append(f'<text x="{at_x}" y="{y(t.value) - 4:.1f}" text-anchor="{anchor}" font-size="11" fill="{colour}">{escape(t.label)}</text>')
    for i, m in enumerate(measurements):
        parts.append(_point(x(i), y(m.value) if m.value is not None else TOP + plot_h, m))
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="10">{i + 1}{f" · s{m.step}" if m.step is not None else ""}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11">measurement · canary step</text>')
    parts.append("</svg>")
    return "".join(parts)


def _point(cx: float, cy: float, m: Measurement) -> str:
    colour = VERDICT_COLOURS.get(m.verdict, "#57606a")
    shown = "no value" if m.value is None else f"{m.value:.4g}"
    title = escape(f"{m.metric} #{m.step if m.step is not None else '?'}: {shown}, {m.verdict} at {m.at.isoformat() if m.at else '?'} — {m.message}")
    data = (
        f'class="point {escape(m.verdict)}" data-verdict="{escape(m.verdict)}" data-value="{"" if m.value is None else repr(m.value)}" '
        f'data-step="{"" if m.step is None else m.step}"'
    )
    if m.value is None:
        return f'<circle {data} cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="none" stroke="{colour}"><title>{title}</title></circle>'
    if m.verdict == "failed":
        d = 6
        return (
            f'<g {data} transform="translate({cx:.1f} {cy:.1f})" stroke="{colour}" stroke-width="3"><title>{title}</title>'
            f'<line x1="{-d}" y1="{-d}" x2="{d}" y2="{d}"/><line x1="{-d}" y1="{d}" x2="{d}" y2="{-d}"/></g>'
        )
    return f'<circle {data} cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}"><title>{title}</title></circle>'
