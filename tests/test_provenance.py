"""Provenance verification with real Sigstore bundles (shared/fixtures/sigstore) and sigstore-python.

Everything runs offline against the trust roots embedded in sigstore; a test with the network
disabled proves offline verification needs none, and that online mode then blocks (retryable)
instead of passing.
"""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.provenance import (
    GITHUB_ACTIONS_ISSUER,
    IN_TOTO_PAYLOAD_TYPE,
    ProvenanceActivities,
    TrustRootUnavailable,
    activities_from_settings,
    check_statement,
    sha256_file,
    slsa_provenance_statement,
    verify_artifact,
    verify_digest,
)
from signoff.config import Settings
from signoff.errors import ConfigError, VerificationError
from signoff.models import ProvenanceRequest, ProvenanceResult, ProvenanceSpec

from .conftest import FIXTURES

SIGSTORE = FIXTURES / "sigstore"
WHEEL = SIGSTORE / "rfc8785-0.1.2-py3-none-any.whl"
WHEEL_BUNDLE = SIGSTORE / "rfc8785-0.1.2-py3-none-any.whl.sigstore"
WHEEL_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
WHEEL_DIGEST = "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"

V3_FILE = SIGSTORE / "bundle_v3.txt"
V3_BUNDLE = SIGSTORE / "bundle_v3.txt.sigstore"

DSSE_FILE = SIGSTORE / "a.dsse.staging-rekor-v2.txt"
DSSE_BUNDLE = SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json"
DSSE_IDENTITY = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
# The in-toto subject of the DSSE bundle is sigstore-python's a.txt; the fixture text file beside
# it is not that file, so positive DSSE checks verify against the attested digest itself.
DSSE_SUBJECT = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"
DSSE_BUILDER = "https://github.com/sigstore-conformance/rekor2-dsse-hashedrekord-regen"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every Python-level socket connection, so anything that reaches for the network fails."""

    def refuse(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def one_sentence(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(".")


# --------------------------------------------------------------------------- the GitHub Actions–signed wheel


def test_wheel_verifies_offline_without_network(no_network: None) -> None:
    result = verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, offline=True)
    assert result.verified is True
    assert result.identity == WHEEL_IDENTITY
    assert result.issuer == GITHUB_ACTIONS_ISSUER
    assert result.artifact_digest == WHEEL_DIGEST == sha256_file(WHEEL)
    assert result.bundle_sha256 is not None and len(result.bundle_sha256) == 64
    assert "production (offline)" in result.reason


def test_online_mode_without_network_blocks_instead_of_passing(no_network: None) -> None:
    with pytest.raises(TrustRootUnavailable) as err:
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, offline=False)
    one_sentence(str(err.value))
    assert "TUF" in str(err.value)


def test_one_byte_changed_copy_fails_with_hash_mismatch(tmp_path: Path) -> None:
    tampered = tmp_path / WHEEL.name
    data = bytearray(WHEEL.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as err:
        verify_artifact(tampered, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)
    message = str(err.value)
    one_sentence(message)
    assert f"is not the signed digest {WHEEL_DIGEST}" in message
    assert "changed after signing" in message


def test_signature_over_a_different_digest_fails_even_without_a_recorded_digest(tmp_path: Path) -> None:
    """Strip the bundle's messageDigest so only the ECDSA signature can catch the change."""
    bundle = json.loads(WHEEL_BUNDLE.read_text())
    bundle["messageSignature"].pop("messageDigest")
    stripped = tmp_path / "stripped.sigstore"
    stripped.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError) as err:
        verify_digest("sha256:" + "00" * 32, stripped, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)
    assert f"the signature does not match its digest sha256:{'00' * 32}" in str(err.value)
    assert verify_digest(WHEEL_DIGEST, stripped, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER).verified


