"""Provenance: Sigstore verification of an artifact (and its DSSE attestations) before promotion.

Nothing is promoted unless the artifact's signature verifies against a pinned issuer and an
expected identity. Verification runs with sigstore-python against the production or staging
Sigstore instance, offline with the trust root embedded in sigstore (no network) or online
through TUF, or against a custom trusted root / client trust config file.

Outcomes, and why they differ:
- the artifact, bundle or identity is wrong → `VerificationError` from the library functions,
  `ProvenanceResult(verified=False, reason=...)` from the activity: permanent, the release ends
  `denied` and the reason is recorded;
- the trust root could not be refreshed (TUF/network) → `TrustRootUnavailable`, a *retryable*
  ApplicationError in the activity: Temporal retries, and the release waits rather than ever
  passing an unverified artifact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.x509 import Certificate, ExtensionNotFound, ObjectIdentifier, RFC822Name, SubjectAlternativeName, UniformResourceIdentifier
from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.errors import ConfigError, SignoffError, VerificationError
from signoff.models import ProvenanceRequest, ProvenanceResult

GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPES = {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"

_OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SOURCE_REPOSITORY_URI = ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
_GITHUB_REPO_RE = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_GITHUB_WORKFLOW_RE = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/\.github/workflows/[^@]+$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class TrustRootUnavailable(SignoffError):
    """The Sigstore trust root could not be loaded or refreshed (TUF, network): retry, never pass."""


# --------------------------------------------------------------------------- identity policy
#
# Small leaf policies in sigstore-python's shape (`verify(cert)` raises on failure), combined with
# sigstore's own AllOf, so sigstore's Verifier enforces exactly what our messages describe.


def _sigstore_error(message: str) -> Exception:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    return SigstoreVerificationError(message)


def _extension_text(cert: Certificate, oid: ObjectIdentifier, *, der: bool) -> str | None:
    try:
        raw: bytes = cert.extensions.get_extension_for_oid(oid).value.value  # type: ignore[attr-defined]
    except ExtensionNotFound:
        return None
    if not der:
        return raw.decode("utf-8", "replace")
    from cryptography.hazmat import asn1  # how sigstore itself reads the v2 (DER UTF8String) values

    try:
        return str(asn1.decode_der(str, raw))  # type: ignore[attr-defined]
    except ValueError:
        return None


def certificate_issuer(cert: Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded: the v2 (DER UTF8String) extension, else the legacy v1 one."""
    return _extension_text(cert, _OIDC_ISSUER_V2, der=True) or _extension_text(cert, _OIDC_ISSUER_V1, der=False)


def certificate_identities(cert: Certificate) -> list[str]:
    """The signer identities in the certificate's SAN (emails and URIs; Sigstore other-names too)."""
    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except ExtensionNotFound:
        return []
    values: list[str] = list(san.get_values_for_type(RFC822Name)) + list(san.get_values_for_type(UniformResourceIdentifier))
    return values


class PinnedIssuer:
    """The issuer is always pinned: an identity means nothing without who vouched for it."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def verify(self, cert: Certificate) -> None:
        actual = certificate_issuer(cert)
        if actual != self.issuer:
            raise _sigstore_error(f"the signing certificate was issued by '{actual}', not the pinned issuer '{self.issuer}'")


class ExactIdentity:
    """The certificate's SAN must name exactly this identity (email, or a workflow URI with ref)."""

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def verify(self, cert: Certificate) -> None:
        actual = certificate_identities(cert)
        if self.identity not in actual:
            raise _sigstore_error(f"it was signed by {', '.join(repr(a) for a in actual) or 'no identity'}, not the expected identity '{self.identity}'")


