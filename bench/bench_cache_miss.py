"""What a workflow-cache miss costs on the real worker, and what a cached release costs in memory.

Why: at 10,000 waiting releases the worker's cache (1,000) holds one in ten, so nearly every
approval reaches a release that must be rebuilt from its history. That rebuild is the cost that
grows from 500 to 10,000 in bench_capacity.py (issue 18). This benchmark isolates it with the
same worker, server and approvers as bench_capacity, for signoff and for the bare-workflow
baseline (bench/bare.py: the release's activities and gate, nothing else):

1. `bench_capacity.py --releases N --baseline --cache SMALL`: almost every approval misses;
2. the same with `--cache` above N: none does.

Per release, the difference in worker and dev-server CPU over the drain, divided by the misses
(2 approvals × (1 − SMALL/N), approvals in random order), is the cost of one miss; the
difference in the worker's RSS with all N waiting, divided by the extra releases cached, is the
memory one cached waiting release holds. The bare workflows are the same-run baseline: what
Temporal's SDK and server charge for a miss and a cached workflow of that shape.

From those, the cache that would hold `--target` releases (default 10,000) with no miss, and
the RSS it would take next to the idle worker.

    python bench/bench_cache_miss.py [--releases N] [--small C] [--rounds R] [--target T] [--max-minutes M]

Each figure is the median over `--rounds` (3) pairs of runs, the two caches alternating: a drain
lasts about a minute here, and one pair alone has shown a dev-server cost per miss below zero.

Writes bench/results/cache_miss.json: the medians, and each round's figures under `rounds`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_capacity import refuse_empty_cache  # noqa: E402
from bench.common import write_result  # noqa: E402

GIB_MIB = 1024


def misses_per_release(releases: int, cache: int) -> float:
    """Approvals per release (2) that reach an evicted release, approvals in random order."""
    return 2 * max(0.0, 1 - cache / releases)


def miss_cost(small: dict[str, Any], big: dict[str, Any], *, releases: int, small_cache: int, big_cache: int) -> dict[str, Any]:
    """CPU per miss (worker, dev server) and KiB per cached release, from a run that misses
    (`small`) and one that does not (`big`): each a bench_capacity result or its bare baseline."""
    misses = misses_per_release(releases, small_cache) - misses_per_release(releases, big_cache)
    cached_more = min(releases, big_cache) - min(releases, small_cache)
    if misses <= 0 or cached_more <= 0:
        raise ValueError(f"a cache of {small_cache} and one of {big_cache} for {releases} releases do not differ in misses; give --small below --releases")
    out: dict[str, Any] = {"misses_per_release": round(misses, 3)}
    for side in ("worker", "server"):
        a = (small.get("drain_cpu") or {}).get(side, {}).get("cpu_ms_per_release")
        b = (big.get("drain_cpu") or {}).get(side, {}).get("cpu_ms_per_release")
        out[f"{side}_ms_per_release"] = {"missing": a, "cached": b}
        out[f"{side}_ms_per_miss"] = round((a - b) / misses, 2) if a is not None and b is not None else None
    rss_a, rss_b = small.get("worker_rss_all_waiting_mib"), big.get("worker_rss_all_waiting_mib")
    out["rss_all_waiting_mib"] = {"missing": rss_a, "cached": rss_b}
    out["kib_per_cached_release"] = round((rss_b - rss_a) * 1024 / cached_more, 1) if rss_a is not None and rss_b is not None else None
    return out


def medians(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds (None where no round has it)."""
    out: dict[str, Any] = {}
    for key in costs[0] if costs else ():
        values = [c[key] for c in costs if isinstance(c.get(key), (int, float))]
        out[key] = round(statistics.median(values), 2) if values else None
    return out


def holding_all(cost: dict[str, Any], idle_mib: float | None, target: int) -> dict[str, Any]:
    """The RSS a worker caching all `target` releases would need, next to its idle RSS."""
    kib = cost.get("kib_per_cached_release")
    if kib is None or idle_mib is None:
        return {}
    need = idle_mib + target * kib / 1024
    return {
        "releases": target,
        "rss_mib": round(need),
        "fits_1_gib": need <= GIB_MIB,
        "kib_per_release_to_fit_1_gib": round((GIB_MIB - idle_mib) * 1024 / target, 1),
    }