def test_wrong_repository_identity_fails() -> None:
    wrong = WHEEL_IDENTITY.replace("trailofbits/rfc8785.py", "attacker/rfc8785.py")
    with pytest.raises(VerificationError) as err:
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=wrong, issuer=GITHUB_ACTIONS_ISSUER)
    message = str(err.value)
    one_sentence(message)
    assert f"it was signed by '{WHEEL_IDENTITY}', not the expected identity '{wrong}'" in message


def test_wrong_issuer_fails() -> None:
    with pytest.raises(VerificationError) as err:
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer="https://accounts.google.com")
    message = str(err.value)
    one_sentence(message)
    assert f"issued by '{GITHUB_ACTIONS_ISSUER}', not the pinned issuer 'https://accounts.google.com'" in message


def test_github_repository_identity_uses_the_oidc_source_repository() -> None:
    result = verify_artifact(WHEEL, WHEEL_BUNDLE, identity="https://github.com/trailofbits/rfc8785.py", issuer=GITHUB_ACTIONS_ISSUER)
    assert result.verified and result.identity == WHEEL_IDENTITY
    with pytest.raises(VerificationError, match="built from repository 'https://github.com/trailofbits/rfc8785.py', not the expected repository"):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity="https://github.com/trailofbits/other", issuer=GITHUB_ACTIONS_ISSUER)


def test_github_workflow_identity_at_any_ref() -> None:
    workflow_url = WHEEL_IDENTITY.split("@")[0]
    assert verify_artifact(WHEEL, WHEEL_BUNDLE, identity=workflow_url, issuer=GITHUB_ACTIONS_ISSUER).verified
    with pytest.raises(VerificationError, match="not by the workflow"):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=workflow_url.replace("release.yml", "ci.yml"), issuer=GITHUB_ACTIONS_ISSUER)


def test_issuer_must_be_given() -> None:
    with pytest.raises(ConfigError, match="needs an issuer"):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer="")


def test_bad_bundle_fails_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "bundle.sigstore"
    garbage.write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    with pytest.raises(VerificationError) as err:
        verify_artifact(WHEEL, garbage, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)
    one_sentence(str(err.value))
    assert "is not a valid Sigstore bundle" in str(err.value)
    with pytest.raises(VerificationError, match="is not a valid Sigstore bundle"):
        verify_artifact(WHEEL, WHEEL, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)
    with pytest.raises(VerificationError, match="cannot be read"):
        verify_artifact(WHEEL, tmp_path / "missing.sigstore", identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)
    with pytest.raises(VerificationError, match="does not exist"):
        verify_artifact(tmp_path / "missing.whl", WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER)


# --------------------------------------------------------------------------- staging and custom trust roots


def test_staging_v3_bundle_verifies_offline(no_network: None) -> None:
    result = verify_artifact(V3_FILE, V3_BUNDLE, identity="william@yossarian.net", issuer="https://github.com/login/oauth", staging=True)
    assert result.verified and result.identity == "william@yossarian.net"
    assert "staging (offline)" in result.reason


def test_staging_bundle_does_not_verify_against_production_root() -> None:
    with pytest.raises(VerificationError, match="failed verification"):
        verify_artifact(V3_FILE, V3_BUNDLE, identity="william@yossarian.net", issuer="https://github.com/login/oauth", staging=False)
    with pytest.raises(VerificationError, match="failed verification"):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, staging=True)


def _embedded_trusted_root(instance: str) -> bytes:
    return resources.files("sigstore._store").joinpath(instance, "trusted_root.json").read_bytes()


def test_custom_trust_config(tmp_path: Path) -> None:
    production = tmp_path / "production_root.json"
    production.write_bytes(_embedded_trusted_root("https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"))
    result = verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, trust_config=production)
    assert result.verified and "custom trust root" in result.reason

    staging = tmp_path / "staging_root.json"
    staging.write_bytes(_embedded_trusted_root("https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"))
    with pytest.raises(VerificationError):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, trust_config=staging)

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, trust_config=broken)
    one_sentence(str(err.value))


# --------------------------------------------------------------------------- DSSE attestations