class GitHubSourceRepository:
    """GitHub Actions: the source repository (OIDC v2 extension 1.12), whatever workflow signed.

    Uses the source repository rather than the SAN so reusable workflows hosted elsewhere still
    count for the repository whose code was built.
    """

    def __init__(self, repository_url: str) -> None:
        self.repository_url = repository_url

    def verify(self, cert: Certificate) -> None:
        actual = _extension_text(cert, _SOURCE_REPOSITORY_URI, der=True)
        if actual != self.repository_url:
            raise _sigstore_error(f"it was built from repository '{actual}', not the expected repository '{self.repository_url}'")


class GitHubWorkflowAnyRef:
    """GitHub Actions: this workflow file at any ref (the SAN is `<workflow>@<ref>`)."""

    def __init__(self, workflow_url: str) -> None:
        self.workflow_url = workflow_url

    def verify(self, cert: Certificate) -> None:
        actual = certificate_identities(cert)
        if not any(a.startswith(self.workflow_url + "@") for a in actual):
            raise _sigstore_error(f"it was signed by {', '.join(repr(a) for a in actual) or 'no identity'}, not by the workflow '{self.workflow_url}'")


def identity_policy(identity: str, issuer: str) -> Any:
    """The sigstore VerificationPolicy for an expected identity; the issuer is always pinned.

    With the GitHub Actions issuer, `identity` may also be a repository URL
    (`https://github.com/OWNER/REPO`: any workflow of that source repository, checked through the
    OIDC v2 extension) or a workflow URL without `@ref` (that workflow at any ref). Anything else
    must match the certificate's SAN exactly.
    """
    from sigstore.verify.policy import AllOf

    if not issuer:
        raise ConfigError("provenance needs an issuer to pin (for GitHub Actions: https://token.actions.githubusercontent.com); add provenance.issuer.")
    if not identity:
        raise ConfigError("provenance needs the expected signer identity; add provenance.identity.")
    leaves: list[Any] = [PinnedIssuer(issuer)]
    if issuer == GITHUB_ACTIONS_ISSUER and _GITHUB_REPO_RE.match(identity):
        leaves.append(GitHubSourceRepository(identity))
    elif issuer == GITHUB_ACTIONS_ISSUER and _GITHUB_WORKFLOW_RE.match(identity):
        leaves.append(GitHubWorkflowAnyRef(identity))
    else:
        leaves.append(ExactIdentity(identity))
    return AllOf(leaves)


# --------------------------------------------------------------------------- trust


def make_verifier(*, offline: bool = True, staging: bool = False, trust_config: Path | None = None) -> Any:
    """A sigstore Verifier for production or staging, offline (embedded/cached root) or via TUF.

    `trust_config` is a trusted_root.json or a client trust config JSON for a private instance.
    """
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import TUFError
    from sigstore.models import ClientTrustConfig, TrustedRoot
    from sigstore.verify import Verifier

    if trust_config is not None:
        try:
            raw = Path(trust_config).read_text(encoding="utf-8")
            media_type = str(json.loads(raw).get("mediaType", ""))
            if "clienttrustconfig" in media_type:
                root = ClientTrustConfig.from_json(raw).trusted_root
            else:
                root = TrustedRoot.from_file(str(trust_config))
            return Verifier(trusted_root=root)
        except (OSError, ValueError, SigstoreError, AttributeError) as e:
            raise ConfigError(f"trust config {trust_config} is not a readable Sigstore trusted root or client trust config ({e.__class__.__name__}); fix provenance.trust_config.") from e
    instance = "staging" if staging else "production"
    try:
        return Verifier.staging(offline=offline) if staging else Verifier.production(offline=offline)
    except (TUFError, OSError) as e:
        raise TrustRootUnavailable(f"the Sigstore {instance} trust root could not be refreshed through TUF ({e.__class__.__name__}); check network access or verify offline.") from e


# --------------------------------------------------------------------------- attestations


