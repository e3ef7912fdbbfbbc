"""Run every benchmark in bench/ one after another, then print a summary from bench/results/*.json.

Sequential on purpose: each benchmark starts its own Temporal dev server and measures against
a same-run baseline, and two at once on a small machine would measure each other.

    python bench/run_all.py [--quick] [--only approval,release_overhead] [--summary-only]

Independent of the `signoff` CLI: it only runs `python bench/bench_*.py`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

# (name, script, results file, extra args for --quick, per-run time bound in seconds)
BENCHMARKS: list[tuple[str, str, str, list[str], int]] = [
    ("policy", "bench_policy.py", "policy.json", ["--runs", "200"], 300),
    ("approval", "bench_approval.py", "approval.json", ["--quick"], 600),
    ("slack", "bench_slack.py", "slack.json", ["--n", "20"], 600),
    ("release_overhead", "bench_release_overhead.py", "release_overhead.json", ["--quick"], 900),
    ("rollback", "bench_rollback.py", "rollback.json", ["--quick"], 900),
    ("flag_rollback", "bench_flag_rollback.py", "flag_rollback.json", ["--quick"], 600),
    ("replay", "bench_replay.py", "replay.json", ["--quick"], 900),
    ("capacity", "bench_capacity.py", "capacity.json", ["--quick"], 3600),
    ("cache_miss", "bench_cache_miss.py", "cache_miss.json", ["--releases", "200", "--small", "20", "--rounds", "1", "--max-minutes", "6"], 1800),
    ("sandbox", "bench_sandbox.py", "sandbox.json", ["--n", "20"], 300),
    ("windows", "bench_windows.py", "windows.json", ["--runs", "60"], 300),
]


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _ms(doc: dict[str, Any], *path: str) -> str:
    value = _get(doc, *path)
    return f"{value:.2f} ms" if isinstance(value, (int, float)) else "—"


def _num(doc: dict[str, Any], *path: str) -> str:
    value = _get(doc, *path)
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"


def _round(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if isinstance(value, (int, float)) else "—"


def _known(name: str, doc: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, baseline, ratio / verdict) for the benchmarks whose JSON shape we know."""
    if name == "sandbox":
        commands = doc.get("commands") or {}
        true_cmd = commands.get("true") or {}
        return (
            f"added median {_round(true_cmd.get('added_median_ms'))} ms per command",
            f"bare `true` median {_round(true_cmd.get('bare_median_ms'))} ms",
            "meets ≤ 50 ms" if doc.get("meets_target") else "MISSES ≤ 50 ms",
        )
    if name == "windows":
        cases = doc.get("cases") or {}
        worst = cases.get("never opens (worst case)") or {}
        weekend = cases.get("weekend deny") or {}
        return (f"weekend median {_round(weekend.get('median_ms'))} ms, worst median {_round(worst.get('median_ms'))} ms",
                f"no windows {_round((cases.get('no windows (baseline)') or {}).get('median_ms'))} ms", "≪ 2 s workflow-task limit")
    if name == "policy":
        return (f"median {_ms(doc, 'evaluate_full', 'median_ms')}, p99 {_ms(doc, 'evaluate_full', 'p99_ms')}",
                f"trivial rule {_ms(doc, 'baseline_trivial_rule', 'median_ms')}", "in-process")
    if name == "approval":
        return (f"median {_ms(doc, 'signoff_approval', 'median_ms')}, p99 {_ms(doc, 'signoff_approval', 'p99_ms')}",
                f"median {_ms(doc, 'bare_update', 'median_ms')}, p99 {_ms(doc, 'bare_update', 'p99_ms')}",
                f"{doc.get('median_ratio')} (≤ {doc.get('target_median_ratio')}: {'ok' if doc.get('meets_target') else 'MISS'})")
    if name == "release_overhead":
        return (f"median {_ms(doc, 'signoff_release', 'median_ms')}",
                f"seq {_ms(doc, 'bare_workflow', 'median_ms')} / 2-chain {_ms(doc, 'bare_two_chains', 'median_ms')}",
                f"{doc.get('median_ratio')} / {doc.get('median_ratio_vs_two_chains')} (≤ {doc.get('target_median_ratio')}: {'ok' if doc.get('meets_target') else 'MISS'})")
    if name == "slack":
        return (f"click median {_num(doc, 'click_ms', 'median')} ms, p99 {_num(doc, 'click_ms', 'p99')} ms",
                f"bare Update median {_num(doc, 'bare_update_ms', 'median')} ms",
                f"{_round(doc.get('median_ratio'))} (≤ {doc.get('target_median_ratio')})")
    if name == "rollback":
        return (f"breach→rollback median {_num(doc, 'latency_s', 'median')} s",
                f"floor {doc.get('floor_s')} s",
                f"{_signed(doc.get('median_minus_floor_s'))} s vs floor (≤ {doc.get('target_s')} s: {'ok' if doc.get('meets_target') else 'MISS'})")
    if name == "flag_rollback":
        return (f"verdict→flag 0 % median {_num(doc, 'verdict_to_flag_zero_s', 'median')} s (→ last new-path answer {_num(doc, 'verdict_to_last_new_path_s', 'median')} s)",
                f"process rollback median {_num(doc, 'baseline_verdict_to_process_rollback_s', 'median')} s",
                f"{_round(doc.get('ratio_observed_to_baseline'))} (≤ {doc.get('target_s')} s: {'ok' if doc.get('meets_target') else 'MISS'})")
    if name == "replay":
        largest = str(max(doc.get("sizes_approvals") or [0]))
        now, before = _get(doc, "median_ms", "shared", largest) or {}, _get(doc, "median_ms", "before", largest) or {}
        return (f"miss at {now.get('events')} events median {_round(now.get('median_ms'))} ms; instance {_num(doc, 'fit', 'shared', 'instance_ms')} ms",
                f"sandbox before: {_round(before.get('median_ms'))} ms; instance {_num(doc, 'fit', 'before', 'instance_ms')} ms",
                f"{_round(doc.get('largest_history_ratio_shared_vs_before'))}×; cache {doc.get('recommended_max_cached_workflows')}")
    if name == "cache_miss":
        return (f"signoff per miss: worker {_get(doc, 'signoff', 'worker_ms_per_miss')} ms, server {_get(doc, 'signoff', 'server_ms_per_miss')} ms; {_get(doc, 'signoff', 'kib_per_cached_release')} KiB cached",
                f"bare per miss: worker {_get(doc, 'bare', 'worker_ms_per_miss')} ms, server {_get(doc, 'bare', 'server_ms_per_miss')} ms; {_get(doc, 'bare', 'kib_per_cached_release')} KiB cached",
                f"all {_get(doc, 'signoff_holding_all', 'releases')} cached: ~{_get(doc, 'signoff_holding_all', 'rss_mib')} MiB")
    if name.startswith("capacity"):
        n = doc.get("releases_started")
        if doc.get("compared_with"):
            small = doc["compared_with"]
            return (f"{n} releases: drain {doc.get('drain_rate_per_second')}/s, approval p99 {_num(doc, 'approval_round_trip_under_load', 'p99_ms')} ms, RSS {doc.get('worker_rss_all_waiting_mib')} MiB",
                    f"{small.get('releases_started')} releases: drain {small.get('drain_rate_per_second')}/s",
                    f"{doc.get('drain_rate_ratio_vs_compared')} (≥ {doc.get('target_drain_ratio')}: {'ok' if doc.get('meets_drain_ratio_target') else 'MISS'})")
        cut = " TRUNCATED" if doc.get("truncated_by_time_budget") else ""
        return (f"{doc.get('releases_waiting')}/{n} waiting{cut}: RSS {doc.get('worker_rss_all_waiting_mib')} MiB, start {doc.get('start_to_all_waiting_seconds')} s, {doc.get('releases_succeeded')}/{n} succeeded {doc.get('approval_to_all_succeeded_seconds')} s after approval",
                f"idle RSS {doc.get('worker_rss_idle_mib')} MiB",
                f"RSS ≤ {doc.get('target_rss_mib')} MiB: {'ok' if doc.get('meets_rss_target') else 'MISS'}")
    return _generic(doc)


