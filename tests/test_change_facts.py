"""Facts derived, not declared: paths and authors read from a real Git repository made here,
through the real ReleaseWorkflow and the real Rego policy."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities.git import ChangeError, derive_change
from signoff.models import ApprovalAttempt
from tests.helpers import gated_spec, release_spec, running_worker, wait_for, wait_phase

def git(repo: Path, *args: str, author: str = "dana@example.com") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": author, "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def repo_with(tmp_path: Path, files: dict[str, str], *, author: str = "dana@example.com") -> tuple[Path, str]:
    """A repository with a base commit, then one commit by `author` writing `files`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README.md").write_text("base\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "change", author=author)
    return repo, git(repo, "rev-parse", "HEAD")


def built(repo: Path, commit: str, **overrides: Any) -> Any:
    """A release of this commit that signoff builds (so production needs no Sigstore bundle)."""
    change = {"summary": "change", "paths": [], "repository": ".", "commit": commit, **overrides.pop("change", {})}
    return release_spec(artifact=None, build={"command": "printf built > out.bin", "output": "out.bin"}, change=change, **overrides)


def test_derive_change_reads_paths_statuses_authors_and_signatures(tmp_path: Path) -> None:
    repo, commit = repo_with(tmp_path, {"src/a.py": "x = 1\n", "docs/b.md": "b\n"}, author="Alice@Example.com")
    facts = derive_change(repo, commit)
    assert sorted((p.path, p.status) for p in facts.paths) == [("docs/b.md", "A"), ("src/a.py", "A")]
    assert facts.authors == ["alice@example.com"] and facts.committers == ["ci@example.com"]
    assert facts.commits == 1 and facts.insertions == 2 and facts.signatures == ["N"] and facts.signed is False
    with pytest.raises(ChangeError, match="is not a commit"):
        derive_change(repo, "0" * 40)
    with pytest.raises(ChangeError, match="is not a Git checkout"):
        derive_change(tmp_path / "nowhere", commit)


async def test_declared_paths_that_leave_out_a_touched_path_are_denied(client: Client, task_queue: str, tmp_path: Path) -> None:
    repo, commit = repo_with(tmp_path, {".github/workflows/deploy.yml": "on: push\n", "docs/x.md": "x\n"})
    async with running_worker(client, task_queue) as sc:
        r = f"rel-facts-{uuid.uuid4().hex[:8]}"
        await sc.start_release(built(repo, commit, change={"paths": ["docs/x.md"]}), release_id=r, base_dir=repo)
        done = await wait_for(sc, r, lambda s: s.phase.is_final)
    assert done.phase.value == "denied"
    assert "leaves out .github/workflows/deploy.yml" in (done.reason or "")
    assert done.change is not None and {p.path for p in done.change.paths} == {".github/workflows/deploy.yml", "docs/x.md"}


async def test_docs_only_commit_is_low_risk(client: Client, task_queue: str, tmp_path: Path) -> None:
    repo, commit = repo_with(tmp_path, {"docs/guide.md": "guide\n"})
    async with running_worker(client, task_queue) as sc:
        r = f"rel-facts-{uuid.uuid4().hex[:8]}"
        # the file *claims* a CI change; git says docs only, and git is what the policy sees
        await sc.start_release(built(repo, commit, environment="production", change={"paths": []}), release_id=r, base_dir=repo)
        done = await wait_phase(sc, r, "succeeded")
    assert done.tier == "low" and done.gates == []


async def test_prod_spelled_differently_is_still_production(client: Client, task_queue: str) -> None:
    """A digest signoff did not build needs a Sigstore bundle in production: a release that
    writes `prod` or `Production ` gets the same answer, while `staging` does not."""
    async with running_worker(client, task_queue) as sc:
        ends = {}
        for spelling in ("prod", "Production ", "staging"):
            r = f"rel-facts-{uuid.uuid4().hex[:8]}"
            await sc.start_release(release_spec(environment=spelling), release_id=r)
            ends[spelling] = await wait_for(sc, r, lambda s: s.phase.is_final)
    for spelling in ("prod", "Production "):
        assert ends[spelling].phase.value == "denied" and "has no verified provenance" in (ends[spelling].reason or ""), spelling
    assert ends["staging"].phase.value == "succeeded"