def check_statement(payload_type: str, payload: bytes, *, subject_digest: str, builder_allow_list: Sequence[str] = ()) -> dict[str, Any]:
    """Check a verified DSSE payload: an in-toto Statement about this artifact from an allowed builder.

    Returns a summary for the ProvenanceResult; raises VerificationError with the reason. For SLSA
    provenance v1 an empty allow-list fails closed: any builder would otherwise do.
    """
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"the attestation's payload type is '{payload_type}', not an in-toto Statement ({IN_TOTO_PAYLOAD_TYPE}); attest with an in-toto Statement.")
    try:
        statement = json.loads(payload)
    except ValueError as e:
        raise VerificationError("the attestation's payload is not JSON; it must be an in-toto Statement.") from e
    if not isinstance(statement, dict) or statement.get("_type") not in IN_TOTO_STATEMENT_TYPES:
        raise VerificationError("the attestation's payload is not an in-toto Statement (unknown _type); attest with https://in-toto.io/Statement/v1.")
    want = subject_digest.removeprefix("sha256:")
    subjects = [s for s in statement.get("subject") or [] if isinstance(s, dict)]
    found = [str((s.get("digest") or {}).get("sha256", "")) for s in subjects]
    if want not in found:
        raise VerificationError(f"the attestation is about {', '.join('sha256:' + f for f in found if f) or 'no sha256 subject'}, not this artifact ({subject_digest}); attest the artifact being released.")
    predicate_type = str(statement.get("predicateType", ""))
    summary: dict[str, Any] = {"predicate_type": predicate_type, "subjects": [s.get("name") for s in subjects]}
    if predicate_type == SLSA_PROVENANCE_V1:
        predicate = statement.get("predicate") or {}
        builder_id = str(((predicate.get("runDetails") or {}).get("builder") or {}).get("id", ""))
        summary["builder_id"] = builder_id
        summary["build_type"] = (predicate.get("buildDefinition") or {}).get("buildType")
        if builder_id not in builder_allow_list:
            allowed = ", ".join(builder_allow_list) or "nothing (the allow-list is empty)"
            raise VerificationError(f"the SLSA provenance names builder '{builder_id}', which is not on the allow-list ({allowed}); add it to provenance.builder_allow_list only if you trust it.")
    return summary


def slsa_provenance_statement(
    *,
    artifact_name: str,
    digest: str,
    build_command: str,
    builder_id: str = "https://signoff.dev/builder/local/v1",
    source_commit: str | None = None,
    source_uri: str | None = None,
    invocation_id: str | None = None,
) -> dict[str, Any]:
    """An in-toto Statement with an SLSA provenance v1 predicate for an artifact signoff built.

    The build command is the external parameter and the source commit the resolved dependency,
    so the statement says what was run on which source; `check_statement` accepts it when
    `builder_id` is on the allow-list. Pure: the runner writes it next to the artifact.
    """
    dependencies: list[dict[str, Any]] = []
    if source_commit:
        dependency: dict[str, Any] = {"digest": {"gitCommit": source_commit}}
        if source_uri:
            dependency["uri"] = source_uri
        dependencies.append(dependency)
    run_details: dict[str, Any] = {"builder": {"id": builder_id}}
    if invocation_id:
        run_details["metadata"] = {"invocationId": invocation_id}
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": artifact_name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://signoff.dev/build/command/v1",
                "externalParameters": {"command": build_command},
                "resolvedDependencies": dependencies,
            },
            "runDetails": run_details,
        },
    }


# --------------------------------------------------------------------------- verification