def test_dsse_slsa_attestation_verifies_for_its_subject_and_allowed_builder(no_network: None) -> None:
    result = verify_digest(DSSE_SUBJECT, DSSE_BUNDLE, identity=DSSE_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, staging=True, builder_allow_list=[DSSE_BUILDER])
    assert result.verified
    [attestation] = result.attestations
    assert attestation["predicate_type"] == "https://slsa.dev/provenance/v1"
    assert attestation["builder_id"] == DSSE_BUILDER
    assert attestation["subjects"] == ["a.txt"]


def test_dsse_builder_not_on_allow_list_fails() -> None:
    for allow in ([], ["https://github.com/slsa-framework/slsa-github-generator"]):
        with pytest.raises(VerificationError) as err:
            verify_digest(DSSE_SUBJECT, DSSE_BUNDLE, identity=DSSE_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, staging=True, builder_allow_list=allow)
        assert f"names builder '{DSSE_BUILDER}', which is not on the allow-list" in str(err.value)
        one_sentence(str(err.value))


def test_dsse_subject_must_match_the_artifact() -> None:
    with pytest.raises(VerificationError) as err:
        verify_artifact(DSSE_FILE, DSSE_BUNDLE, identity=DSSE_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, staging=True, builder_allow_list=[DSSE_BUILDER])
    assert f"the attestation is about {DSSE_SUBJECT}, not this artifact ({sha256_file(DSSE_FILE)})" in str(err.value)


def test_dsse_identity_is_checked() -> None:
    with pytest.raises(VerificationError, match="not the expected identity"):
        verify_digest(DSSE_SUBJECT, DSSE_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, staging=True, builder_allow_list=[DSSE_BUILDER])


def test_attestation_list_is_verified_alongside_the_bundle() -> None:
    """An extra attestation must verify too: the staging DSSE cannot vouch for the wheel."""
    with pytest.raises(VerificationError, match="the attestation for rfc8785"):
        verify_artifact(WHEEL, WHEEL_BUNDLE, identity=WHEEL_IDENTITY, issuer=GITHUB_ACTIONS_ISSUER, attestations=[DSSE_BUNDLE], builder_allow_list=[DSSE_BUILDER])


def test_check_statement_rejects_other_payloads() -> None:
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x", "digest": {"sha256": "11" * 32}}], "predicateType": "https://example.com/other", "predicate": {}}
    ok = check_statement(IN_TOTO_PAYLOAD_TYPE, json.dumps(statement).encode(), subject_digest="sha256:" + "11" * 32)
    assert ok["predicate_type"] == "https://example.com/other"
    with pytest.raises(VerificationError, match="payload type"):
        check_statement("text/plain", b"{}", subject_digest="sha256:" + "11" * 32)
    with pytest.raises(VerificationError, match="not JSON"):
        check_statement(IN_TOTO_PAYLOAD_TYPE, b"{", subject_digest="sha256:" + "11" * 32)
    with pytest.raises(VerificationError, match="not an in-toto Statement"):
        check_statement(IN_TOTO_PAYLOAD_TYPE, b'{"_type": "x"}', subject_digest="sha256:" + "11" * 32)


def test_statement_for_built_artifacts_passes_our_own_check() -> None:
    digest = "sha256:" + "3c" * 32
    statement = slsa_provenance_statement(artifact_name="app.tar.gz", digest=digest, build_command="make dist", source_commit="a" * 40, source_uri="git+https://example.com/app")
    assert statement["predicate"]["buildDefinition"]["externalParameters"] == {"command": "make dist"}
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"] == [{"digest": {"gitCommit": "a" * 40}, "uri": "git+https://example.com/app"}]
    payload = json.dumps(statement).encode()
    summary = check_statement(IN_TOTO_PAYLOAD_TYPE, payload, subject_digest=digest, builder_allow_list=["https://signoff.dev/builder/local/v1"])
    assert summary["builder_id"] == "https://signoff.dev/builder/local/v1"
    with pytest.raises(VerificationError, match="not this artifact"):
        check_statement(IN_TOTO_PAYLOAD_TYPE, payload, subject_digest="sha256:" + "3d" * 32, builder_allow_list=["https://signoff.dev/builder/local/v1"])