def _generic(doc: dict[str, Any]) -> tuple[str, str, str]:
    """Other helpers' benchmarks: show any median/ratio fields we can find."""
    medians = [f"{k} {v['median_ms']:.2f} ms" for k, v in doc.items() if isinstance(v, dict) and isinstance(v.get("median_ms"), (int, float))]
    ratios = [f"{k}={v}" for k, v in doc.items() if "ratio" in k and isinstance(v, (int, float))]
    return ("; ".join(medians[:1]) or "—", "; ".join(medians[1:3]) or "—", ", ".join(ratios[:2]) or "—")


def summary(names: list[str] | None = None) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    files = sorted(RESULTS.glob("*.json"))
    for path in files:
        name = path.stem
        if names and name not in names and not any(name.startswith(n) for n in names):
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            rows.append((name, f"unreadable ({e.__class__.__name__})", "", "", ""))
            continue
        ours, base, verdict = _known(name, doc)
        rows.append((name, ours, base, verdict, str(doc.get("run_at", "—"))))
    header = ("benchmark", "signoff", "same-run baseline", "ratio / target", "run at")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line: Callable[[tuple[str, ...]], str] = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description="run every benchmark, then summarise bench/results/*.json")
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument("--only", default="", help="comma-separated names: " + ",".join(b[0] for b in BENCHMARKS))
    parser.add_argument("--summary-only", action="store_true", help="print the table from existing results and exit")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    if args.summary_only:
        print(summary(only or None))
        return
    failures: list[str] = []
    for name, script, _, quick_args, bound in BENCHMARKS:
        if only and name not in only:
            continue
        path = BENCH / script
        if not path.exists():
            print(f"== {name}: {script} is not present, skipped")
            continue
        cmd = [sys.executable, str(path), *(quick_args if args.quick else [])]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(cmd, cwd=BENCH.parent, timeout=bound if args.quick else bound * 4).returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"== {name}: stopped after {bound if args.quick else bound * 4} s")
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s\n", flush=True)
        if code != 0:
            failures.append(name)
    print(summary(only or None))
    if failures:
        print(f"\nfailed: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