async def test_the_commit_author_cannot_approve(client: Client, task_queue: str, tmp_path: Path) -> None:
    repo, commit = repo_with(tmp_path, {"src/cart.py": "total = 1\n"}, author="alice@example.com")
    spec = gated_spec()
    spec = built(repo, commit, gates=[g.model_dump(mode="json") for g in spec.gates])
    async with running_worker(client, task_queue) as sc:
        r = f"rel-facts-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=repo)
        status = await wait_phase(sc, r, "awaiting_approval")
        assert status.change is not None and status.change.authors == ["alice@example.com"]
        alice = await sc.submit_approval(ApprovalAttempt(release_id=r, identity="alice@example.com", channel="cli"))
        assert not alice.accepted and "commit authors never approve" in alice.reason
        bob = await sc.submit_approval(ApprovalAttempt(release_id=r, identity="bob@example.com", channel="cli"))
        assert bob.accepted and bob.gate is not None and [a.by for a in bob.gate.approvals] == ["bob@example.com"]
        await sc.abort(r, identity="dana@example.com", reason="test done")


COBERTURA_40 = '<?xml version="1.0"?>\n<coverage line-rate="0.4" branch-rate="0" version="7.0"><packages/></coverage>\n'
JUNIT = """<?xml version="1.0"?>
<testsuite name="t">
  <testcase classname="t" name="test_steady"/>
  <testcase classname="t" name="test_sometimes">{failure}</testcase>
</testsuite>
"""


async def test_measured_coverage_under_the_threshold_is_denied_naming_the_figure(client: Client, task_queue: str, tmp_path: Path) -> None:
    """The test command writes a Cobertura report at 40 %; the release asks for 80 %."""
    (tmp_path / "cov.xml").write_text(COBERTURA_40)
    spec = release_spec(
        artifact=None,
        build={"command": "printf x > out.bin", "output": "out.bin"},
        test={"command": "cp cov.xml coverage.xml", "coverage": 80, "coverage_report": "coverage.xml"},
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-cov-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final)
    assert done.tests is not None and done.tests.coverage == 40.0
    assert done.phase.value == "denied" and "coverage 40% is under the required 80%" in (done.reason or "")


async def test_a_test_that_fails_once_and_passes_on_a_rerun_is_reported_flaky(client: Client, task_queue: str, tmp_path: Path) -> None:
    (tmp_path / "fail.xml").write_text(JUNIT.format(failure='<failure message="boom"/>'))
    (tmp_path / "pass.xml").write_text(JUNIT.format(failure=""))
    # the first run fails test_sometimes; every later run passes it (the workspace remembers)
    command = "if [ -f ran-once ]; then cp pass.xml junit.xml; else touch ran-once; cp fail.xml junit.xml; exit 1; fi"
    spec = release_spec(
        artifact=None,
        build={"command": "printf x > out.bin", "output": "out.bin"},
        change={"summary": "docs", "paths": ["docs/a.md"]},
        test={"command": command, "junit": "junit.xml", "rerun_failures": 2},
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-flaky-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final or s.phase.value == "awaiting_approval")
        await sc.abort(r, identity="dana@example.com", reason="test done")
    assert done.tests is not None and done.tests.flaky == ["t.test_sometimes"] and done.tests.runs == 2
    assert (done.tests.passed, done.tests.failed) == (2, 0)
    # the policy decides: a docs change with a flaky test is no longer low risk, and says why
    assert done.tier == "medium" and done.policy is not None and "t.test_sometimes" in done.policy.reasons[0]


async def test_a_sarif_error_from_bandit_denies_naming_the_rule(client: Client, task_queue: str, tmp_path: Path) -> None:
    """bandit (a real scanner, from PyPI) runs in the sandbox on the release's workspace."""
    (tmp_path / "app.py").write_text("import subprocess\n\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n")
    spec = release_spec(
        artifact=None,
        build={"command": "printf x > out.bin", "output": "out.bin"},
        scans=[{"name": "bandit", "command": "python3 -m bandit -q -r app.py -f sarif -o bandit.sarif", "sarif": "bandit.sarif"}],
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-scan-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final)
    assert done.phase.value == "denied" and "scan bandit found B602 (error)" in (done.reason or "")
    (scan,) = done.scans
    assert scan.errors == 1 and scan.profile == "hermetic" and {f.rule for f in scan.findings} >= {"B602"}