def capacity(releases: int, cache: int, minutes: float, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, str(REPO / "bench" / "bench_capacity.py"),
        "--releases", str(releases), "--baseline", "--cache", str(cache),
        "--max-minutes", str(minutes), "--out", str(out),
    ]
    print(f"  bench_capacity at {releases} with a workflow cache of {cache}…", flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise SystemExit(f"bench_capacity at cache {cache} failed (exit {done.returncode}):\n{tail}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description="the cost of a workflow-cache miss and of a cached release")
    parser.add_argument("--releases", type=int, default=800, help="releases waiting (default 800)")
    parser.add_argument("--small", type=int, default=50, help="the cache that misses (default 50)")
    parser.add_argument("--target", type=int, default=10_000, help="releases a worker should hold with no miss (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, alternating the two caches; figures are medians (default 3)")
    parser.add_argument("--max-minutes", type=float, default=12, help="bound for each bench_capacity run (default 12)")
    parser.add_argument("--out", default=None, help="results file (default bench/results/cache_miss.json)")
    args = parser.parse_args()
    big_cache = args.releases + 200
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be at least 1 (got {args.rounds}).")
    refuse_empty_cache(args.small, "--small")
    if args.small >= args.releases:
        raise SystemExit(f"--small ({args.small}) must be below --releases ({args.releases}), or no approval misses the cache.")

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-miss-") as tmp:
        for r in range(args.rounds):  # alternate, so drift in the machine's load hits both caches
            small = capacity(args.releases, args.small, args.max_minutes, Path(tmp) / f"small{r}.json")
            big = capacity(args.releases, big_cache, args.max_minutes, Path(tmp) / f"big{r}.json")
            rounds.append({
                "approvals_accepted": {"missing": small.get("approvals_accepted"), "cached": big.get("approvals_accepted")},
                "drain_rate_per_second": {"missing": small.get("drain_rate_per_second"), "cached": big.get("drain_rate_per_second")},
                "signoff": miss_cost(small, big, releases=args.releases, small_cache=args.small, big_cache=big_cache),
                "bare": miss_cost(small.get("bare_baseline") or {}, big.get("bare_baseline") or {}, releases=args.releases, small_cache=args.small, big_cache=big_cache),
                "worker_rss_idle_mib": small.get("worker_rss_idle_mib"),
            })

    result: dict[str, Any] = {
        "benchmark": "workflow-cache miss: CPU per miss and memory per cached waiting release, signoff vs bare workflows (medians over rounds)",
        "releases": args.releases,
        "caches": {"missing": args.small, "cached": big_cache},
        "rounds": rounds,
        "signoff": medians([r["signoff"] for r in rounds]),
        "bare": medians([r["bare"] for r in rounds]),
        "worker_rss_idle_mib": medians([{"idle": r["worker_rss_idle_mib"]} for r in rounds])["idle"],
    }
    result["signoff_holding_all"] = holding_all(result["signoff"], result["worker_rss_idle_mib"], args.target)
    write_result("cache_miss", result, args.out)

    print(f"cache misses at {args.releases} releases (cache {args.small} vs {big_cache}, 2 approvals each; medians of {args.rounds} rounds):")
    for name in ("signoff", "bare"):
        c = result[name]
        print(f"  {name:7s} per miss: worker {c['worker_ms_per_miss']} ms, dev server {c['server_ms_per_miss']} ms; per cached waiting release: {c['kib_per_cached_release']} KiB")
    s, b = result["signoff"], result["bare"]
    if s["worker_ms_per_miss"] and b["worker_ms_per_miss"] and s["kib_per_cached_release"] and b["kib_per_cached_release"]:
        print(f"  signoff / bare per miss: worker {s['worker_ms_per_miss'] / b['worker_ms_per_miss']:.2f}×, memory per cached release {s['kib_per_cached_release'] / b['kib_per_cached_release']:.2f}×")
    h = result["signoff_holding_all"]
    if h:
        print(f"  caching all {h['releases']:,}: ~{h['rss_mib']:,} MiB of RSS ({'fits' if h['fits_1_gib'] else 'over'} 1 GiB; "
              f"fitting needs ≤ {h['kib_per_release_to_fit_1_gib']} KiB per cached release)")


if __name__ == "__main__":
    main()
