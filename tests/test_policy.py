"""The default Rego policy, run by the real regorus engine (and through a real Temporal worker).

Rego unit tests cover each rule; these tests also check the Python surface around the engine:
decisions that validate as GateSpecs, the policy hash, one-sentence errors, the input builder.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.policy import PolicyActivities, activities_from_settings
from signoff.config import Settings
from signoff.errors import PolicyError
from signoff.models import PolicyDecision, PolicyRequest, ProvenanceResult, ReleaseFile, TestSummary
from signoff.policy import (
    DEFAULT_POLICY_DIR,
    PolicyBackendUnavailable,
    discover_policy_tests,
    evaluate,
    evaluate_release_file,
    policy_sha256,
    read_policy_files,
    run_policy_tests,
)
from signoff.policy_input import build_policy_input, normalize_path

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
DIGEST = "sha256:" + "ab" * 32


def document(**overrides: Any) -> dict[str, Any]:
    """A clean, ordinary human change to production; tests override one fact at a time."""
    base: dict[str, Any] = {
        "service": "checkout",
        "environment": "production",
        "requester": "dana@example.com",
        "agent": None,
        "co_requesters": [],
        "paths": ["src/checkout/cart.py"],
        "tests": {"passed": 12, "failed": 0, "skipped": 1, "errors": 0, "coverage": 88.0},
        "provenance": {"verified": True, "reason": "ok", "identity": "x", "issuer": "y"},
        "artifact_digest": DIGEST,
        "time": "2025-03-01T12:00:00Z",
        "config": {},
    }
    base.update(overrides)
    return base


AGENT = {"id": "release-bot", "model": "model-x", "prompt_sha256": "cd" * 32}


def copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


# --------------------------------------------------------------------------- Rego unit tests


def test_every_rego_unit_test_passes() -> None:
    results = run_policy_tests(DEFAULT_POLICY_DIR)
    failed = [name for name, passed in results if not passed]
    assert failed == []
    assert len(results) >= 50


def test_every_rule_of_the_default_policy_is_exercised_by_a_rego_test() -> None:
    """Each rule name defined in release.rego appears as `release.<rule>` in the Rego tests."""
    files = read_policy_files(DEFAULT_POLICY_DIR)
    policy_text = dict(files.policies)["release.rego"]
    test_text = dict(files.tests)["release_test.rego"]
    rules = set(re.findall(r"^([a-z_][a-z0-9_]*)(?:\(| :=| contains| if)", policy_text, flags=re.M))
    assert {"tier", "gates", "denials", "decision", "docs_only", "ci_path"} <= rules
    untested = sorted(r for r in rules if f"release.{r}" not in test_text)
    assert untested == []


def test_policy_tests_catch_a_loosened_policy(tmp_path: Path) -> None:
    policy_dir = copy_policies(tmp_path)
    rego = policy_dir / "release.rego"
    text = rego.read_text()
    assert '"required": 2,' in text
    rego.write_text(text.replace('"required": 2,', '"required": 1,'))
    failed = {name for name, passed in run_policy_tests(policy_dir) if not passed}
    assert "data.signoff.release_test.test_gates_high_two_with_sre" in failed


def test_undefined_test_counts_as_failure(tmp_path: Path) -> None:
    policy_dir = copy_policies(tmp_path)
    (policy_dir / "extra_test.rego").write_text(
        "package signoff.extra_test\nimport rego.v1\nimport data.signoff.release\n"
        'test_undefined_body if { release.tier == "nope" with input as {} }\n'
        "test_true if { true }\n"
    )
    results = dict(run_policy_tests(policy_dir))
    assert results["data.signoff.extra_test.test_undefined_body"] is False
    assert results["data.signoff.extra_test.test_true"] is True


def test_discovery_finds_tests_from_the_ast() -> None:
    import regorus

    engine = regorus.Engine()
    engine.add_policy("a_test.rego", "package p.q\nimport rego.v1\ntest_a if { true }\nnot_a_test if { true }\ntest_b if { false }\n")
    assert discover_policy_tests(engine) == ["data.p.q.test_a", "data.p.q.test_b"]


def test_directory_without_tests_is_an_error(tmp_path: Path) -> None:
    policy_dir = copy_policies(tmp_path)
    for test_file in policy_dir.glob("*_test.rego"):
        test_file.unlink()
    with pytest.raises(PolicyError, match="no test_ rules"):
        run_policy_tests(policy_dir)


# --------------------------------------------------------------------------- decisions


def test_docs_only_change_is_low_with_no_gate() -> None:
    decision = evaluate(document(paths=["docs/runbook.md", "README.md", "tests/test_cart.py"]))
    assert decision.tier == "low"
    assert decision.gates == []
    assert decision.denials == []
    assert decision.reasons == ["only documentation and tests change"]


def test_ordinary_change_needs_one_owner() -> None:
    decision = evaluate(document())
    assert decision.tier == "medium"
    [gate] = decision.gates
    assert (gate.name, gate.required, gate.from_groups, gate.quotas) == ("production", 1, ["checkout-owners"], {})
    assert gate.timeout == timedelta(hours=24)
    assert gate.channels == ["slack", "jira", "cli"]


def test_agent_production_change_is_high_with_two_approvers_and_sre() -> None:
    decision = evaluate(document(agent=AGENT))
    assert decision.tier == "high"
    [gate] = decision.gates
    assert gate.required == 2
    assert gate.quotas == {"sre": 1}
    assert gate.from_groups == ["sre", "checkout-owners", "release-managers"]
    assert decision.reasons == ["production change authored by agent release-bot"]
    assert decision.denials == []


def test_agent_ci_change_without_co_requester_is_denied() -> None:
    decision = evaluate(document(agent=AGENT, paths=[".github/workflows/release.yml"]))
    assert decision.tier == "high"
    assert decision.denials == ["agent release-bot changes CI configuration (.github/workflows/release.yml) without a human co-requester"]
    allowed = evaluate(document(agent=AGENT, paths=[".github/workflows/release.yml"], co_requesters=["erin@example.com"]))
    assert allowed.denials == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("deploy/checkout.yaml", "touches deploy manifests: deploy/checkout.yaml"),
        ("infra/network.tf", "touches deploy manifests: infra/network.tf"),
        ("auth/tokens.py", "touches auth or secrets: auth/tokens.py"),
        ("config/db_credentials.yaml", "touches auth or secrets: config/db_credentials.yaml"),
        ("ci/pipeline.yml", "touches CI configuration: ci/pipeline.yml"),
    ],
)
def test_sensitive_paths_make_a_human_change_high(path: str, reason: str) -> None:
    decision = evaluate(document(paths=["src/a.py", path]))
    assert decision.tier == "high"
    assert decision.reasons == [reason]


def test_failing_tests_are_denied() -> None:
    decision = evaluate(document(tests={"passed": 3, "failed": 2, "skipped": 0, "errors": 0, "coverage": 90.0}))
    assert decision.denials == ["2 test(s) failed"]


def test_coverage_under_threshold_is_denied() -> None:
    decision = evaluate(document(config={"coverage_threshold": 90}))
    assert decision.denials == ["coverage 88% is under the required 90%"]
    assert evaluate(document(config={"coverage_threshold": 88})).denials == []


def test_failed_provenance_is_denied_in_any_environment() -> None:
    failed = {"verified": False, "reason": "the file changed after signing", "identity": None, "issuer": None}
    for environment in ("production", "staging"):
        decision = evaluate(document(environment=environment, provenance=failed))
        assert decision.denials == [f"artifact {DIGEST} failed provenance verification: the file changed after signing"]


def test_absent_provenance_is_denied_only_when_required_in_production() -> None:
    """Required by default in production, unless signoff built the artifact itself."""
    message = f"artifact {DIGEST} has no verified provenance and production requires it; build it with signoff or give a Sigstore bundle"
    assert evaluate(document(provenance=None)).denials == [message]
    assert evaluate(document(provenance=None, built_by_signoff=True)).denials == []
    assert evaluate(document(provenance=None, config={"require_provenance": False})).denials == []
    assert evaluate(document(provenance=None, environment="staging", config={"require_provenance": True})).denials == []


def test_gates_validate_as_gate_specs_and_cli_can_be_disabled() -> None:
    decision = evaluate(document(config={"allow_cli_approvals": False, "gate_timeout": "PT2H"}))
    [gate] = decision.gates
    assert gate.channels == ["slack", "jira"]
    assert gate.timeout == timedelta(hours=2)
    assert decision.on_inconclusive == "rollback"


# --------------------------------------------------------------------------- policy hash and errors


def test_policy_sha256_changes_with_policy_but_not_with_tests(tmp_path: Path) -> None:
    policy_dir = copy_policies(tmp_path)
    original = policy_sha256(policy_dir)
    assert original == policy_sha256(DEFAULT_POLICY_DIR)
    assert evaluate(document(), policy_dir=policy_dir).policy_sha256 == original

    tests = policy_dir / "release_test.rego"
    tests.write_text(tests.read_text() + "\ntest_extra if { true }\n")
    assert policy_sha256(policy_dir) == original

    rego = policy_dir / "release.rego"
    rego.write_text(rego.read_text().replace("release-managers", "release-captains"))
    changed = evaluate(document(agent=AGENT), policy_dir=policy_dir)
    assert changed.policy_sha256 != original
    assert changed.gates[0].from_groups == ["sre", "checkout-owners", "release-captains"]


def test_malformed_rego_is_a_one_sentence_policy_error(tmp_path: Path) -> None:
    policy_dir = copy_policies(tmp_path)
    (policy_dir / "broken.rego").write_text("package signoff.broken\nimport rego.v1\nallow if {\n")
    with pytest.raises(PolicyError) as err:
        evaluate(document(), policy_dir=policy_dir)
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith(".")
    assert "broken.rego" in message and "does not compile" in message
    assert "broken.rego:" in message  # the line/column from regorus


def test_policy_without_decision_is_a_policy_error(tmp_path: Path) -> None:
    policy_dir = tmp_path / "p"
    policy_dir.mkdir()
    (policy_dir / "other.rego").write_text("package signoff.other\nimport rego.v1\nx := 1\n")
    with pytest.raises(PolicyError, match="produced no decision"):
        evaluate(document(), policy_dir=policy_dir)


def test_invalid_gate_from_policy_is_a_policy_error(tmp_path: Path) -> None:
    policy_dir = tmp_path / "p"
    policy_dir.mkdir()
    (policy_dir / "release.rego").write_text(
        'package signoff.release\nimport rego.v1\ndecision := {"tier": "medium", "gates": [{"name": "prod", "required": 0}], "denials": []}\n'
    )
    with pytest.raises(PolicyError, match=r"invalid decision \(gates\.0\.required"):
        evaluate(document(), policy_dir=policy_dir)


def test_missing_policy_directory_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        evaluate(document(), policy_dir=tmp_path / "nowhere")


def test_unreachable_opa_server_is_retryable_backend_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PolicyBackendUnavailable) as err:
        evaluate(document(), opa_url=f"http://127.0.0.1:{port}")
    assert "SIGNOFF_OPA_URL" in str(err.value) and "\n" not in str(err.value)


def test_opa_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SIGNOFF_OPA_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(PolicyBackendUnavailable):
        evaluate(document())
    assert evaluate(document(), opa_url="").tier == "medium"  # "" forces in-process


# --------------------------------------------------------------------------- the input document


def release_spec(**overrides: Any) -> ReleaseFile:
    data: dict[str, Any] = {
        "service": "checkout",
        "requested_by": "Dana@Example.com",
        "artifact": DIGEST,
        "change": {"summary": "bump", "paths": ["./src/a.py", "/docs/x.md"], "co_requested_by": ["erin@example.com"]},
    }
    data.update(overrides)
    return ReleaseFile.model_validate(data)


def test_build_policy_input_is_the_documented_document() -> None:
    spec = release_spec(agent={"id": "bot", "model": "m", "prompt_sha256": "p"}, test={"command": "pytest", "coverage": 80})
    tests = TestSummary(passed=5, failed=1, skipped=2, errors=0, coverage=75.5)
    provenance = ProvenanceResult(verified=False, reason="wrong issuer", identity=None, issuer=None)
    doc = build_policy_input(spec, digest=DIGEST, tests=tests, provenance=provenance, now=NOW, config={"coverage_threshold": 70, "require_provenance": True})
    assert doc == {
        "version": 1,
        "service": "checkout",
        "environment": "production",
        "requester": "dana@example.com",
        "agent": {"id": "bot", "model": "m", "prompt_sha256": "p"},
        "co_requesters": ["erin@example.com"],
        "change": {"summary": "bump", "commit": None},
        "paths": ["src/a.py", "docs/x.md"],
        "declared_paths": ["src/a.py", "docs/x.md"],
        "paths_source": "declared",
        "tests": {"passed": 5, "failed": 1, "skipped": 2, "errors": 0, "coverage": 75.5, "flaky": []},
        "provenance": {"verified": False, "reason": "wrong issuer", "identity": None, "issuer": None},
        "artifact_digest": DIGEST,
        "built_by_signoff": False,
        "findings": {"scans": [], "errors": 0, "warnings": 0, "notes": 0, "rules": []},
        "sbom": None,
        "sandbox": {},
        "time": "2025-03-01T12:00:00Z",
        "config": {"coverage_threshold": 80.0, "require_provenance": True},
    }
    json.dumps(doc)  # plain JSON, as Temporal and OPA need
    decision = evaluate(doc)
    assert decision.tier == "high"
    assert "1 test(s) failed" in decision.denials
    assert "coverage 75.5% is under the required 80%" in decision.denials
    assert any("failed provenance verification: wrong issuer" in d for d in decision.denials)


def test_release_file_cannot_lower_the_configured_coverage_threshold() -> None:
    spec = release_spec(test={"command": "pytest", "coverage": 50})
    doc = build_policy_input(spec, digest=DIGEST, tests=None, provenance=None, now=NOW, config={"coverage_threshold": 85})
    assert doc["config"]["coverage_threshold"] == 85.0
    # no threshold anywhere: absent, so the organisation's own (in the policy) is never nulled
    assert build_policy_input(release_spec(), digest=None, tests=None, provenance=None, now=NOW)["config"] == {}


def test_build_policy_input_is_deterministic() -> None:
    spec = release_spec()
    first = build_policy_input(spec, digest=DIGEST, tests=None, provenance=None, now=NOW)
    again = build_policy_input(spec, digest=DIGEST, tests=None, provenance=None, now=NOW.astimezone(timezone(timedelta(hours=2))))
    assert first == again


def test_normalize_path() -> None:
    assert normalize_path("././src\\x.py") == "src/x.py"
    assert normalize_path("/docs/a.md") == "docs/a.md"


def test_evaluate_release_file(tmp_path: Path) -> None:
    release = tmp_path / "release.yaml"
    release.write_text(
        "service: checkout\nrequested_by: dana@example.com\n"
        f"artifact: {DIGEST}\n"
        "agent: {id: release-bot, model: m}\n"
        "change:\n  summary: new CI step\n  paths: [.github/workflows/ci.yml]\n"
    )
    decision = evaluate_release_file(release, now=NOW)
    assert decision.tier == "high"
    assert decision.denials == [
        "agent release-bot changes CI configuration (.github/workflows/ci.yml) without a human co-requester",
        f"artifact {DIGEST} has no verified provenance and production requires it; build it with signoff or give a Sigstore bundle",
    ]
    assert decision.policy_sha256 == policy_sha256()
    out = decision.model_dump(mode="json")
    assert out["gates"][0]["timeout"] == "P1D"  # pydantic writes 24 h as ISO-8601 P1D


# --------------------------------------------------------------------------- the activity on a real Temporal worker


@workflow.defn(name="PolicyProbe", sandboxed=False)
class PolicyProbe:
    """Calls evaluate_policy the way ReleaseWorkflow's deciding phase does."""

    @workflow.run
    async def run(self, request: PolicyRequest) -> PolicyDecision:
        return await workflow.execute_activity(
            "evaluate_policy",
            request,
            result_type=PolicyDecision,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


async def test_evaluate_policy_activity_through_temporal(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    settings = Settings(policy_dir=DEFAULT_POLICY_DIR)
    assert [a.__name__ for a in activities_from_settings(settings)] == ["evaluate_policy"]
    broken = copy_policies(tmp_path)
    (broken / "release.rego").write_text("package signoff.release\nimport rego.v1\ndecision := {\n")
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[PolicyProbe],
        activities=activities_from_settings(settings),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        decision = await dev_env.client.execute_workflow(
            PolicyProbe.run,
            PolicyRequest(input=document(agent=AGENT)),
            id=f"policy-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=PolicyDecision,
        )
        assert decision.tier == "high"
        assert decision.gates[0].quotas == {"sre": 1}
        assert decision.policy_sha256 == policy_sha256()
        # A caller naming its own policy directory is ignored: the worker's policy decides.
        ignored = await dev_env.client.execute_workflow(
            PolicyProbe.run,
            PolicyRequest(input=document(agent=AGENT), policy_dir=str(broken)),
            id=f"policy-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=PolicyDecision,
        )
        assert ignored.tier == "high" and ignored.policy_sha256 == policy_sha256()

    # A broken policy *in the worker's settings* is a permanent error.
    async with Worker(
        dev_env.client,
        task_queue=task_queue + "-broken",
        workflows=[PolicyProbe],
        activities=activities_from_settings(Settings(policy_dir=broken)),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await dev_env.client.execute_workflow(
                PolicyProbe.run,
                PolicyRequest(input=document()),
                id=f"policy-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue + "-broken",
                result_type=PolicyDecision,
            )
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    app_error = activity_error.cause
    assert isinstance(app_error, ApplicationError)
    assert app_error.type == "PolicyError" and app_error.non_retryable
    assert "does not compile" in app_error.message


def test_policy_activity_prefers_explicit_opa_url_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_OPA_URL", "http://127.0.0.1:1")
    assert PolicyActivities(Settings(), opa_url="").opa_url == ""
    assert PolicyActivities(Settings()).opa_url == "http://127.0.0.1:1"