async def test_a_scan_that_writes_no_sarif_fails_with_one_sentence(client: Client, task_queue: str, tmp_path: Path) -> None:
    spec = release_spec(
        artifact=None,
        build={"command": "printf x > out.bin", "output": "out.bin"},
        scans=[{"name": "broken", "command": "echo nothing to see", "sarif": "missing.sarif"}],
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-scan-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final)
    assert done.phase.value == "failed" and "the broken scan wrote no readable SARIF at missing.sarif" in (done.reason or "")
    assert "\n" not in (done.reason or "")


async def test_an_sbom_component_with_a_disallowed_licence_is_denied_naming_it(client: Client, task_queue: str, tmp_path: Path) -> None:
    import json

    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "components": [
            {"type": "library", "name": "requests", "version": "2.32.3", "licenses": [{"license": {"id": "Apache-2.0"}}]},
            {"type": "library", "name": "copyleft-lib", "version": "3.1", "licenses": [{"license": {"id": "AGPL-3.0-only"}}]},
        ],
    }
    (tmp_path / "sbom-src.json").write_text(json.dumps(sbom))
    spec = release_spec(
        artifact=None,
        # the build writes the SBOM next to the artifact; signoff reads it from the workspace
        build={"command": "printf x > out.bin && cp sbom-src.json sbom.json", "output": "out.bin"},
        sbom={"path": "sbom.json"},
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-sbom-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_for(sc, r, lambda s: s.phase.is_final)
    assert done.sbom is not None and [c.name for c in done.sbom.components] == ["requests", "copyleft-lib"]
    assert done.phase.value == "denied" and "component copyleft-lib 3.1 (AGPL-3.0-only) uses a licence that is not on the allow-list" in (done.reason or "")


async def test_a_successful_release_logs_its_attestations_and_a_vsa_that_verifies_offline(client: Client, task_queue: str, tmp_path: Path) -> None:
    import base64
    import json

    from signoff.audit import export, public_key_from_settings, show, store_from_settings, verify_export
    from signoff.config import Settings
    from signoff.trust.registry import TrustStore

    (tmp_path / "junit-src.xml").write_text(JUNIT.format(failure=""))
    spec = release_spec(
        artifact=None,
        build={"command": "printf x > out.bin", "output": "out.bin"},
        test={"command": "cp junit-src.xml junit.xml", "junit": "junit.xml"},
        change={"summary": "docs", "paths": ["docs/a.md"]},
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-vsa-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        done = await wait_phase(sc, r, "succeeded")
        await sc.wait(r)
    settings = Settings.from_env()
    rows = show(r, store_from_settings(settings))
    kinds = [(row["kind"], row["outcome"]) for row in rows if row["kind"] == "attestation"]
    assert kinds == [("attestation", "provenance"), ("attestation", "test-result"), ("attestation", "verification-summary")]
    policy_row = next(row for row in rows if row["kind"] == "policy")
    assert policy_row["evidence"]["input"]["paths"] == ["docs/a.md"] and len(policy_row["evidence"]["attestations"]) == 2
    out = tmp_path / "export.json"
    export(r, store_from_settings(settings), public_key_from_settings(settings), out, registry=TrustStore(settings.directory_path, settings.agents_path).current())
    document = json.loads(out.read_text())
    statements = [json.loads(base64.b64decode(e["payload"])) for e in document["envelopes"]]
    (vsa,) = [st for st in statements if st["predicateType"] == "https://slsa.dev/verification_summary/v1"]
    assert vsa["subject"][0]["digest"]["sha256"] == (done.artifact_digest or "").split(":", 1)[1]
    predicate = vsa["predicate"]
    assert predicate["verifier"]["id"] == "https://signoff.dev/worker" and predicate["verificationResult"] == "PASSED"
    assert predicate["policy"]["digest"]["sha256"] == done.policy.policy_sha256  # type: ignore[union-attr]
    assert [a["uri"].rsplit("#", 1)[1] for a in predicate["inputAttestations"]] == ["https://slsa.dev/provenance/v1", "https://in-toto.io/attestation/test-result/v0.1"]
    assert verify_export(document)["ok"]
    # one changed field of the VSA (the verdict) and the export no longer verifies
    for entry in document["chain"]:
        statement = json.loads(base64.b64decode(entry["envelope"]["payload"]))
        if statement["predicateType"].endswith("verification_summary/v1"):
            statement["predicate"]["verificationResult"] = "FAILED"
            entry["envelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = verify_export(document)
    assert not tampered["ok"] and any("not signed by the orchestrator key" in p for p in tampered["problems"])
