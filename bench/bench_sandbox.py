"""The sandbox's added time per command, against the same command run bare in the same run.

What is measured: `activities.runner.run_command` starting a command and waiting for it, once
through bubblewrap exactly as a release's build runs (namespaces, mounts, rlimits, the `nobody`
drop, hermetic profile) and once as a plain `/bin/sh -c` in the same directory, interleaved so
machine noise hits both. Two commands: `true` (pure start-up cost) and `python3 -c pass` (what a
Python build pays). The per-release workspace copy is measured separately (it happens once per
release, not per command).

    python bench/bench_sandbox.py [--n 40]

Target (issue "Confined build and test runs"): median added ≤ 50 ms. Writes
bench/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402

TARGET_ADDED_MS = 50.0


async def measure(n: int) -> dict[str, Any]:
    from activities import sandbox
    from activities.runner import CommandActivities, Launch, command_env, run_command
    from signoff.config import Settings
    from signoff.models import BuildRequest

    why = sandbox.unavailable_reason()
    if why is not None:
        raise SystemExit(f"the sandbox cannot run here: {why}")
    work = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    checkout = work / "checkout"
    import shutil

    shutil.copytree(REPO / "examples" / "service", checkout / "service", ignore=shutil.ignore_patterns("__pycache__"))
    settings = Settings(state_dir=work / "state", policy_dir=REPO / "policies")
    acts = CommandActivities(settings)
    results: dict[str, Any] = {}
    for name, command in (("true", "true"), ("python3 -c pass", "python3 -c pass")):
        req = BuildRequest(release_id="bench", command=command, output="x", workdir=str(checkout), checkout=str(checkout), timeout_seconds=60)
        confined_launch, cwd, profile = acts.confine(req, what="bench", fresh=False)
        bare_launch = Launch(["/bin/sh", "-c", command], cwd, {**command_env(), "PATH": sandbox.sandbox_path()})
        bare_ms: list[float] = []
        confined_ms: list[float] = []
        for i in range(n + 3):
            order = [("bare", bare_launch), ("confined", None)] if i % 2 == 0 else [("confined", None), ("bare", bare_launch)]
            for kind, launch in order:
                if launch is None:
                    launch, _, _ = acts.confine(req, what="bench", fresh=False)
                started = time.perf_counter()
                outcome = await run_command(req, what="bench", launch=launch)
                elapsed = (time.perf_counter() - started) * 1000
                if outcome.exit_code != 0:
                    raise SystemExit(f"{kind} {command!r} exited {outcome.exit_code}: {outcome.last_line}")
                if i >= 3:  # warm-up rounds are not counted
                    (bare_ms if kind == "bare" else confined_ms).append(elapsed)
        added = [c - b for c, b in zip(confined_ms, bare_ms)]
        results[name] = {
            "profile": profile,
            "bare_median_ms": round(statistics.median(bare_ms), 2),
            "confined_median_ms": round(statistics.median(confined_ms), 2),
            "added_median_ms": round(statistics.median(added), 2),
            "added_p90_ms": round(sorted(added)[int(0.9 * (len(added) - 1))], 2),
            "ratio": round(statistics.median(confined_ms) / statistics.median(bare_ms), 2),
        }
    copies = []
    for _ in range(5):
        started = time.perf_counter()
        sandbox.prepare_workspace(checkout, work / "state" / "workspaces" / "copy", hidden=[work / "state"], fresh=True)
        copies.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(work, ignore_errors=True)
    worst = max(r["added_median_ms"] for r in results.values())
    return {
        "benchmark": "sandbox (bubblewrap) added time per release command vs the same command bare",
        "samples_per_command": n,
        "commands": results,
        "workspace_copy_median_ms": round(statistics.median(copies), 2),
        "target_added_median_ms": TARGET_ADDED_MS,
        "meets_target": worst <= TARGET_ADDED_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="samples per command and mode")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = asyncio.run(measure(args.n))
    print(f"sandbox overhead ({args.n} samples each, interleaved with the bare command):")
    for name, r in result["commands"].items():
        print(
            f"  {name:<18} bare median {r['bare_median_ms']:7.2f} ms   sandboxed median {r['confined_median_ms']:7.2f} ms   "
            f"added median {r['added_median_ms']:6.2f} ms (p90 {r['added_p90_ms']:.2f})   ratio {r['ratio']:.2f}"
        )
    print(f"  workspace copy of the example checkout (once per release): median {result['workspace_copy_median_ms']:.2f} ms")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  target: added median ≤ {TARGET_ADDED_MS:.0f} ms: {verdict}")
    write_result("sandbox", result, args.out)


if __name__ == "__main__":
    main()
