"""Deploy-window check latency: what a release's re-check costs inside its workflow task.

A waiting release re-reads its windows (a local activity) and runs `signoff.windows.window_state`
in workflow code, which must stay far under the SDK's 2-second deadlock limit. Each sample here
does what the workflow does: validate the windows as they arrive from the activity (the rule is
parsed then) and compute the state and the next opening. Cases: a weekend deny window, business
hours as an allow window plus the weekend, and the worst case — overlapping daily deny windows
that never open, so the search runs to its one-year horizon. Baseline, same run: no windows.

    python bench/bench_windows.py [--runs 200]

Prints median and p99 per case with the ratio to the baseline; writes bench/results/windows.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from signoff.windows import WindowConfig, window_state  # noqa: E402

WEEKEND = {"name": "weekend", "kind": "deny", "rrule": "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0;BYSECOND=0", "tzid": "Europe/Berlin", "duration": "64h"}
BUSINESS = {"name": "business", "kind": "allow", "cron": "0 8 * * 1-5", "tzid": "Europe/Berlin", "duration": "10h"}
NEVER = {"name": "never", "kind": "deny", "rrule": "FREQ=DAILY;BYHOUR=0;BYMINUTE=0;BYSECOND=0", "tzid": "Europe/Berlin", "duration": "25h"}
CASES: dict[str, list[dict[str, Any]]] = {"no windows (baseline)": [], "weekend deny": [WEEKEND], "business hours + weekend": [BUSINESS, WEEKEND], "never opens (worst case)": [NEVER]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_check(windows: list[dict[str, Any]], at: datetime) -> float:
    start = time.perf_counter()
    config = WindowConfig.model_validate({"windows": windows, "freezes": []})
    window_state(config.windows, config.freezes, service="checkout", environment="production", at=at)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "windows.json")
    args = parser.parse_args()
    # Moments spread over a week, so open and closed states (and every weekday) are sampled.
    moments = [datetime(2026, 12, 4, 12, tzinfo=timezone.utc) + timedelta(minutes=97 * i) for i in range(args.runs)]
    results: dict[str, Any] = {}
    for name, windows in CASES.items():
        one_check(windows, moments[0])  # warm-up: imports and zone data
        ms = [one_check(windows, at) * 1000 for at in moments]
        results[name] = {"median_ms": round(statistics.median(ms), 3), "p99_ms": round(percentile(ms, 0.99), 3), "max_ms": round(max(ms), 3)}
    base = results["no windows (baseline)"]["median_ms"]
    print(f"window check latency over {args.runs} moments (validate + window_state, as in the workflow)")
    for name, s in results.items():
        s["median_vs_baseline"] = round(s["median_ms"] / base, 1) if base else None
        print(f"  {name:<28} median {s['median_ms']:8.3f} ms   p99 {s['p99_ms']:8.3f} ms   ×{s['median_vs_baseline']} baseline")
    doc = {"benchmark": "deploy-window check latency", "runs": args.runs, "python": platform.python_version(), "machine": platform.machine(), "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