# --------------------------------------------------------------------------- the activity


def request_for(base: Path, *, artifact: str | None = None, digest: str = WHEEL_DIGEST, **spec: Any) -> ProvenanceRequest:
    fields: dict[str, Any] = {"bundle": WHEEL_BUNDLE.name, "identity": WHEEL_IDENTITY, "issuer": GITHUB_ACTIONS_ISSUER, "artifact": artifact}
    fields.update(spec)
    return ProvenanceRequest(release_id="rel-test", spec=ProvenanceSpec(**fields), base_dir=str(base), digest=digest)


def test_activity_turns_failures_into_unverified_results(tmp_path: Path) -> None:
    acts = ProvenanceActivities(Settings())
    ok = acts.verify_request(request_for(SIGSTORE, artifact=WHEEL.name))
    assert ok.verified and ok.identity == WHEEL_IDENTITY

    by_digest_only = acts.verify_request(request_for(SIGSTORE))
    assert by_digest_only.verified and by_digest_only.artifact_digest == WHEEL_DIGEST

    other_digest = acts.verify_request(request_for(SIGSTORE, artifact=WHEEL.name, digest="sha256:" + "12" * 32))
    assert not other_digest.verified
    assert f"not the release's sha256:{'12' * 32}" in other_digest.reason

    wrong_issuer = acts.verify_request(request_for(SIGSTORE, artifact=WHEEL.name, issuer="https://accounts.google.com"))
    assert not wrong_issuer.verified and "not the pinned issuer" in wrong_issuer.reason

    missing = acts.verify_request(request_for(tmp_path, artifact="nothing.whl"))
    assert not missing.verified and "does not exist" in missing.reason


async def test_activity_retries_when_the_trust_root_cannot_refresh(no_network: None) -> None:
    acts = ProvenanceActivities(Settings())
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.verify_provenance, request_for(SIGSTORE, artifact=WHEEL.name, offline=False))
    assert err.value.type == "TrustRootUnavailable"
    assert err.value.non_retryable is False


@workflow.defn(name="ProvenanceProbe", sandboxed=False)
class ProvenanceProbe:
    """Calls verify_provenance the way ReleaseWorkflow's verifying phase does."""

    @workflow.run
    async def run(self, request: ProvenanceRequest) -> ProvenanceResult:
        return await workflow.execute_activity(
            "verify_provenance",
            request,
            result_type=ProvenanceResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )


async def test_verify_provenance_through_temporal(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    tampered_dir = tmp_path / "tampered"
    tampered_dir.mkdir()
    shutil.copy(WHEEL_BUNDLE, tampered_dir / WHEEL_BUNDLE.name)
    data = bytearray(WHEEL.read_bytes())
    data[-1] ^= 0xFF
    (tampered_dir / WHEEL.name).write_bytes(bytes(data))
    tampered_digest = sha256_file(tampered_dir / WHEEL.name)

    activities = activities_from_settings(Settings())
    assert [a.__name__ for a in activities] == ["verify_provenance"]
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[ProvenanceProbe], activities=activities, workflow_runner=UnsandboxedWorkflowRunner()):
        good = await dev_env.client.execute_workflow(
            ProvenanceProbe.run, request_for(SIGSTORE, artifact=WHEEL.name), id=f"prov-{uuid.uuid4().hex[:8]}", task_queue=task_queue, result_type=ProvenanceResult
        )
        bad = await dev_env.client.execute_workflow(
            ProvenanceProbe.run,
            request_for(tampered_dir, artifact=WHEEL.name, digest=tampered_digest),
            id=f"prov-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=ProvenanceResult,
        )
    assert good.verified and good.identity == WHEEL_IDENTITY
    assert not bad.verified
    assert f"its digest {tampered_digest} is not the signed digest {WHEEL_DIGEST}" in bad.reason