def _brief(error: BaseException, limit: int = 240) -> str:
    """A third-party error as a clause: its first line, bounded, so our message stays one sentence."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    text = lines[0] if lines else error.__class__.__name__
    return (text if len(text) <= limit else text[: limit - 3] + "...").rstrip(".")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _load_bundle(bundle: Path) -> tuple[Any, bytes]:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    try:
        raw = Path(bundle).read_bytes()
    except OSError as e:
        raise VerificationError(f"Sigstore bundle {bundle} cannot be read ({e.__class__.__name__}); check provenance.bundle.") from e
    try:
        return Bundle.from_json(raw), raw
    except (SigstoreError, ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{bundle} is not a valid Sigstore bundle ({_brief(e)}); pass the .sigstore/.sigstore.json bundle written at signing time.") from e


def _signed_digest(bundle_obj: Any) -> str | None:
    signature = bundle_obj._inner.message_signature
    if signature is None or signature.message_digest is None or not signature.message_digest.digest:
        return None
    return "sha256:" + bytes(signature.message_digest.digest).hex()


def _verify_one(
    digest: str,
    bundle: Path,
    *,
    identity: str,
    issuer: str,
    verifier: Any,
    builder_allow_list: Sequence[str],
    what: str,
) -> tuple[dict[str, Any], str | None, str | None, str]:
    """Verify `bundle` (message signature or DSSE) against `digest`; returns (summary, SAN, issuer, bundle sha)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm  # type: ignore[import-not-found]

    bundle_obj, raw = _load_bundle(bundle)
    policy = identity_policy(identity, issuer)
    cert = bundle_obj.signing_certificate
    try:
        policy.verify(cert)  # first, so an identity problem is reported as one, not as a chain error
    except SigstoreError as e:
        raise VerificationError(f"{what} failed verification against {bundle.name}: {_brief(e, limit=1000)}; check provenance.identity and provenance.issuer against who really signed it.") from e
    summary: dict[str, Any] = {"bundle": bundle.name}
    try:
        if bundle_obj._dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle_obj, policy)
            try:
                summary.update(check_statement(payload_type, payload, subject_digest=digest, builder_allow_list=builder_allow_list))
            except VerificationError as e:
                raise VerificationError(f"{what} failed verification against {bundle.name}: {e}") from e
        else:
            signed = _signed_digest(bundle_obj)
            if signed is not None and signed != digest:
                raise VerificationError(f"{what} failed verification against {bundle.name}: its digest {digest} is not the signed digest {signed}; the file changed after signing, so release the signed artifact.")
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.removeprefix("sha256:")))
            verifier.verify_artifact(hashed, bundle_obj, policy)
            summary["predicate_type"] = None
    except SigstoreError as e:
        detail = _brief(e)
        if "Signature is invalid for input" in detail or "digest mismatch" in detail:
            raise VerificationError(f"{what} failed verification against {bundle.name}: the signature does not match its digest {digest}; the file changed after signing, so release the signed artifact.") from e
        raise VerificationError(f"{what} failed verification against {bundle.name}: {detail}; re-sign the artifact or check the Sigstore instance (--staging) and trust config.") from e
    san = next(iter(certificate_identities(cert)), None)
    summary["log_index"] = int(bundle_obj.log_entry._inner.log_index)
    return summary, san, certificate_issuer(cert), hashlib.sha256(raw).hexdigest()


def verify_digest(
    digest: str,
    bundle: Path,
    *,
    identity: str,
    issuer: str,
    offline: bool = True,
    staging: bool = False,
    trust_config: Path | None = None,
    attestations: Sequence[Path] = (),
    builder_allow_list: Sequence[str] = (),
    what: str | None = None,
) -> ProvenanceResult:
    """Verify an artifact known by its sha256 digest against its bundle and any DSSE attestations.

    The bundle may itself be a DSSE attestation (an in-toto Statement whose subject is the
    artifact). Raises VerificationError with the reason when anything fails.
    """
    if not _DIGEST_RE.match(digest):
        raise VerificationError(f"'{digest}' is not an artifact digest of the form sha256:<64 hex>; pass the artifact's sha256 digest.")
    label = what or digest
    verifier = make_verifier(offline=offline, staging=staging, trust_config=trust_config)
    summary, san, cert_issuer, bundle_sha = _verify_one(
        digest, Path(bundle), identity=identity, issuer=issuer, verifier=verifier, builder_allow_list=builder_allow_list, what=label
    )
    found: list[dict[str, Any]] = [summary] if summary.get("predicate_type") else []
    for attestation in attestations:
        extra, _san, _iss, _sha = _verify_one(
            digest, Path(attestation), identity=identity, issuer=issuer, verifier=verifier, builder_allow_list=builder_allow_list, what=f"the attestation for {label}"
        )
        found.append(extra)
    instance = "custom trust root" if trust_config else ("staging" if staging else "production") + (" (offline)" if offline else "")
    return ProvenanceResult(
        verified=True,
        reason=f"signed by {san} (issuer {cert_issuer}), verified against the Sigstore {instance} trust root",
        identity=san,
        issuer=cert_issuer,
        bundle_sha256=bundle_sha,
        artifact_digest=digest,
        attestations=found,
    )


