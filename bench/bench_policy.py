"""Policy decision latency, in-process, for the default policy (issue 7's acceptance figure).

Runs `signoff.policy.evaluate` — the full path the activity takes: read and hash the policy
files, clone the cached engine, set the input, evaluate data.signoff.release.decision and
validate it into a PolicyDecision — over a few hundred varied inputs, and, in the same run on
the same engine, a trivial Rego query as the baseline for what regorus costs at all.

    python bench/bench_policy.py [--runs 400]

Prints median and p99 for both and writes bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import regorus  # noqa: E402

from signoff.policy import DEFAULT_POLICY_DIR, evaluate, policy_sha256  # noqa: E402

DOCS_PATHS = ["docs/guide.md", "README.md", "tests/test_cart.py", "docs/api/reference.md"]
ORDINARY_PATHS = ["src/checkout/cart.py", "src/checkout/api.py", "src/payments/ledger.py", "lib/util.py"]
SENSITIVE_PATHS = [
    ".github/workflows/release.yml", "ci/pipeline.yml", "deploy/checkout.yaml", "k8s/deployment.yaml",
    "helm/values.yaml", "infra/main.tf", "auth/session.py", "secrets/prod.enc", "config/db_credentials.yaml",
]


def varied_input(rng: random.Random, i: int) -> dict[str, Any]:
    """Four scenarios in turn (docs-only, ordinary, sensitive paths, agent) with random details,
    so every tier and denial is exercised and no single branch dominates the figure."""
    scenario = i % 4
    if scenario == 0:
        paths = rng.sample(DOCS_PATHS, rng.randint(1, 4))
    elif scenario == 1:
        paths = rng.sample(ORDINARY_PATHS, rng.randint(1, 4)) + rng.sample(DOCS_PATHS, rng.randint(0, 2))
    else:
        paths = rng.sample(ORDINARY_PATHS, rng.randint(0, 3)) + rng.sample(SENSITIVE_PATHS, rng.randint(1, 3))
    return {
        "service": rng.choice(["checkout", "payments", "search"]),
        "environment": "production" if scenario == 3 else rng.choice(["production", "staging"]),
        "requester": "dana@example.com",
        "agent": {"id": "release-bot", "model": "m", "prompt_sha256": f"{i:064x}"} if scenario == 3 else None,
        "co_requesters": ["erin@example.com"] if rng.random() < 0.3 else [],
        "paths": paths,
        "tests": {"passed": rng.randint(0, 500), "failed": rng.choice([0, 0, 0, 1]), "skipped": 0, "errors": 0, "coverage": round(rng.uniform(50, 100), 1)},
        "provenance": rng.choice([None, {"verified": True, "reason": "ok", "identity": "x", "issuer": "y"}, {"verified": False, "reason": "bad", "identity": None, "issuer": None}]),
        "artifact_digest": "sha256:" + f"{i:064x}",
        "time": "2025-03-01T12:00:00Z",
        "config": {"coverage_threshold": rng.choice([None, 80]), "require_provenance": rng.random() < 0.5},
    }


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"median_ms": round(statistics.median(ms), 4), "p99_ms": round(percentile(ms, 0.99), 4), "mean_ms": round(statistics.fmean(ms), 4), "max_ms": round(max(ms), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "policy.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    inputs = [varied_input(rng, i) for i in range(args.runs)]
    for doc in inputs[:20]:  # warm-up: parse and cache the engine, touch every branch once
        evaluate(doc, opa_url="")

    tiers: dict[str, int] = {}
    full: list[float] = []
    for doc in inputs:
        start = time.perf_counter()
        decision = evaluate(doc, opa_url="")
        full.append(time.perf_counter() - start)
        tiers[decision.tier] = tiers.get(decision.tier, 0) + 1

    # Engine-only: same engine, same inputs, no file hashing or pydantic validation.
    engine = regorus.Engine()
    for path in sorted(DEFAULT_POLICY_DIR.glob("*.rego")):
        if not path.name.endswith("_test.rego"):
            engine.add_policy(path.name, path.read_text())
    engine_only: list[float] = []
    for doc in inputs:
        start = time.perf_counter()
        engine.set_input_json(json.dumps(doc))
        engine.eval_rule("data.signoff.release.decision")
        engine_only.append(time.perf_counter() - start)

    # Baseline: a trivial rule on a regorus engine, same input sizes.
    trivial = regorus.Engine()
    trivial.add_policy("trivial.rego", "package bench\nimport rego.v1\nallow if input.service == \"checkout\"\n")
    baseline: list[float] = []
    for doc in inputs:
        start = time.perf_counter()
        trivial.set_input_json(json.dumps(doc))
        trivial.eval_rule("data.bench.allow")
        baseline.append(time.perf_counter() - start)

    result = {
        "benchmark": "policy decision latency (in-process, regorus)",
        "runs": args.runs,
        "seed": args.seed,
        "policy_sha256": policy_sha256(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "tiers": dict(sorted(tiers.items())),
        "evaluate_full": summary(full),
        "engine_only_default_policy": summary(engine_only),
        "baseline_trivial_rule": summary(baseline),
    }
    print(f"policy decision latency over {args.runs} varied inputs (tiers {result['tiers']})")
    for key, label in (("evaluate_full", "signoff.policy.evaluate (full path)"), ("engine_only_default_policy", "regorus eval, default policy"), ("baseline_trivial_rule", "regorus eval, trivial rule (baseline)")):
        s = result[key]
        print(f"  {label:<40} median {s['median_ms']:.3f} ms   p99 {s['p99_ms']:.3f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
