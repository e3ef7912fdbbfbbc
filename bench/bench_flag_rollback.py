"""Verdict-to-0 %: how long after a failing canary verdict a flag-based release stops serving
the new code path (issue 21's acceptance figure), against the same run's traffic-based rollback.

Everything is real: the Temporal dev server, a worker with every real activity, a real
Prometheus (scrape interval 1 s) reading the example service through the local target's file_sd
files, the example service reading its flag through OpenFeature's flagd file provider. The good
artifact is released first (it becomes the stable, flag at 100 %). Then, `--runs` times (each
after Prometheus holds no sample of the previous run younger than the rate window), a
release of the bad artifact on ``deploy.target: flag`` (runs_on: local) with

    steps:    [set_weight: 25, analysis: [error-rate]]
    error-rate: 5xx share of the flag's "on" requests for the bad digest over 5 s,
                interval 1 s, failure >= 0.05, failure_limit 0

What is measured per run (all on this machine's clock; the verdict is a Temporal server time):

- *verdict*        = ActivityTaskCompleted of the failing `run_analysis`;
- *flag at 0 %*    = the flag target's action-log entry that wrote 0 % for the release;
- *last new path*  = the last response with ``X-Flag-Variant: on`` seen by a probe that asks the
  serving build every 5 ms (so the flag provider's file poll, 100 ms, is included);
- *baseline*       = ActivityTaskCompleted of `rollback`: when the previous build serves again
  through its process (what a traffic-based target such as `local` needs for a rollback).

Target (issue 21): median verdict → 0 % ≤ 1 s.

    python bench/bench_flag_rollback.py [--quick] [--runs N]

Writes bench/results/flag_rollback.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_rollback import activity_times, wait_until_no_recent_data  # noqa: E402
from bench.common import Deadline, bounded, isolate_env, release_stack, write_result  # noqa: E402

SERVICE = "checkout"
TARGET_S = 1.0
RUN_TIMEOUT_S = 120.0
PROBE_INTERVAL_S = 0.005
QUERY = (
    'sum(rate(http_requests_total{service="{service}",digest="{digest}",variant="on",code=~"5.."}[5s]))'
    ' / sum(rate(http_requests_total{service="{service}",digest="{digest}",variant="on"}[5s]))'
)


def release_file(flavour: str, *, summary: str, canary: bool) -> Any:
    """signoff builds the artifact (its signed provenance is what lets production ship it)."""
    from signoff.models import ReleaseFile

    plan = {
        "steps": [{"set_weight": 25}, {"analysis": ["error-rate"]}],
        "analyses": {
            "error-rate": {
                "query": QUERY,
                "interval": "1s",
                "initial_delay": "0s",
                "count": 60,
                "success": {"less_than": 0.05},
                "failure": {"greater_than_or_equal": 0.05},
                "failure_limit": 0,
                "inconclusive_limit": 20,
            }
        },
        "inconclusive_deadline": "5s",
        "on_inconclusive": "rollback",
    }
    return ReleaseFile.model_validate(
        {
            "service": SERVICE,
            "requested_by": "dana@example.com",
            "change": {"summary": summary, "paths": ["docs/notes.md"]},
            "build": {"command": f"python3 service/build.py --flavour {flavour} --out dist/c.pyz", "output": "dist/c.pyz"},
            "deploy": {"target": "flag", "settings": {"runs_on": "local"}},
            "canary": plan if canary else None,
        }
    )


class Probe:
    """Asks the serving build every few ms and remembers when it last answered on the new path."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.last_on: float | None = None
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _port(self) -> int | None:
        try:
            return int(json.loads(self.state_file.read_text())["stable"]["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _loop(self) -> None:
        port, checked = None, 0.0
        while not self._stop.is_set():
            if time.monotonic() - checked > 0.05:
                port, checked = self._port(), time.monotonic()
            if port:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                        variant = resp.headers.get("X-Flag-Variant")
                except urllib.error.HTTPError as e:  # the bad path answers 500 on some requests
                    variant = e.headers.get("X-Flag-Variant")
                except OSError:
                    variant = None
                self.requests += 1
                if variant == "on":
                    self.last_on = time.time()
            self._stop.wait(PROBE_INTERVAL_S)


def checkout(path: Path) -> Path:
    """A release checkout holding the example service (release commands see only their checkout)."""
    shutil.copytree(REPO / "examples" / "service", path / "service", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return path


async def one_run(index: int, sc: Any, good: str, settings: Any, base: Path) -> dict[str, Any]:
    from activities.deploy.flag import FlagTarget

    rid = f"bench-flag-{index}-{uuid.uuid4().hex[:6]}"
    with Probe(Path(settings.state_dir) / "deploy" / f"{SERVICE}.json") as probe:
        await sc.start_release(release_file("bad", summary=f"bad flag run {index}", canary=True), release_id=rid, base_dir=base)
        status = await sc.wait(rid, timeout=RUN_TIMEOUT_S)
        await asyncio.sleep(0.5)  # the probe keeps asking a little after the end
    problems: list[str] = []
    if status.phase.value != "rolled_back" or status.previous_digest != good:
        problems.append(f"ended {status.phase.value} to {status.previous_digest}: {status.reason}")
    acts = await activity_times(sc.handle(rid))
    rollbacks = [a for a in acts if a.name == "rollback" and a.completed is not None]
    failing = [a for a in acts if a.name == "run_analysis" and a.completed is not None and rollbacks and a.completed <= rollbacks[0].scheduled]
    entries = [e for e in FlagTarget(settings).actions(SERVICE).entries() if e["release_id"] == rid]
    zero = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() for e in entries[1:] if e["weight"] == 0]
    if not rollbacks or not failing or not zero:
        problems.append("no failing analysis, rollback or 0 % flag write in this run")
    if probe.last_on is None:
        problems.append("the probe never saw the new path at 25 %")
    if problems:
        return {"release_id": rid, "digest": status.artifact_digest, "valid": False, "problems": problems}
    verdict = failing[-1].completed
    assert verdict is not None and rollbacks[0].completed is not None and probe.last_on is not None
    return {
        "release_id": rid,
        "digest": status.artifact_digest,
        "valid": True,
        "problems": [],
        "verdict_to_flag_zero_s": round(zero[0] - verdict, 3),
        "verdict_to_last_new_path_s": round(probe.last_on - verdict, 3),
        "verdict_to_process_rollback_s": round(rollbacks[0].completed - verdict, 3),
        "probe_requests": probe.requests,
        "flag_weights": [e["weight"] for e in entries],
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="bench-flag-")
    root = Path(tmp.name)
    state = root / "state"
    isolate_env(str(state))
    runs: list[dict[str, Any]] = []
    try:
        async with release_stack(state, root / "prom", "bench-flag") as (sc, prom, settings):
            work = checkout(root / "work")
            base_id = f"bench-flag-stable-{uuid.uuid4().hex[:6]}"
            await sc.start_release(release_file("good", summary="good stable", canary=False), release_id=base_id, base_dir=work)
            stable = await bounded(sc.wait(base_id, timeout=RUN_TIMEOUT_S), RUN_TIMEOUT_S + 10, "the stable release")
            if stable.phase.value != "succeeded":
                raise SystemExit(f"benchmark stopped: the good release ended {stable.phase.value}: {stable.reason}")
            good = str(stable.artifact_digest)
            print(f"stable {good[:19]}… (flag 100 %); bad flag canaries; {args.runs} runs", flush=True)
            for i in range(1, args.runs + 1):
                if deadline.expired:
                    print(f"  time budget of {args.max_seconds:.0f} s spent; stopping after {len(runs)} runs")
                    break
                result = await bounded(one_run(i, sc, good, settings, work), RUN_TIMEOUT_S + 30, f"run {i}")
                runs.append(result)
                print("  " + run_line(i, result), flush=True)
                if result.get("digest"):
                    # the next run's verdict must come from its own requests, not this run's
                    await wait_until_no_recent_data(prom.url, result["digest"], 5.0, timeout=60.0)
    finally:
        tmp.cleanup()

    valid = [r for r in runs if r["valid"]]
    result: dict[str, Any] = {
        "benchmark": "flag rollback: failing verdict (run_analysis completed) → flag at 0 % / last request on the new path, vs the process rollback",
        "settings": {"canary_weight": 25, "analysis_interval_s": 1, "rate_window": "5s", "flag_poll_ms": 100, "probe_interval_s": PROBE_INTERVAL_S, "query": QUERY},
        "target_s": TARGET_S,
        "runs": runs,
        "valid_runs": len(valid),
    }
    if valid:
        flag_zero = _stats([r["verdict_to_flag_zero_s"] for r in valid])
        observed = _stats([r["verdict_to_last_new_path_s"] for r in valid])
        baseline = _stats([r["verdict_to_process_rollback_s"] for r in valid])
        result.update(
            verdict_to_flag_zero_s=flag_zero,
            verdict_to_last_new_path_s=observed,
            baseline_verdict_to_process_rollback_s=baseline,
            ratio_observed_to_baseline=round(observed["median"] / baseline["median"], 3) if baseline["median"] > 0 else None,
            meets_target=max(flag_zero["median"], observed["median"]) <= TARGET_S,
        )
    return result


def run_line(i: int, r: dict[str, Any]) -> str:
    if not r["valid"]:
        return f"run {i}: INVALID ({'; '.join(r['problems'])})"
    return (
        f"run {i}: verdict → flag 0 % {r['verdict_to_flag_zero_s']:6.3f} s, → last new-path answer {r['verdict_to_last_new_path_s']:6.3f} s"
        f"   (baseline: → previous build serving again {r['verdict_to_process_rollback_s']:6.3f} s; flag {r['flag_weights']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="failing verdict → flag at 0 % for a flag-based release")
    parser.add_argument("--quick", action="store_true", help="2 runs instead of 5")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--out", default=None, help="results file (default bench/results/flag_rollback.json)")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    result = asyncio.run(run(args))
    if result["valid_runs"]:
        print(
            f"verdict → flag 0 %: median {result['verdict_to_flag_zero_s']['median']:.3f} s; → last new-path answer: median "
            f"{result['verdict_to_last_new_path_s']['median']:.3f} s; baseline (process rollback) median "
            f"{result['baseline_verdict_to_process_rollback_s']['median']:.3f} s; ratio {result['ratio_observed_to_baseline']}; "
            f"target ≤ {TARGET_S:g} s: {'met' if result['meets_target'] else 'NOT met'}"
        )
    write_result("flag_rollback", result, args.out)


if __name__ == "__main__":
    main()