def verify_artifact(
    artifact: Path,
    bundle: Path,
    *,
    identity: str,
    issuer: str,
    offline: bool = True,
    staging: bool = False,
    trust_config: Path | None = None,
    attestations: Sequence[Path] = (),
    builder_allow_list: Sequence[str] = (),
) -> ProvenanceResult:
    """Verify the file `artifact` against its Sigstore `bundle` (`signoff verify`).

    Raises VerificationError (one sentence: hash mismatch, wrong identity, wrong issuer, bad
    bundle) on failure, TrustRootUnavailable when the TUF refresh fails, ConfigError for a bad
    trust config.
    """
    path = Path(artifact)
    if not path.is_file():
        raise VerificationError(f"artifact {path} does not exist; pass the file that was signed.")
    return verify_digest(
        sha256_file(path),
        Path(bundle),
        identity=identity,
        issuer=issuer,
        offline=offline,
        staging=staging,
        trust_config=trust_config,
        attestations=attestations,
        builder_allow_list=builder_allow_list,
        what=path.name,
    )


# --------------------------------------------------------------------------- activity


class ProvenanceActivities:
    """The `verify_provenance` activity. Settings are kept for parity with the other activity classes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def verify_request(self, request: ProvenanceRequest) -> ProvenanceResult:
        """Resolve the release file's paths and verify; failures become verified=False results."""
        spec = request.spec
        base = Path(request.base_dir)
        bundle = base / spec.bundle
        trust_config = base / spec.trust_config if spec.trust_config else None
        attestations = [base / a for a in spec.attestations]
        artifact: Path | None = base / spec.artifact if spec.artifact else (Path(request.artifact_path) if request.artifact_path else None)
        try:
            if artifact is not None:
                if not artifact.is_file():
                    raise VerificationError(f"artifact {artifact} does not exist; check provenance.artifact or the build output.")
                actual = sha256_file(artifact)
                if actual != request.digest:
                    raise VerificationError(f"artifact {artifact.name} has digest {actual}, not the release's {request.digest}; verify the artifact that is being released.")
            return verify_digest(
                request.digest,
                bundle,
                identity=spec.identity,
                issuer=spec.issuer,
                offline=spec.offline,
                staging=spec.staging,
                trust_config=trust_config,
                attestations=attestations,
                builder_allow_list=spec.builder_allow_list,
                what=artifact.name if artifact is not None else request.digest,
            )
        except TrustRootUnavailable:
            raise
        except SignoffError as e:
            return ProvenanceResult(verified=False, reason=str(e), artifact_digest=request.digest)

    @activity.defn(name="verify_provenance")
    async def verify_provenance(self, request: ProvenanceRequest) -> ProvenanceResult:
        """Verification failures are results (the workflow denies with the reason); a trust root
        that cannot be refreshed is a retryable error, so nothing unverified ever passes."""
        try:
            return await asyncio.to_thread(self.verify_request, request)
        except TrustRootUnavailable as e:
            raise ApplicationError(str(e), type="TrustRootUnavailable", non_retryable=False) from e


def activities_from_settings(settings: Settings) -> list[Any]:
    return [ProvenanceActivities(settings).verify_provenance]
