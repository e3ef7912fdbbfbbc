"""Signed decision records and the hash-chained audit log.

"Can I prove what the agent did?" is answered here. Every decision a workflow makes becomes an
in-toto Statement v1 (predicate type ``https://signoff.dev/decision/v1``) wrapped in a DSSE
envelope signed by the orchestrator's ed25519 key (or keyless with sigstore when
``SIGNOFF_SIGSTORE=1``), and is appended to a log in which every entry carries the hash of the
one before it; the signature covers the record's own place in the log (index, back-link, time
appended), so only the key holder can build a chain. The checks:

* ``verify``: every signature by a pinned key valid when the record was logged (key rotations are
  records signed by the old key and the new), every entry hash, each record's signed place, each
  workflow's decisions numbered 1…n without gaps, and every signed checkpoint (log size and head
  hash) still matching the log, so records cut from the end are named too;
* ``cross_check`` / ``history_check``: every ``append_decision`` activity in the Temporal history
  has its record with the same content, every record has its activity, and a finished workflow
  has its outcome record; once the history is past retention, the checkpoints stand in for it;
* ``export``: the envelopes and the public keys in one JSON file that anyone can check with
  standard DSSE tooling, without signoff.

Storage is the `LogStore` protocol (two methods, optimistic concurrency) so a WORM object
store can back the log in production; `FileLogStore` (JSON lines, ``fcntl`` lock, ``fsync``)
is the default under the state directory. Checkpoints go to their own append-only file.
"""

from __future__ import annotations

import binascii
import errno
import fcntl
import hashlib
import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signoff.config import Settings
from signoff.errors import ConfigError, NotFound, SignoffError, TemporalUnreachable, VerificationError
from signoff.models import DIGEST_RE, DecisionInput
from signoff.trust.dsse import b64, canonical_json, pae, unb64
from signoff.trust.keys import fsync_dir as _fsync_dir, write_new_file as _write_new_file

if TYPE_CHECKING:
    from temporalio.client import Client

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://signoff.dev/decision/v1"
#: Evidence recorded as its own in-toto predicate type (about the artifact digest), signed and
#: chained like every decision; the signoff fields (kind, sequence, …) sit beside its own.
ATTESTATION_TYPES = {
    "https://in-toto.io/attestation/test-result/v0.1",
    "https://in-toto.io/attestation/vulns/v0.1",
    "https://cyclonedx.org/bom",
    "https://slsa.dev/provenance/v1",
    "https://slsa.dev/verification_summary/v1",
}
PAYLOAD_TYPE = "application/vnd.in-toto+json"
EXPORT_FORMAT = "https://signoff.dev/audit-export/v1"
GENESIS_HASH = "0" * 64
APPEND_ACTIVITY = "append_decision"
#: The same for the records a workflow queued together (a list in, a list of results out).
APPEND_BATCH_ACTIVITY = "append_decisions"
SIGSTORE_ENV = "SIGNOFF_SIGSTORE"
SIGSTORE_STAGING_ENV = "SIGNOFF_SIGSTORE_STAGING"
SIGSTORE_IDENTITY_ENV = "SIGNOFF_SIGSTORE_IDENTITY"
SIGSTORE_ISSUER_ENV = "SIGNOFF_SIGSTORE_ISSUER"


# --------------------------------------------------------------------------- errors


class KeyExistsError(ConfigError):
    """`init_keys` would overwrite a key that may already have signed records."""


class KeyMissingError(ConfigError):
    """No signing key where the settings say it is."""


class SigstoreIdentityMissing(ConfigError):
    """Keyless signing was asked for but there is no ambient OIDC identity."""


class RecordConflict(VerificationError):
    """The same (workflow id, sequence) arrived with different content: tampering or a bug."""


class AuditLogCorrupt(VerificationError):
    """The log cannot be extended because its last entry is unreadable."""


class AuditLogBusy(SignoffError):
    """Appending lost the race for the chain head too many times in a row."""


class ChainConflict(Exception):
    """Raised by `LogStore.append` when the entry no longer extends the current head.

    Not user-facing: `append_record` re-reads the log and tries again.
    """


# --------------------------------------------------------------------------- encoding


_b64 = b64
_unb64 = unb64


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON; signoff never writes them, so a line holding one is corrupt."""
    raise ValueError(f"{name} is not a JSON value")


def _json_safe(value: Any) -> Any:
    """Non-finite floats (a canary metric that came back NaN) become strings, so every decision
    can be encoded; the same input always maps to the same output."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _iso(at: datetime) -> str:
    """UTC with microseconds and a Z: one spelling per instant, whatever the input's timezone."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- statements


def build_statement(decision: DecisionInput) -> dict[str, Any]:
    """The in-toto Statement v1 for one decision.

    The subject is what the decision is about (the artifact digest, or a runbook's content
    hash), so a verifier can ask "show me every decision about this digest".

    Raises:
        ValueError: the subject digest is not ``sha256:<64 lowercase hex>``.
    """
    if not DIGEST_RE.match(decision.subject_digest):
        raise ValueError(
            f"the decision's subject digest {decision.subject_digest!r} is not of the form sha256:<64 lowercase hex>"
        )
    dumped = decision.model_dump(mode="json")
    predicate_type, own = PREDICATE_TYPE, {}
    if decision.kind == "attestation" and decision.evidence.get("predicateType") in ATTESTATION_TYPES:
        predicate_type, own = decision.evidence["predicateType"], _json_safe(dict(decision.evidence.get("predicate") or {}))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": decision.subject_name, "digest": {"sha256": decision.subject_digest.split(":", 1)[1]}}],
        "predicateType": predicate_type,
        "predicate": {
            **own,
            "kind": decision.kind,
            "outcome": decision.outcome,
            "reasons": _json_safe(list(dumped["reasons"])),
            "actor": _json_safe(dumped["actor"]),
            "evidence": _json_safe(dumped["evidence"]),
            "workflow_id": decision.workflow_id,
            "run_id": decision.run_id,
            "at": _iso(decision.at),
            "sequence": decision.sequence,
        },
    }


def statement_of(envelope: dict[str, Any]) -> dict[str, Any]:
    """Decode the statement inside a DSSE envelope (no signature check: see `verify`).

    Raises:
        ValueError: the payload is not base64 JSON of an object.
    """
    try:
        decoded = json.loads(_unb64(envelope["payload"]), parse_constant=_no_constants)
    except (KeyError, TypeError, binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"the envelope payload is not base64-encoded JSON ({e})") from e
    if not isinstance(decoded, dict):
        raise ValueError("the envelope payload is not a JSON object")
    return decoded


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKeyInfo:
    """What `signoff keys init` prints and every export publishes."""

    keyid: str
    public_pem: str
    path: Path
    public_path: Path
    scheme: str = "ed25519"

    def to_dict(self) -> dict[str, str]:
        return {
            "keyid": self.keyid,
            "scheme": self.scheme,
            "public_key_pem": self.public_pem,
            "path": str(self.path),
            "public_path": str(self.public_path),
        }


def public_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def keyid_for(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key: stable, and computable by anyone holding the key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def trust_file_for(path: Path) -> Path:
    """The trust file `init_keys` and `rotate_keys` keep beside a key unless SIGNOFF_AUDIT_TRUST says otherwise."""
    configured = os.environ.get(AUDIT_TRUST_ENV)
    return Path(configured) if configured else Path(path).with_name(Path(path).name + ".trust.json")


def init_keys(path: Path, *, force: bool = False) -> PublicKeyInfo:
    """Create the orchestrator's ed25519 key: PKCS#8 PEM at ``path`` (0600), public PEM beside it,
    and pin its key id in the trust file (`trust_file_for`) that `audit verify` checks against.

    Refuses to overwrite an existing key unless ``force``, because records already signed by it
    would then no longer verify against the published key.
    """
    path = Path(path)
    if path.exists() and not force:
        raise KeyExistsError(
            f"a signing key already exists at {path}; keep it (records signed by it verify only with it) "
            "or pass --force to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _write_new_file(path, private_bytes, 0o600, replace=force)
    except FileExistsError as e:
        raise KeyExistsError(
            f"a signing key was created at {path} by another process just now; use that one, or pass --force."
        ) from e
    pub = key.public_key()
    _write_new_file(public_path_for(path), public_pem(pub).encode(), 0o644, replace=True)
    pin_key(trust_file_for(path), pub)
    return PublicKeyInfo(keyid=keyid_for(pub), public_pem=public_pem(pub), path=path, public_path=public_path_for(path))


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The orchestrator's private key, with one-sentence errors for the usual mistakes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise KeyMissingError(f"there is no signing key at {path}; run `signoff keys init` to create one.") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not an unencrypted PEM private key; run `signoff keys init --force` to make a new one.") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an ed25519 key; run `signoff keys init --force` to make a new one.")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key from a ``.pub`` PEM, or derived from the private key at ``path``.

    Verifiers should be given the ``.pub`` file: they need no secret.
    """
    path = Path(path)
    candidates = [path] if path.name.endswith(".pub") else [public_path_for(path), path]
    for candidate in candidates:
        if not candidate.exists():
            continue
        data = candidate.read_bytes()
        if b"PUBLIC KEY" in data:
            try:
                key = serialization.load_pem_public_key(data)
            except ValueError as e:
                raise ConfigError(f"{candidate} is not a PEM public key; publish the `.pub` file `signoff keys init` wrote.") from e
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"{candidate} is not an ed25519 public key; use the `.pub` file `signoff keys init` wrote.")
            return key
        return load_signing_key(candidate).public_key()
    raise KeyMissingError(f"there is no public key at {path}; run `signoff keys init` or give the published `.pub` file.")


def public_key_from_settings(settings: Settings) -> Ed25519PublicKey:
    return load_public_key(settings.key_path)


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class SignedEnvelope:
    """A DSSE envelope, plus the sigstore bundle when it was signed keyless."""

    envelope: dict[str, Any]
    sigstore_bundle: dict[str, Any] | None = None


class DecisionSigner(Protocol):
    """Turns payload bytes into a signed DSSE envelope."""

    def sign(self, payload: bytes) -> SignedEnvelope: ...


class Ed25519Signer:
    """Signs with the orchestrator's key; ed25519 is deterministic, so a retry signs identically."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.keyid = keyid_for(private_key.public_key())

    @classmethod
    def from_path(cls, path: Path) -> "Ed25519Signer":
        return cls(load_signing_key(path))

    def sign(self, payload: bytes) -> SignedEnvelope:
        signature = self.private_key.sign(pae(PAYLOAD_TYPE, payload))
        return SignedEnvelope(
            envelope={
                "payloadType": PAYLOAD_TYPE,
                "payload": _b64(payload),
                "signatures": [{"keyid": self.keyid, "sig": _b64(signature)}],
            }
        )


class SigstoreSigner:
    """Keyless signing: a short-lived Fulcio certificate bound to the ambient OIDC identity (for
    example a CI job's), the signature logged in Rekor, and the bundle kept with the record.

    Not exercised by the test suite: there is no OIDC identity on a test machine.
    """

    def __init__(self, *, staging: bool = False, identity_token: str | None = None) -> None:
        self.staging = staging
        self.identity_token = identity_token

    def sign(self, payload: bytes) -> SignedEnvelope:
        from sigstore import dsse as sigstore_dsse
        from sigstore.models import ClientTrustConfig
        from sigstore.oidc import IdentityError, IdentityToken, detect_credential
        from sigstore.sign import SigningContext

        try:
            raw = self.identity_token or detect_credential()
        except IdentityError as e:
            raise SigstoreIdentityMissing(
                f"SIGNOFF_SIGSTORE=1 but detecting the ambient OIDC identity failed ({e}); fix the CI identity or unset SIGNOFF_SIGSTORE."
            ) from e
        if not raw:
            raise SigstoreIdentityMissing(
                "SIGNOFF_SIGSTORE=1 but no ambient OIDC identity is available; run where one is (such as CI with the id-token permission) or unset SIGNOFF_SIGSTORE to sign with the orchestrator key."
            )
        trust = ClientTrustConfig.staging() if self.staging else ClientTrustConfig.production()
        context = SigningContext.from_trust_config(trust)
        with context.signer(IdentityToken(raw)) as signer:
            bundle = signer.sign_dsse(sigstore_dsse.Statement(payload))
        envelope = bundle._dsse_envelope  # the DSSE envelope inside the bundle, exactly as logged
        if envelope is None:
            raise VerificationError("sigstore returned a bundle without a DSSE envelope; report this as a bug.")
        return SignedEnvelope(envelope=json.loads(envelope.to_json()), sigstore_bundle=json.loads(bundle.to_json()))


class KeyFileSigner:
    """The orchestrator key as it is on disk *now*: after `signoff keys rotate` replaces the
    file, the next signature is by the new key, with no worker restart (one ``stat`` per sign)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._signer: Ed25519Signer | None = None
        self._lock = threading.Lock()

    def current(self) -> Ed25519Signer:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if self._signer is None or (stamp is not None and stamp != self._stamp):
                self._signer, self._stamp = Ed25519Signer.from_path(self.path), stamp
            return self._signer

    @property
    def keyid(self) -> str:
        return self.current().keyid

    def sign(self, payload: bytes) -> SignedEnvelope:
        return self.current().sign(payload)


def sigstore_enabled() -> bool:
    return os.environ.get(SIGSTORE_ENV, "") == "1"


def signer_from_settings(settings: Settings) -> DecisionSigner:
    """Keyless when ``SIGNOFF_SIGSTORE=1``, otherwise the orchestrator key at ``settings.key_path``."""
    if sigstore_enabled():
        return SigstoreSigner(staging=os.environ.get(SIGSTORE_STAGING_ENV, "") == "1")
    signer = KeyFileSigner(settings.key_path)
    signer.current()  # a missing or unreadable key is an error now, not at the first record
    return signer


def sign_decision(decision: DecisionInput, signer: DecisionSigner) -> SignedEnvelope:
    return signer.sign(canonical_json(build_statement(decision)))


# --------------------------------------------------------------------------- pinned keys and rotation


TRUST_FORMAT = "https://signoff.dev/audit-trust/v1"
ROTATION_KIND = "key_rotation"
KEYS_WORKFLOW = "signoff-keys"
AUDIT_TRUST_ENV = "SIGNOFF_AUDIT_TRUST"


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(f"{value!r} is not an ISO 8601 time; write times like 2026-12-02T14:00:00Z.") from e
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


@dataclass
class TrustedKey:
    """An orchestrator key a verifier accepts, and when: records logged outside
    ``[not_before, not_after)`` do not count as signed by it."""

    keyid: str
    public_key: Ed25519PublicKey | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    via: str = "pinned"

    def valid_at(self, at: datetime | None) -> bool:
        if at is None:
            return self.not_before is None and self.not_after is None
        return (self.not_before is None or at >= self.not_before) and (self.not_after is None or at < self.not_after)

    def period(self) -> str:
        start = _iso(self.not_before) if self.not_before else "the beginning"
        end = _iso(self.not_after) if self.not_after else "now"
        return f"{start} to {end}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "public_key_pem": public_pem(self.public_key) if self.public_key is not None else None,
            "not_before": _iso(self.not_before) if self.not_before else None,
            "not_after": _iso(self.not_after) if self.not_after else None,
        }


@dataclass
class AuditTrust:
    """The orchestrator keys a verifier expects, pinned by key id with validity periods.

    Never taken from the key file beside the log: a swapped key and ``.pub`` then simply fail,
    because their key id is not pinned. Public keys may come from anywhere (the trust file, the
    ``.pub`` file, a rotation record), since a key is only used when it hashes to a pinned id.
    """

    keys: dict[str, TrustedKey]
    source: str

    @classmethod
    def single(cls, public_key: Ed25519PublicKey, source: str = "the key given") -> "AuditTrust":
        kid = keyid_for(public_key)
        return cls({kid: TrustedKey(kid, public_key)}, source)

    @classmethod
    def load(cls, path: Path, *, extra_public_keys: Iterable[Path] = ()) -> "AuditTrust":
        """A trust file: ``{"keys": [{"keyid", "public_key_pem"?, "not_before"?, "not_after"?}]}``
        (JSON or YAML). Keys listed without a PEM are resolved from ``extra_public_keys``."""
        import yaml

        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"there is no audit trust file at {path}; give the file of pinned key ids with --trust or SIGNOFF_AUDIT_TRUST.") from e
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"the audit trust file {path} cannot be read ({e}); fix it or give another with --trust.") from e
        items = document.get("keys") if isinstance(document, dict) else document
        if not isinstance(items, list) or not items:
            raise ConfigError(f"the audit trust file {path} lists no keys; it needs a `keys:` list of key ids (see `signoff keys init`).")
        candidates: dict[str, Ed25519PublicKey] = {}
        for extra in extra_public_keys:
            try:
                k = load_public_key(extra)
            except ConfigError:
                continue
            candidates[keyid_for(k)] = k
        keys: dict[str, TrustedKey] = {}
        for item in items:
            item = {"keyid": item} if isinstance(item, str) else item
            if not isinstance(item, dict) or not isinstance(item.get("keyid"), str):
                raise ConfigError(f"the audit trust file {path} has an entry without a keyid; each key needs `keyid: <64 hex>`.")
            kid = item["keyid"].lower()
            public_key = candidates.get(kid)
            if item.get("public_key_pem"):
                try:
                    loaded = serialization.load_pem_public_key(str(item["public_key_pem"]).encode())
                except ValueError as e:
                    raise ConfigError(f"the public key of {kid[:16]}… in {path} is not a PEM public key; fix the trust file.") from e
                if not isinstance(loaded, Ed25519PublicKey) or keyid_for(loaded) != kid:
                    raise ConfigError(f"the public key listed for {kid[:16]}… in {path} does not have that key id; fix the trust file.")
                public_key = loaded
            keys[kid] = TrustedKey(kid, public_key, _parse_time(item.get("not_before")), _parse_time(item.get("not_after")))
        return cls(keys, str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"format": TRUST_FORMAT, "keys": [k.to_dict() for k in self.keys.values()]}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_new_file(path, json.dumps(self.to_dict(), indent=2).encode() + b"\n", 0o644, replace=True)


def trust_path(settings: Settings) -> Path:
    """Where the pinned key ids are configured: SIGNOFF_AUDIT_TRUST, or the trust file that
    `signoff keys init` / `keys rotate` keep beside the key (an auditor should hold a copy)."""
    return trust_file_for(settings.key_path)


def trust_from_settings(settings: Settings, path: Path | None = None) -> AuditTrust:
    """The pinned keys for verifying: ``path`` (``--trust``), else the configured trust file."""
    return AuditTrust.load(path or trust_path(settings), extra_public_keys=[public_path_for(settings.key_path)])


def view_trust(settings: Settings) -> AuditTrust:
    """What a reader that holds no private key verifies with: the configured trust file when
    there is one, else the published ``.pub`` (and the result says it is not pinned)."""
    path = trust_path(settings)
    if path.exists():
        return trust_from_settings(settings)
    return AuditTrust.single(load_public_key(settings.key_path), f"{public_path_for(settings.key_path)} (not pinned: set SIGNOFF_AUDIT_TRUST)")


def pin_key(path: Path, public_key: Ed25519PublicKey, *, not_before: datetime | None = None) -> Path:
    """Add ``public_key`` to the trust file at ``path`` (created if missing)."""
    path = Path(path)
    trust = AuditTrust.load(path) if path.exists() else AuditTrust({}, str(path))
    kid = keyid_for(public_key)
    if kid not in trust.keys:
        trust.keys[kid] = TrustedKey(kid, public_key, not_before)
        trust.save(path)
    return path


class CoSigner:
    """Several keys signing one envelope (a key rotation is signed by the old key and the new)."""

    def __init__(self, *signers: "Ed25519Signer") -> None:
        self.signers = signers

    def sign(self, payload: bytes) -> SignedEnvelope:
        envelopes = [s.sign(payload).envelope for s in self.signers]
        return SignedEnvelope({**envelopes[0], "signatures": [sig for e in envelopes for sig in e["signatures"]]})


def rotate_keys(settings: Settings, store: "LogStore", checkpoints: "CheckpointStore | None" = None) -> dict[str, Any]:
    """Start a new orchestrator key and record the rotation, signed by the old key and the new.

    The new key becomes valid just before it replaces the old one on disk (workers pick it up
    at their next append); the old one stays valid until the rotation record, and records
    after that record must carry the new key. The trust file gains the new key and closes the
    old key's period; the old private key is moved aside (``<key>.<keyid>.retired``) for the
    operator to destroy once nothing still runs with it.
    """
    old = load_signing_key(settings.key_path)
    old_id = keyid_for(old.public_key())
    new = Ed25519PrivateKey.generate()
    new_id = keyid_for(new.public_key())
    trust_file = trust_path(settings)
    trust = AuditTrust.load(trust_file) if trust_file.exists() else AuditTrust.single(old.public_key(), str(trust_file))
    if old_id not in trust.keys:
        raise ConfigError(f"the current key {old_id[:16]}… is not in the trust file {trust_file}; fix the trust file before rotating.")
    started = datetime.now(timezone.utc)
    trust.keys[new_id] = TrustedKey(new_id, new.public_key(), started)
    trust.save(trust_file)
    retired = settings.key_path.with_name(f"{settings.key_path.name}.{old_id[:12]}.retired")
    os.replace(settings.key_path, retired)
    private_bytes = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_new_file(settings.key_path, private_bytes, 0o600, replace=True)
    _write_new_file(public_path_for(settings.key_path), public_pem(new.public_key()).encode(), 0o644, replace=True)
    previous = [e for e in store.entries() if e.get("workflow_id") == KEYS_WORKFLOW]
    decision = DecisionInput(
        kind=ROTATION_KIND,
        outcome="rotated",
        subject_name="signoff-orchestrator-key",
        subject_digest=f"sha256:{new_id}",
        reasons=[f"orchestrator key {old_id[:16]}… replaced by {new_id[:16]}…"],
        actor={"orchestrator": "signoff", "by": os.environ.get("USER", "operator")},
        evidence={"old_keyid": old_id, "new_keyid": new_id, "new_public_key_pem": public_pem(new.public_key())},
        workflow_id=KEYS_WORKFLOW,
        run_id=new_id,
        at=started,
        sequence=len(previous) + 1,
    )
    entry = append_record(store, decision, CoSigner(Ed25519Signer(old), Ed25519Signer(new)))
    rotated_at = _parse_time((signed_place(_statement_or_none(entry)) or {}).get("logged_at")) or datetime.now(timezone.utc)
    trust.keys[old_id].not_after = rotated_at
    trust.save(trust_file)
    if checkpoints is not None:
        write_checkpoint(store, checkpoints, Ed25519Signer(new))
    return {"old_keyid": old_id, "new_keyid": new_id, "rotated_at": _iso(rotated_at), "entry": entry["index"], "trust_file": str(trust_file), "retired_key": str(retired)}


# --------------------------------------------------------------------------- checkpoints


CHECKPOINT_PREDICATE = "https://signoff.dev/audit-checkpoint/v1"
OUTCOME_KINDS = frozenset({"release_outcome", "runbook_outcome", "release_reaped", ROTATION_KIND})
#: Workflows that only ever record these kinds (drift checks, agent suspensions) end without an
#: outcome record by design; every release and runbook run must have one.
NO_OUTCOME_KINDS = ("drift", "agent_", "notification")
CHECKPOINT_EVERY_ENV = "SIGNOFF_CHECKPOINT_EVERY"
CHECKPOINT_SECONDS_ENV = "SIGNOFF_CHECKPOINT_SECONDS"


def checkpoint_path(settings: Settings) -> Path:
    configured = os.environ.get("SIGNOFF_AUDIT_CHECKPOINTS")
    return Path(configured) if configured else settings.audit_log.with_name(settings.audit_log.stem + ".checkpoints.jsonl")


class CheckpointStore:
    """Signed checkpoints, one JSON line each, only ever appended (``O_APPEND``, ``flock``,
    ``fsync``). Put the file where the worker may append but not rewrite (``chattr +a``, a WORM
    bucket) and publish `signoff audit checkpoint` elsewhere: then cutting records from the end
    of the log is caught by any checkpoint taken after them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, signed: SignedEnvelope) -> None:
        record: dict[str, Any] = {"envelope": signed.envelope}
        if signed.sigstore_bundle is not None:
            record["sigstore_bundle"] = signed.sigstore_bundle
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, canonical_json(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def all(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [FileLogStore._parse_line(raw, n) for n, raw in enumerate(data.splitlines(), start=1) if raw.strip()]


def checkpoint_statement(size: int, head_hash: str, at: datetime, origin: str = "signoff") -> dict[str, Any]:
    """An in-toto statement about the log's head: signable by the orchestrator key or keyless
    (then Rekor holds it too), checkable with standard DSSE tooling."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{origin}-audit-log", "digest": {"sha256": head_hash}}],
        "predicateType": CHECKPOINT_PREDICATE,
        "predicate": {"origin": origin, "size": size, "head_hash": head_hash, "at": _iso(at)},
    }


def write_checkpoint(store: "LogStore", checkpoints: CheckpointStore, signer: DecisionSigner, *, size: int | None = None, head_hash: str | None = None) -> dict[str, Any] | None:
    """Sign and append a checkpoint of the log as it is (or of the prefix ``size``/``head_hash``
    an append just produced). Returns the checkpoint's predicate, or None for an empty log."""
    if size is None or head_hash is None:
        entries = store.entries()
        if not entries or "corrupt" in entries[-1]:
            return None
        size, head_hash = len(entries), str(entries[-1].get("entry_hash"))
    statement = checkpoint_statement(size, head_hash, datetime.now(timezone.utc))
    checkpoints.append(signer.sign(canonical_json(statement)))
    return statement["predicate"]


class CheckpointPolicy:
    """When the appender signs a checkpoint: after every ``every`` records, when ``seconds``
    have passed since the last one, and after every record that ends a workflow (so a finished
    release's records are always covered)."""

    def __init__(self, every: int | None = None, seconds: float | None = None) -> None:
        self.every = max(1, every if every is not None else int(os.environ.get(CHECKPOINT_EVERY_ENV, "100")))
        self.seconds = max(0.0, seconds if seconds is not None else float(os.environ.get(CHECKPOINT_SECONDS_ENV, "60")))
        self._count = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def due(self, kind: str) -> bool:
        with self._lock:
            self._count += 1
            if kind in OUTCOME_KINDS or self._count >= self.every or time.monotonic() - self._last >= self.seconds:
                self._count, self._last = 0, time.monotonic()
                return True
            return False


# --------------------------------------------------------------------------- the log


def compute_entry_hash(
    index: int, prev_hash: str, envelope: dict[str, Any], sigstore_bundle: dict[str, Any] | None = None
) -> str:
    """sha256 over canonical JSON of (index, prev_hash, envelope[, sigstore_bundle]).

    The index and the back-link are inside the hash, so an entry cannot be moved or re-linked
    without changing its hash; the metadata fields are copies of the signed statement and are
    checked against it instead.
    """
    body: dict[str, Any] = {"index": index, "prev_hash": prev_hash, "envelope": envelope}
    if sigstore_bundle is not None:
        body["sigstore_bundle"] = sigstore_bundle
    return hashlib.sha256(canonical_json(body)).hexdigest()


@runtime_checkable
class LogStore(Protocol):
    """Append-only storage for chain entries (dicts, see `FileLogStore` for the fields).

    Concurrency is optimistic, which maps onto a WORM object store's conditional put: `append`
    must store the entry only if ``entry["index"]`` is the next index and ``entry["prev_hash"]``
    is the hash of the current last entry, atomically, and raise `ChainConflict` otherwise. It
    returns only once the entry is durable.
    """

    def append(self, entry: dict[str, Any]) -> None: ...

    def entries(self) -> list[dict[str, Any]]: ...


class FileLogStore:
    """The default store: one JSON object per line, ``flock``-ed, ``fsync``-ed before returning.

    A line that is not valid JSON (a torn write, a hand edit) comes back from `entries` as
    ``{"corrupt": reason, "line": n}`` so `verify` can name it instead of crashing; readable
    entries carry ``_line`` (where they are in the file), which is never written back.

    With ``incremental=True`` (the worker's appender) only the bytes appended since the last
    read are parsed, so appending stays cheap however long the log grows; a file that was
    replaced, shrank, or whose last line changed is read again from the start. It keeps no
    entries in memory, only where each (workflow id, sequence) is in the file and the last
    entry: a worker that appended 70,000 records holds ~15 MiB for them instead of ~300 MiB
    (issue 18). The default reads every byte each time, which is what `verify` and tools want.
    """

    def __init__(self, path: Path, *, incremental: bool = False) -> None:
        self.path = Path(path)
        self.incremental = incremental
        self._tail: tuple[int, bytes] = (0, b"")
        self._lock = threading.Lock()
        self._cached: list[dict[str, Any]] = []  # the entries, for a non-incremental read only
        self._count = 0
        self._last: dict[str, Any] | None = None
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        #: (workflow id, sequence) -> (byte offset, length, line number) of the entry
        self._keys: dict[tuple[str, int], tuple[int, int, int]] = {}

    def __repr__(self) -> str:
        return f"FileLogStore({str(self.path)!r})"

    def _open(self, flags: int) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, flags | os.O_CREAT, 0o640)
        if created:
            _fsync_dir(self.path.parent)
        return fd

    @staticmethod
    def _read_from(fd: int, offset: int) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    @staticmethod
    def _parse_line(raw: bytes, number: int) -> dict[str, Any]:
        try:
            entry = json.loads(raw, parse_constant=_no_constants)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            return {"corrupt": f"line {number} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})", "line": number}
        if not isinstance(entry, dict):
            return {"corrupt": f"line {number} is not a JSON object", "line": number}
        entry["_line"] = number
        return entry

    @classmethod
    def _parse(cls, data: bytes) -> list[dict[str, Any]]:
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return [cls._parse_line(raw, number) for number, raw in enumerate(lines, start=1)]

    def _refresh(self, fd: int) -> list[dict[str, Any]]:
        """Entries as on disk now, an unterminated last line (a torn write) included."""
        partial = self._sync(fd)
        if self.incremental:  # nothing kept in memory: parse the complete lines again
            complete = self._parse(self._read_from(fd, 0)[: self._offset])
        else:
            complete, self._cached = self._cached, []
        return complete + ([partial] if partial is not None else [])

    def _sync(self, fd: int) -> dict[str, Any] | None:
        """Bring the cache up to the file; returns an unterminated last line (a torn write,
        never cached), or None. Callers hold ``self._lock``."""
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino)
        tail_start, tail = self._tail
        if (
            not self.incremental
            or identity != self._identity
            or st.st_size < self._offset
            or (tail and os.pread(fd, len(tail), tail_start) != tail)
        ):
            self._cached, self._count, self._last, self._offset, self._keys, self._identity, self._tail = [], 0, None, 0, {}, identity, (0, b"")
        data = self._read_from(fd, self._offset)
        complete, _, partial = data.rpartition(b"\n")
        if complete or data.startswith(b"\n"):
            position = self._offset
            for raw in (complete + b"\n").split(b"\n")[:-1]:
                self._count += 1
                entry = self._parse_line(raw, self._count)
                workflow_id, sequence = entry.get("workflow_id"), entry.get("sequence")
                if isinstance(workflow_id, str) and isinstance(sequence, int):
                    self._keys.setdefault((sys.intern(workflow_id), sequence), (position, len(raw), self._count))
                if not self.incremental:
                    self._cached.append(entry)
                self._last = entry
                position += len(raw) + 1
            last_line = complete.rsplit(b"\n", 1)[-1]
            self._offset += len(complete) + 1
            self._tail = (self._offset - len(last_line) - 1, last_line + b"\n")
        # an unterminated last line (a torn write) is shown, never cached
        return self._parse_line(partial, self._count + 1) if partial else None

    def _shared_read(self, read: Callable[[int], Any]) -> Any:
        """``read(fd)`` under a shared lock of the file and this store's lock."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                with self._lock:
                    return read(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        return self._shared_read(self._refresh) if self.path.exists() else []

    def head(self) -> tuple[int, dict[str, Any] | None]:
        """(number of entries, last entry) without copying the log: all an append needs."""
        return self._shared_read(self._head) if self.path.exists() else (0, None)

    def _head(self, fd: int) -> tuple[int, dict[str, Any] | None]:
        partial = self._sync(fd)
        if not self.incremental:
            self._cached = []
        if partial is not None:
            return self._count + 1, partial
        return self._count, self._last

    def find(self, workflow_id: str, sequence: int) -> dict[str, Any] | None:
        """The entry recorded for (workflow_id, sequence), from the index (after `entries` or
        `head`): read back from where the index says it is."""
        with self._lock:
            where = self._keys.get((workflow_id, sequence))
        if where is None or not self.path.exists():
            return None
        position, length, number = where
        fd = os.open(self.path, os.O_RDONLY)
        try:
            raw = os.pread(fd, length, position)
        finally:
            os.close(fd)
        entry = self._parse_line(raw, number)
        if entry.get("workflow_id") != workflow_id or entry.get("sequence") != sequence:
            # the file was replaced since it was indexed: read it again, then look once more
            with self._lock:
                self._identity = None
            self.head()
            with self._lock:
                where = self._keys.get((workflow_id, sequence))
            if where is None:
                return None
            return self._parse_line(self._shared_read(lambda fd: os.pread(fd, where[1], where[0])), where[2])
        return entry

    def append(self, entry: dict[str, Any]) -> None:
        record = {k: v for k, v in entry.items() if not k.startswith("_")}
        line = canonical_json(record) + b"\n"
        fd = self._open(os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with self._lock:
                    size, last = self._head(fd)
                head_hash = GENESIS_HASH
                if last is not None:
                    if "corrupt" in last or not isinstance(last.get("entry_hash"), str):
                        raise AuditLogCorrupt(
                            f"the last entry of the audit log {self.path} is unreadable, so nothing can be chained to it; "
                            "run `signoff audit verify` and restore the log from a copy."
                        )
                    head_hash = last["entry_hash"]
                if record.get("index") != size or record.get("prev_hash") != head_hash:
                    raise ChainConflict(f"the head of {self.path} moved (now {size} entries)")
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def store_from_settings(settings: Settings, *, incremental: bool = False) -> "LogStore":
    """PostgreSQL when ``SIGNOFF_DATABASE_URL`` is set (several workers, one chain), otherwise the
    file under the state directory."""
    if settings.database_url:
        from signoff.pgstore import PostgresLogStore

        return PostgresLogStore(settings.database_url, os.environ.get("SIGNOFF_AUDIT_CHAIN", "default"))
    return FileLogStore(settings.audit_log, incremental=incremental)


def checkpoint_store_from_settings(settings: Settings) -> "CheckpointStore":
    if settings.database_url:
        from signoff.pgstore import PostgresCheckpointStore

        return PostgresCheckpointStore(settings.database_url, os.environ.get("SIGNOFF_AUDIT_CHAIN", "default"))  # type: ignore[return-value]
    return CheckpointStore(checkpoint_path(settings))


def _find_record(entries: Iterable[dict[str, Any]], workflow_id: str, sequence: int) -> dict[str, Any] | None:
    for entry in entries:
        if entry.get("workflow_id") == workflow_id and entry.get("sequence") == sequence and "corrupt" not in entry:
            return entry
    return None


def _statement_or_none(entry: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return statement_of(entry["envelope"])
    except (KeyError, TypeError, ValueError):
        return None


def chained_statement(statement: dict[str, Any], *, index: int, prev_hash: str, logged_at: str) -> dict[str, Any]:
    """``statement`` with its place in the log under the signature: the entry's index, the hash
    of the entry before it and when it was appended. A record therefore cannot be moved,
    dropped from between two others or re-linked without its signature failing, even by someone
    who recomputes every hash; only the key holder can build a chain."""
    predicate = dict(statement["predicate"])
    predicate["log"] = {"index": index, "prev_hash": prev_hash, "logged_at": logged_at}
    return {**statement, "predicate": predicate}


def unchained(statement: dict[str, Any] | None) -> dict[str, Any] | None:
    """The decision a record states, without its place in the log (see `chained_statement`)."""
    if not isinstance(statement, dict) or not isinstance(statement.get("predicate"), dict) or "log" not in statement["predicate"]:
        return statement
    predicate = {k: v for k, v in statement["predicate"].items() if k != "log"}
    return {**statement, "predicate": predicate}


def signed_place(statement: dict[str, Any] | None) -> dict[str, Any] | None:
    """The signed ``{"index", "prev_hash", "logged_at"}`` of a record, or None for records
    written before the chain was signed."""
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    place = predicate.get("log") if isinstance(predicate, dict) else None
    return place if isinstance(place, dict) else None


_WRITER_LOCKS: dict[str, threading.Lock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_lock(store: LogStore) -> threading.Lock:
    """One lock per log (file path or database chain) shared by every appender in the process."""
    key = repr(store)
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(key, threading.Lock())


def append_record(
    store: LogStore,
    decision: DecisionInput,
    signer: DecisionSigner,
    *,
    max_attempts: int = 200,
    now: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Sign ``decision`` with its place in the log and chain it on; return the (new or
    existing) entry.

    Idempotent on (workflow_id, sequence): an activity retried after its append finds its own
    record and appends nothing. The same key with different content is refused loudly, because
    it means the history and the log disagree (tampering, or a workflow bug numbering twice).
    The signature covers the back-link, so losing the race for the head means signing again.

    Raises:
        RecordConflict: the same (workflow_id, sequence) is already logged with other content.
        AuditLogCorrupt: the log's last line cannot be read.
        AuditLogBusy: lost the race for the head ``max_attempts`` times.
    """
    statement = build_statement(decision)
    clock = now or (lambda: datetime.now(timezone.utc))
    head = getattr(store, "head", None)  # a store that can say its head without reading the log
    lock = _writer_lock(store)
    for attempt in range(max_attempts):
        # Writers in this process take turns (no signature wasted on a lost race); other
        # processes are serialised by the store itself (flock / advisory lock).
        with lock:
            if head is not None:
                size, last = head()
                entries = [last] if last is not None else []
            else:
                entries = store.entries()
                size = len(entries)
            finder = getattr(store, "find", None)
            existing = finder(decision.workflow_id, decision.sequence) if finder else _find_record(entries, decision.workflow_id, decision.sequence)
            if existing is not None:
                if unchained(_statement_or_none(existing)) == statement:
                    return existing
                raise RecordConflict(
                    f"decision {decision.sequence} of workflow {decision.workflow_id} is already in the audit log "
                    f"(entry {existing.get('index')}) with different content; investigate with `signoff audit verify {decision.workflow_id}` before retrying."
                )
            if entries and ("corrupt" in entries[-1] or not isinstance(entries[-1].get("entry_hash"), str)):
                raise AuditLogCorrupt(
                    "the last entry of the audit log is unreadable, so nothing can be chained to it; "
                    "run `signoff audit verify` and restore the log from a copy."
                )
            index = size
            prev_hash = entries[-1]["entry_hash"] if entries else GENESIS_HASH
            signed = signer.sign(canonical_json(chained_statement(statement, index=index, prev_hash=prev_hash, logged_at=_iso(clock()))))
            entry: dict[str, Any] = {
                "index": index,
                "prev_hash": prev_hash,
                "entry_hash": compute_entry_hash(index, prev_hash, signed.envelope, signed.sigstore_bundle),
                "envelope": signed.envelope,
                "workflow_id": decision.workflow_id,
                "sequence": decision.sequence,
                "kind": decision.kind,
            }
            if signed.sigstore_bundle is not None:
                entry["sigstore_bundle"] = signed.sigstore_bundle
            try:
                store.append(entry)
                return entry
            except ChainConflict:
                pass
        time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
    raise AuditLogBusy(
        f"could not append to the audit log after {max_attempts} attempts because other writers kept moving its head; retry the activity."
    )


def workflow_ids(store: LogStore) -> list[str]:
    """Every workflow id with at least one record, in order of first appearance."""
    seen: dict[str, None] = {}
    for entry in store.entries():
        wid = entry.get("workflow_id")
        if isinstance(wid, str):
            seen.setdefault(wid, None)
    return list(seen)


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Problem:
    """One thing wrong, naming the entry (its stored index, or its line when unreadable)."""

    message: str
    index: int | None = None
    sequence: int | None = None
    kind: Literal["invalid", "missing", "extra", "mismatch", "unavailable", "chain", "cut", "gap", "key", "outcome"] = "invalid"

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index, "sequence": self.sequence, "message": self.message}


@dataclass
class VerifyReport:
    """The outcome of `verify`: ``ok`` only when there is not a single problem."""

    entries: int
    records: int
    keyid: str
    head_hash: str
    workflow_id: str | None = None
    problems: list[Problem] = field(default_factory=list)
    trust: str = ""
    keys: list[str] = field(default_factory=list)
    checkpoints: int = 0
    covered: int = 0
    legacy: int = 0
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "workflow_id": self.workflow_id,
            "entries": self.entries,
            "records": self.records,
            "keyid": self.keyid,
            "head_hash": self.head_hash,
            "trust": self.trust,
            "keys": self.keys,
            "checkpoints": self.checkpoints,
            "covered_by_checkpoints": self.covered,
            "unsigned_chain_entries": self.legacy,
            "workflows": self.workflows,
            "problems": [p.to_dict() for p in self.problems],
        }


def _label(entry: dict[str, Any], position: int) -> str:
    """"entry 3 (line 4)": the stored index, and where to find it in the file (or the store)."""
    line = entry.get("_line", entry.get("line"))
    where = f"line {line}" if line is not None else f"position {position}"
    index = entry.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        return f"entry {index} ({where})"
    return f"the entry at {where}"


def _signatures_by(envelope: dict[str, Any], keys: dict[str, "TrustedKey"]) -> tuple[list[str], list[str], list[str]]:
    """(key ids of the trusted keys whose signature verifies, of trusted keys whose signature
    does not, of keys the trust does not list) over the envelope's PAE."""
    good: list[str] = []
    bad: list[str] = []
    unknown: list[str] = []
    signatures = envelope.get("signatures")
    try:
        message = pae(str(envelope.get("payloadType", "")), _unb64(envelope["payload"]))
    except (KeyError, TypeError, binascii.Error):
        return good, bad, unknown
    for signature in signatures if isinstance(signatures, list) else []:
        if not isinstance(signature, dict):
            continue
        kid = str(signature.get("keyid") or "")
        candidates = [k for k in ([keys[kid]] if kid in keys else (list(keys.values()) if not kid else [])) if k.public_key is not None]
        if not candidates:
            unknown.append(kid)
            continue
        for trusted in candidates:
            if trusted.public_key is None:
                continue
            try:
                trusted.public_key.verify(_unb64(str(signature.get("sig", ""))), message)
                good.append(trusted.keyid)
                break
            except (InvalidSignature, binascii.Error, ValueError):
                continue
        else:
            bad.append(kid or "(no keyid)")
    return good, bad, unknown


def _check_signature(
    envelope: dict[str, Any], keys: dict[str, "TrustedKey"], at: datetime | None, source: str, *, retired: dict[str, int] | None = None, position: int = 0
) -> str | None:
    """None when a trusted key that was valid at ``at`` signed the envelope, else why not."""
    if not isinstance(envelope.get("signatures"), list) or not envelope["signatures"]:
        return "has no signatures"
    try:
        _unb64(envelope["payload"])
    except (KeyError, TypeError, binascii.Error) as e:
        return f"has a payload that is not base64 ({e})"
    good, bad, unknown = _signatures_by(envelope, keys)
    reasons: list[str] = []
    for kid in good:
        key = keys[kid]
        if retired and kid in retired and position > retired[kid]:
            reasons.append(f"is signed by key {kid[:16]}…, which was rotated out at entry {retired[kid]} before this record")
        elif not key.valid_at(at):
            reasons.append(
                f"is signed by key {kid[:16]}… outside its validity period "
                f"(valid {key.period()}; the record says it was logged at {_iso(at) if at else 'an unknown time'})"
            )
        else:
            return None
    if reasons:
        return reasons[0]
    if bad:
        return f"has a signature that does not verify with key {bad[0][:16]}…"
    missing = [k for k in keys.values() if k.public_key is None]
    if unknown and any(m.keyid == unknown[0] for m in missing):
        return f"is signed by key {unknown[0][:16]}…, which is pinned but whose public key was not found; add its PEM to the trust file"
    return (
        f"is signed by key {unknown[0][:16] if unknown else '?'}…, which the pinned keys ({source}) do not include: "
        "the signing key was swapped or the record forged"
    )


def _check_sigstore(entry: dict[str, Any]) -> str | None:
    """Keyless records: the bundle must verify with sigstore and wrap exactly the logged envelope.

    The expected identity comes from SIGNOFF_SIGSTORE_IDENTITY / SIGNOFF_SIGSTORE_ISSUER; without
    them there is nothing to hold the certificate to, so the record does not count as verified.
    """
    identity = os.environ.get(SIGSTORE_IDENTITY_ENV)
    issuer = os.environ.get(SIGSTORE_ISSUER_ENV)
    if not identity or not issuer:
        return "is signed keyless with sigstore; set SIGNOFF_SIGSTORE_IDENTITY and SIGNOFF_SIGSTORE_ISSUER to the signer to verify it"
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    try:
        bundle = Bundle.from_json(json.dumps(entry["sigstore_bundle"]))
        envelope = bundle._dsse_envelope
        if envelope is None or json.loads(envelope.to_json()) != entry.get("envelope"):
            return "has a sigstore bundle that does not wrap the logged envelope"
        verifier = Verifier.staging() if os.environ.get(SIGSTORE_STAGING_ENV) == "1" else Verifier.production()
        verifier.verify_dsse(bundle, policy.Identity(identity=identity, issuer=issuer))
    except (SigstoreError, ValueError, KeyError) as e:
        return f"has a sigstore bundle that does not verify ({e})"
    return None


def _check_statement(entry: dict[str, Any], statement: dict[str, Any]) -> list[str]:
    wrong: list[str] = []
    if statement.get("_type") != STATEMENT_TYPE:
        wrong.append(f"is not an in-toto Statement v1 (_type {statement.get('_type')!r})")
    if statement.get("predicateType") != PREDICATE_TYPE and statement.get("predicateType") not in ATTESTATION_TYPES:
        wrong.append(f"has predicate type {statement.get('predicateType')!r}, not {PREDICATE_TYPE} or a known attestation type")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        wrong.append("has no predicate")
        return wrong
    for name in ("workflow_id", "sequence", "kind"):
        if entry.get(name) != predicate.get(name):
            wrong.append(
                f"says {name} {entry.get(name)!r} but its signed statement says {predicate.get(name)!r}"
            )
    return wrong


def _at(place: dict[str, Any] | None, statement: dict[str, Any] | None) -> datetime | None:
    """When a record was logged: its signed ``logged_at``, else (older records) its decision time."""
    raw = (place or {}).get("logged_at")
    if raw is None and isinstance(statement, dict) and isinstance(statement.get("predicate"), dict):
        raw = statement["predicate"].get("at")
    try:
        return _parse_time(raw)
    except ConfigError:
        return None


def _signed_fields(entry: dict[str, Any], statement: dict[str, Any] | None) -> tuple[str | None, str | None, int | None]:
    """(workflow id, kind, sequence) as the record's *signed* statement says; the copies beside
    the envelope are neither signed nor hashed, so nothing is decided on them."""
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    source = predicate if isinstance(predicate, dict) else entry
    wid, kind, sequence = source.get("workflow_id"), source.get("kind"), source.get("sequence")
    return (
        wid if isinstance(wid, str) else None,
        kind if isinstance(kind, str) else None,
        sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
    )


def _learn_rotations(entries: list[dict[str, Any]], keys: dict[str, TrustedKey]) -> tuple[dict[str, int], list[Problem]]:
    """Walk the rotation records in chain order: each one signed by a key trusted at its time
    *and* by the new key it names adds that key (valid from the rotation) and closes the old
    key's period. So an auditor who pinned only the first key follows every rotation. Returns
    where each old key was rotated out (its position) and the rotations that do not verify."""
    retired: dict[str, int] = {}
    problems: list[Problem] = []
    last_at: datetime | None = None
    for position, entry in enumerate(entries):
        if "corrupt" in entry:
            continue
        statement = _statement_or_none(entry)
        entry_at = _at(signed_place(statement), statement)
        wid, kind, _ = _signed_fields(entry, statement)
        previous_at, last_at = last_at, entry_at or last_at
        if wid != KEYS_WORKFLOW or kind != ROTATION_KIND:
            continue
        predicate = (statement or {}).get("predicate") if isinstance((statement or {}).get("predicate"), dict) else {}
        evidence = predicate.get("evidence") if isinstance(predicate.get("evidence"), dict) else {}
        at = _at(signed_place(statement), statement)
        label = _label(entry, position)
        old_id, new_id = str(evidence.get("old_keyid", "")), str(evidence.get("new_keyid", ""))
        try:
            new_key = serialization.load_pem_public_key(str(evidence.get("new_public_key_pem", "")).encode())
        except ValueError:
            new_key = None
        if not isinstance(new_key, Ed25519PublicKey) or keyid_for(new_key) != new_id:
            problems.append(Problem(f"{label} is a key rotation whose new public key does not match its key id {new_id[:16]}…", entry.get("index"), kind="key"))
            continue
        old = keys.get(old_id)
        good, _, _ = _signatures_by(entry.get("envelope") or {}, {**({old_id: old} if old else {}), new_id: TrustedKey(new_id, new_key)})
        # the old key must still be in force: not rotated out before (a retired key cannot bring
        # in a key of its own), not past its period, and not back-dated behind the log
        old_valid = (
            old is not None
            and old_id not in retired
            and at is not None
            and (previous_at is None or at >= previous_at)
            and (old.not_before is None or at >= old.not_before)
            and (old.not_after is None or at <= old.not_after)
        )
        if old_id not in good or new_id not in good or not old_valid:
            problems.append(
                Problem(
                    f"{label} is a key rotation from {old_id[:16]}… to {new_id[:16]}… that is not signed by both keys while the old one was trusted",
                    entry.get("index"),
                    kind="key",
                )
            )
            continue
        if new_id not in keys:
            # valid from when the rotation started (the new key is on disk before its record lands)
            started = _at(None, statement) or at
            keys[new_id] = TrustedKey(new_id, new_key, min(started, at) if started and at else at, via=f"rotation at {label}")
        elif keys[new_id].public_key is None:
            keys[new_id].public_key = new_key
        if old.not_after is None or (at is not None and at < old.not_after):
            old.not_after = at
        retired[old_id] = position
    return retired, problems


def _check_checkpoints(
    entries: list[dict[str, Any]], checkpoints: list[dict[str, Any]], keys: dict[str, TrustedKey], source: str, retired: dict[str, int]
) -> tuple[int, int, list[Problem]]:
    """Each checkpoint must be signed by a key trusted at its time, and the log must still hold
    exactly the prefix it signed. Returns (valid checkpoints, entries they cover, problems)."""
    problems: list[Problem] = []
    valid = covered = 0
    for number, record in enumerate(checkpoints, start=1):
        where = f"checkpoint {number}" + (f" ({record['_source']})" if record.get("_source") else "")
        if "corrupt" in record:
            problems.append(Problem(f"{where} cannot be read: {record['corrupt']}", kind="cut"))
            continue
        envelope = record.get("envelope") if isinstance(record.get("envelope"), dict) else {}
        statement = _statement_or_none({"envelope": envelope}) or {}
        predicate = statement.get("predicate") if isinstance(statement.get("predicate"), dict) else {}
        if statement.get("predicateType") != CHECKPOINT_PREDICATE or not isinstance(predicate.get("size"), int):
            problems.append(Problem(f"{where} is not a signoff audit checkpoint", kind="cut"))
            continue
        at = _at(None, statement)
        covers = predicate["size"] - 1
        why = _check_sigstore(record) if "sigstore_bundle" in record else _check_signature(envelope, keys, at, source, retired=retired, position=covers)
        if why is not None:
            problems.append(Problem(f"{where} {why}", kind="cut"))
            continue
        size, head = predicate["size"], predicate.get("head_hash")
        signed_at = predicate.get("at")
        if size > len(entries):
            problems.append(
                Problem(
                    f"{where}, signed at {signed_at}, covers {size} entries but the log has only {len(entries)}: "
                    f"entries {len(entries)}–{size - 1} were cut from the end",
                    len(entries),
                    kind="cut",
                )
            )
            continue
        if size > 0 and entries[size - 1].get("entry_hash") != head:
            problems.append(
                Problem(
                    f"{where}, signed at {signed_at}, says entry {size - 1} has hash {str(head)[:16]}… but the log's entry {size - 1} differs: "
                    "records before it were rewritten, removed or reordered",
                    size - 1,
                    kind="cut",
                )
            )
            continue
        valid += 1
        covered = max(covered, size)
    return valid, covered, problems


def verify(
    store: LogStore,
    trust: "AuditTrust | Ed25519PublicKey",
    *,
    workflow_id: str | None = None,
    checkpoints: list[dict[str, Any]] | None = None,
) -> VerifyReport:
    """Check the log end to end; every problem names the entry and the check that failed.

    * the chain: indexes, back-links and entry hashes, and each record's *signed* place in the
      log (index and back-link under the signature), over the whole log;
    * signatures by a pinned key that was valid when the record was logged (``trust``: the
      pinned key ids with periods; rotation records extend it);
    * every checkpoint: signed, and the log still holds the prefix it covers (cut records);
    * per workflow: decisions numbered 1, 2, 3… without gaps or repeats; whether it has its
      outcome record and whether a checkpoint covers its last record (``report.workflows``).

    Signatures and statements are checked for every record, or only ``workflow_id``'s; asking
    about a workflow with no records is itself a problem.
    """
    entries = store.entries()
    if isinstance(trust, Ed25519PublicKey):
        trust = AuditTrust.single(trust)
    keys = {kid: TrustedKey(k.keyid, k.public_key, k.not_before, k.not_after, k.via) for kid, k in trust.keys.items()}
    retired, rotation_problems = _learn_rotations(entries, keys)
    report = VerifyReport(
        entries=len(entries), records=0, keyid=next(iter(trust.keys), ""), head_hash=GENESIS_HASH, workflow_id=workflow_id, trust=trust.source,
        keys=[f"{k.keyid} ({k.via}, valid {k.period()})" for k in keys.values()],
    )
    problems = report.problems
    problems.extend(p for p in rotation_problems if workflow_id in (None, KEYS_WORKFLOW))
    expected_prev: str | None = GENESIS_HASH
    seen: dict[tuple[str, int], str] = {}
    signed_chain_seen = False
    signed_next: tuple[int, str] = (0, GENESIS_HASH)
    previous_changed = False
    sequences: dict[str, dict[int, int]] = {}
    for position, entry in enumerate(entries):
        label = _label(entry, position)
        if "corrupt" in entry:
            problems.append(Problem(f"{label} cannot be read: {entry['corrupt']}"))
            expected_prev = None
            continue
        index = entry.get("index")
        envelope = entry.get("envelope")
        prev_hash = entry.get("prev_hash")
        stored_hash = entry.get("entry_hash")
        named_index = index if isinstance(index, int) and not isinstance(index, bool) else None
        if named_index is None or not isinstance(envelope, dict) or not isinstance(prev_hash, str) or not isinstance(stored_hash, str):
            problems.append(Problem(f"{label} is missing index, prev_hash, entry_hash or envelope", named_index))
            expected_prev = stored_hash if isinstance(stored_hash, str) else None
            continue
        if index != position:
            problems.append(
                Problem(f"{label} is entry number {position} of the log, not {index} (a record was deleted, inserted or moved)", index, kind="chain")
            )
        if expected_prev is not None and prev_hash != expected_prev:
            problems.append(
                Problem(f"{label} does not link to the entry before it (prev_hash differs: the chain is broken here)", index, kind="chain")
            )
        changed = compute_entry_hash(index, prev_hash, envelope, entry.get("sigstore_bundle")) != stored_hash
        if changed:
            problems.append(Problem(f"{label} does not match its entry_hash (its content was changed after it was written)", index))
        statement = _statement_or_none(entry)
        place = signed_place(statement)
        if place is not None:
            signed_chain_seen = True
            # Compared with the entry before it *as signed*, so a break is named once, where
            # records were removed, inserted or swapped, however the stored hashes were redone.
            expected_index, expected_link = (0, GENESIS_HASH) if position == 0 else signed_next
            if (place.get("index"), place.get("prev_hash")) != (expected_index, expected_link) and not (
                previous_changed and place.get("index") == expected_index  # one edited record is named once, at itself
            ):
                problems.append(
                    Problem(
                        f"{label} was signed as entry {place.get('index')} after hash {str(place.get('prev_hash'))[:16]}…, but it stands at entry {position} "
                        "after a different record: records were deleted, inserted or reordered here and the chain recomputed",
                        index,
                        kind="chain",
                    )
                )
            signed_next = (
                (place["index"] + 1 if isinstance(place.get("index"), int) else -1),
                compute_entry_hash(place.get("index"), place.get("prev_hash"), envelope, entry.get("sigstore_bundle")),
            )
        else:
            # a record from before places were signed: the next one links to it as stored
            signed_next = (index + 1, stored_hash)
        previous_changed = changed
        if place is None and statement is not None:
            report.legacy += 1
            if signed_chain_seen:
                problems.append(
                    Problem(f"{label} has no signed place in the log but follows records that do: it was not appended by signoff", index, kind="chain")
                )
        expected_prev = stored_hash
        report.head_hash = stored_hash

        wid, kind, sequence = _signed_fields(entry, statement)
        if statement is not None and (workflow_id is None or wid == workflow_id or entry.get("workflow_id") == workflow_id):
            for wrong in _check_statement(entry, statement):  # relabelled copies beside the envelope
                problems.append(Problem(f"{label} {wrong}", index, sequence))
        if isinstance(wid, str) and sequence is not None:
            sequences.setdefault(wid, {}).setdefault(sequence, position)
            summary = report.workflows.setdefault(wid, {"records": 0, "last_sequence": 0, "last_entry": 0, "outcome": None, "needs_outcome": False})
            summary["records"] += 1
            if not str(kind or "").startswith(NO_OUTCOME_KINDS):
                summary["needs_outcome"] = True
            summary["last_sequence"] = max(summary["last_sequence"], sequence)
            summary["last_entry"] = position
            if kind in OUTCOME_KINDS:
                summary["outcome"] = position
        if workflow_id is not None and wid != workflow_id:
            continue
        report.records += 1
        key = (str(wid), sequence if sequence is not None else -1)
        if key in seen:
            problems.append(
                Problem(f"{label} repeats decision {sequence} of workflow {key[0]}, already recorded at {seen[key]}", index, sequence)
            )
        else:
            seen[key] = label
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            problems.append(Problem(f"{label} has payload type {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}", index, sequence))
        if "sigstore_bundle" in entry:
            why = _check_sigstore(entry)
        else:
            why = _check_signature(envelope, keys, _at(place, statement), trust.source, retired=retired, position=position)
        if why is not None:
            problems.append(Problem(f"{label} {why}", index, sequence, kind="key"))
        if statement is None:
            problems.append(Problem(f"{label} has a payload that is not a JSON statement", index, sequence))
    for wid, numbers in sequences.items():
        if workflow_id is not None and wid != workflow_id:
            continue
        missing: list[int] = []
        expected = 1
        for n in sorted(numbers):  # walk what is there: a forged huge number costs nothing
            if n > expected and len(missing) < 6:
                missing.extend(range(expected, min(n, expected + 6 - len(missing))))
            expected = max(expected, n + 1)
        if missing:
            shown = ", ".join(str(n) for n in missing[:5]) + (" …" if len(missing) > 5 else "")
            after = max((n for n in numbers if n < missing[0]), default=0)
            problems.append(
                Problem(
                    f"workflow {wid} has decisions up to {max(numbers)} but not {shown}: the record after decision {after} "
                    f"(entry {numbers[after] if after else 'none'}) is missing",
                    numbers[after] if after else None,
                    missing[0],
                    kind="gap",
                )
            )
    if checkpoints is not None:
        report.checkpoints, report.covered, found = _check_checkpoints(entries, checkpoints, keys, trust.source, retired)
        problems.extend(found)
    for summary in report.workflows.values():
        summary["covered"] = summary["last_entry"] < report.covered
    if workflow_id is not None and report.records == 0:
        problems.append(Problem(f"there are no decision records for workflow {workflow_id}", kind="missing"))
    return report


# --------------------------------------------------------------------------- show


def _who(actor: dict[str, Any]) -> tuple[str, str]:
    """(who, channel): a person and their channel, an agent (with its model) acting for a person,
    or the orchestrator itself."""
    agent = actor.get("agent") if isinstance(actor.get("agent"), dict) else None
    model = actor.get("model") or (agent or {}).get("model")
    who = actor.get("identity") or actor.get("by") or actor.get("email") or actor.get("id") or (agent or {}).get("id")
    if who and model:
        who = f"{who} ({model})"
    if actor.get("requested_by") and not actor.get("identity"):
        who = f"{who or actor.get('orchestrator') or 'signoff'} for {actor['requested_by']}"
    channel = actor.get("channel") or ("agent" if agent or model else "workflow")
    return str(who or actor.get("orchestrator") or "signoff"), str(channel)


def show(workflow_id: str, store: LogStore) -> list[dict[str, Any]]:
    """The workflow's decisions in order, one row each: when, what, who (and channel), why.

    Rows come from the records as stored; `verify` says whether to trust them.

    Raises:
        NotFound: the log has no record for ``workflow_id``.
    """
    rows: list[dict[str, Any]] = []
    for entry in store.entries():
        if entry.get("workflow_id") != workflow_id or "corrupt" in entry:
            continue
        statement = _statement_or_none(entry) or {}
        predicate = statement.get("predicate") if isinstance(statement.get("predicate"), dict) else {}
        actor = predicate.get("actor") if isinstance(predicate.get("actor"), dict) else {}
        who, channel = _who(actor)
        subject = (statement.get("subject") or [{}])[0] if isinstance(statement.get("subject"), list) else {}
        rows.append(
            {
                "index": entry.get("index"),
                "sequence": predicate.get("sequence", entry.get("sequence")),
                "when": predicate.get("at"),
                "kind": predicate.get("kind", entry.get("kind")),
                "outcome": predicate.get("outcome"),
                "who": who,
                "channel": channel,
                "why": "; ".join(str(r) for r in predicate.get("reasons") or []),
                "subject": subject.get("name") if isinstance(subject, dict) else None,
                "evidence": predicate.get("evidence", {}),
                "run_id": predicate.get("run_id"),
                "entry_hash": entry.get("entry_hash"),
            }
        )
    if not rows:
        raise NotFound(f"there are no decision records for {workflow_id}; check the id with `signoff release list`.")
    rows.sort(key=lambda r: (r["sequence"] if isinstance(r["sequence"], int) else 1 << 62, r["index"] or 0))
    return rows


def format_timeline(rows: list[dict[str, Any]]) -> str:
    """A timeline a person reads top to bottom: when, #, what → outcome, who via channel, why."""
    if not rows:
        return "no decisions recorded"
    kind_width = max(len(str(r["kind"])) for r in rows)
    outcome_width = max(len(str(r["outcome"])) for r in rows)
    lines = []
    for row in rows:
        line = (
            f"{row['when'] or '?':<27}  #{row['sequence']!s:<3} {row['kind']!s:<{kind_width}}  "
            f"{row['outcome']!s:<{outcome_width}}  {row['who']} via {row['channel']}"
        )
        if row["why"]:
            line += f" — {row['why']}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- cross-check


async def cross_check(client: "Client", workflow_id: str, store: LogStore) -> list[Problem]:
    """Compare the log with the Temporal history of ``workflow_id`` (every run the log names,
    plus the latest run).

    * an ``append_decision`` activity that completed but has no record → ``missing``
    * a record whose signed statement differs from the activity's input, or whose index or
      hash differs from what the activity returned → ``mismatch``
    * a record with no scheduled activity in its run's history → ``extra``
    * a run named by a record whose history is gone (retention) → ``unavailable``

    Activities still running or failed are not expected to have a record yet.
    """
    from temporalio.api.enums.v1 import EventType
    from signoff.converter import data_converter
    from temporalio.service import RPCError, RPCStatusCode

    # a `release_reaped` record is written by the reaper about a release Temporal had already
    # ended: it is not in that release's history (the reaper's own run names it)
    records = [e for e in store.entries() if e.get("workflow_id") == workflow_id and "corrupt" not in e and e.get("kind") != "release_reaped"]
    problems: list[Problem] = []
    run_ids: list[str] = []
    def unreachable(e: RPCError) -> SignoffError:
        return TemporalUnreachable(
            f"Temporal did not return the history of {workflow_id} ({e.message}); check that Temporal is reachable and try again."
        )

    try:
        run_ids.append((await client.get_workflow_handle(workflow_id).describe()).run_id)
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise unreachable(e) from e
    for entry in records:
        predicate = (_statement_or_none(entry) or {}).get("predicate")
        run_id = predicate.get("run_id") if isinstance(predicate, dict) else None
        if isinstance(run_id, str) and run_id not in run_ids:
            run_ids.append(run_id)

    converter = data_converter.payload_converter
    # (decision, activity result or None while it has not completed), in history order
    scheduled: list[tuple[DecisionInput, dict[str, Any] | None]] = []
    unavailable_runs: set[str] = set()
    for run_id in run_ids:
        try:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise unreachable(e) from e
            unavailable_runs.add(run_id)
            problems.append(
                Problem(
                    f"the history of run {run_id} of {workflow_id} is no longer in Temporal, so its records cannot be cross-checked",
                    kind="unavailable",
                )
            )
            continue
        inputs: dict[int, list[DecisionInput]] = {}
        results: dict[int, list[Any]] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                name = attrs.activity_type.name
                if name not in (APPEND_ACTIVITY, APPEND_BATCH_ACTIVITY):
                    continue
                try:
                    if name == APPEND_BATCH_ACTIVITY:
                        [decisions] = converter.from_payloads(list(attrs.input.payloads), [list[DecisionInput]])
                    else:
                        decisions = converter.from_payloads(list(attrs.input.payloads), [DecisionInput])
                except Exception as e:  # an input we cannot read is itself a finding, not a crash
                    problems.append(
                        Problem(
                            f"the {name} activity scheduled at event {event.event_id} of run {run_id} has an input that is not a DecisionInput ({e})",
                            kind="mismatch",
                        )
                    )
                    continue
                inputs[event.event_id] = decisions
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                completed = event.activity_task_completed_event_attributes
                if completed.scheduled_event_id in inputs:
                    try:
                        [result] = converter.from_payloads(list(completed.result.payloads), [Any])
                    except Exception:
                        result = {}
                    each = result if isinstance(result, list) else [result]
                    results[completed.scheduled_event_id] = [r if isinstance(r, dict) else {} for r in each]
        for event_id, decisions in inputs.items():
            done = results.get(event_id)
            scheduled.extend((d, None if done is None else (done[i] if i < len(done) else {})) for i, d in enumerate(decisions))

    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in records:
        if isinstance(entry.get("sequence"), int):
            by_key.setdefault((workflow_id, entry["sequence"]), entry)
    matched: set[int] = set()
    for decision, result in scheduled:
        key = (decision.workflow_id, decision.sequence)
        entry = by_key.get(key) if decision.workflow_id == workflow_id else None
        if entry is None:
            if result is not None:
                problems.append(
                    Problem(
                        f"decision {decision.sequence} ({decision.kind} → {decision.outcome}) was recorded by a completed append_decision activity but has no record in the log",
                        sequence=decision.sequence,
                        kind="missing",
                    )
                )
            continue
        matched.add(id(entry))
        index = entry.get("index")
        try:
            expected = build_statement(decision)
        except ValueError as e:
            problems.append(Problem(f"decision {decision.sequence} in the history cannot be a record ({e})", index, decision.sequence, "mismatch"))
            continue
        if unchained(_statement_or_none(entry)) != expected:
            problems.append(
                Problem(
                    f"entry {index} (decision {decision.sequence}) does not match the decision in the Temporal history (its content was changed)",
                    index,
                    decision.sequence,
                    "mismatch",
                )
            )
        if result and (result.get("index") != index or result.get("entry_hash") != entry.get("entry_hash")):
            problems.append(
                Problem(
                    f"entry {index} (decision {decision.sequence}) is not the entry the activity wrote (it returned index {result.get('index')}, hash {str(result.get('entry_hash'))[:16]}…)",
                    index,
                    decision.sequence,
                    "mismatch",
                )
            )
    for entry in records:
        if id(entry) in matched:
            continue
        predicate = (_statement_or_none(entry) or {}).get("predicate")
        if isinstance(predicate, dict) and predicate.get("run_id") in unavailable_runs:
            continue  # already reported: the history that would show it is gone
        problems.append(
            Problem(
                f"entry {entry.get('index')} (decision {entry.get('sequence')}) has no append_decision activity in the Temporal history of {workflow_id}",
                entry.get("index") if isinstance(entry.get("index"), int) else None,
                entry.get("sequence") if isinstance(entry.get("sequence"), int) else None,
                "extra",
            )
        )
    return problems


async def history_check(client: "Client", workflow_id: str, store: LogStore, report: VerifyReport) -> tuple[str, list[Problem]]:
    """Cross-check one workflow with Temporal, and say which guarantee the answer rests on.

    * ``history``: Temporal still has the history; every decision it made has its record, and a
      workflow that has ended has its outcome record.
    * ``checkpoints``: the history is gone (retention); the records stand on their own because
      their chain and signatures verify, their sequence runs 1…n without gaps, the outcome record
      is there and a signed checkpoint covers the last one. Nothing is asked of the history.
    """
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    problems = await cross_check(client, workflow_id, store)
    summary = report.workflows.get(workflow_id)
    if any(p.kind == "unavailable" for p in problems):
        rest = [p for p in problems if p.kind != "unavailable"]
        if summary is not None and (summary["outcome"] is not None or not summary["needs_outcome"]) and summary["covered"]:
            return "checkpoints", rest
        why = "it has no outcome record" if summary is None or (summary["outcome"] is None and summary["needs_outcome"]) else (
            f"no signed checkpoint covers its last record (entry {summary['last_entry']}); sign one with `signoff audit checkpoint --new`"
        )
        return "none", rest + [
            Problem(f"the Temporal history of {workflow_id} is gone and its records cannot stand on their own: {why}", kind="unavailable")
        ]
    try:
        status = (await client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise TemporalUnreachable(f"Temporal did not describe {workflow_id} ({e.message}); check that Temporal is reachable and try again.") from e
        status = None
    if status not in (None, WorkflowExecutionStatus.RUNNING) and (summary is None or (summary["outcome"] is None and summary["needs_outcome"])):
        last = f"entry {summary['last_entry']}" if summary else "none"
        problems.append(
            Problem(
                f"workflow {workflow_id} has ended ({status.name.lower()}) but the log has no outcome record for it (its last record is {last}): "
                "records were cut, or it ended without recording why",
                kind="outcome",
            )
        )
    return "history", problems


# --------------------------------------------------------------------------- export


def _principals_in(chain: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for entry in chain:
        predicate = (_statement_or_none(entry) or {}).get("predicate")
        evidence = predicate.get("evidence") if isinstance(predicate, dict) else None
        if isinstance(evidence, dict) and isinstance(evidence.get("principal"), str):
            found.add(evidence["principal"])
    return found


def export(workflow_id: str, store: LogStore, public_key: "Ed25519PublicKey | AuditTrust", out: Path, *, registry: Any = None) -> dict[str, Any]:
    """Write the workflow's envelopes, their chain entries and the public key to ``out``.

    The file needs nothing from signoff to check: each envelope is a standard DSSE envelope
    (payloadType ``application/vnd.in-toto+json``, base64 payload, ed25519 signature over the
    PAE, keyid = sha256 of the raw public key); each chain entry's ``entry_hash`` is
    ``sha256(canonical_json({"index", "prev_hash", "envelope"}))``. Entries of other workflows
    are not exported, so the links between exported entries are not contiguous.

    Refuses to export records that do not verify, so a published file is never a broken one.
    """
    report = verify(store, public_key, workflow_id=workflow_id)
    if report.records == 0:
        raise NotFound(f"there are no decision records for {workflow_id}; check the id with `signoff release list`.")
    if not report.ok:
        raise VerificationError(
            f"the audit log fails verification ({report.problems[0]}); run `signoff audit verify {workflow_id}` to see every problem before exporting."
        )
    trust = AuditTrust.single(public_key) if isinstance(public_key, Ed25519PublicKey) else public_key
    signing_keys = {
        sig.get("keyid") for e in store.entries() if e.get("workflow_id") == workflow_id for sig in (e.get("envelope") or {}).get("signatures", [])
    }
    used = [k for k in trust.keys.values() if k.keyid in signing_keys and k.public_key is not None] or [
        k for k in trust.keys.values() if k.public_key is not None
    ]
    public_key = used[-1].public_key  # type: ignore[assignment]
    chain = [
        {k: v for k, v in e.items() if not k.startswith("_")}
        for e in store.entries()
        if e.get("workflow_id") == workflow_id and "corrupt" not in e
    ]
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "workflow_id": workflow_id,
        "exported_at": _iso(datetime.now(timezone.utc)),
        "payload_type": PAYLOAD_TYPE,
        "predicate_type": PREDICATE_TYPE,
        "public_key": {"keyid": keyid_for(public_key), "scheme": "ed25519", "pem": public_pem(public_key)},  # type: ignore[arg-type]
        "orchestrator_keys": [{"keyid": k.keyid, "scheme": "ed25519", "pem": public_pem(k.public_key)} for k in used],  # type: ignore[arg-type]
        "envelopes": [e["envelope"] for e in chain],
        "chain": chain,
        "chain_head": report.head_hash,
        "entry_hash": 'sha256 over canonical JSON (sorted keys, no spaces) of {"index", "prev_hash", "envelope"[, "sigstore_bundle"]}',
    }
    bundles = [e["sigstore_bundle"] for e in chain if "sigstore_bundle" in e]
    if bundles:
        document["sigstore_bundles"] = bundles
    if registry is not None:
        # The public keys of every principal whose proof a record carries (approvers, the
        # gateway, the starter), so an auditor checks each approval's own signature offline.
        document["principal_keys"] = {
            name: [public_pem(k) for k in registry.keys_of(*name.split(":", 1)).values()] for name in sorted(_principals_in(chain))
        }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_new_file(out, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n", 0o644, replace=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
            raise SignoffError(f"cannot write the export to {out} ({e.strerror}); choose another --out path.") from e
        raise
    return document


# --------------------------------------------------------------------------- offline check of an export


def verify_export(document: dict[str, Any], *, orchestrator_key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """Check an `audit export` file with nothing but the keys in it (or pinned ones).

    Each record's orchestrator signature and chain hash; and for every record that carries a
    principal's proof (an approval, a start, a promote), that proof's own signature by a key the
    export lists for that principal, and that what it signed is what the record says: the same
    decision on the same release and digest. So the approvals stand on the approvers' (and the
    gateway's) signatures, not on the orchestrator key alone.
    """
    from cryptography.hazmat.primitives import serialization as _ser

    from signoff.models import Proof
    from signoff.trust.dsse import envelope_signed_by
    from signoff.trust.keys import keyid as _keyid, parse_public_key
    from signoff.trust.proofs import request_of

    problems: list[str] = []
    approvals: list[dict[str, Any]] = []
    key = orchestrator_key
    if key is None:
        loaded = _ser.load_pem_public_key(str(document.get("public_key", {}).get("pem", "")).encode())
        if not isinstance(loaded, Ed25519PublicKey):
            raise VerificationError("the export's public key is not an ed25519 key; pin the orchestrator key to verify.")
        key = loaded
    principal_keys: dict[str, dict[str, Ed25519PublicKey]] = {}
    for name, pems in (document.get("principal_keys") or {}).items():
        keys = {}
        for pem in pems:
            try:
                k = parse_public_key(pem)
            except ValueError:
                continue
            keys[_keyid(k)] = k
        principal_keys[name] = keys
    orchestrator = {_keyid(key): key}
    if orchestrator_key is None:
        for listed in document.get("orchestrator_keys") or []:
            try:
                k = parse_public_key(str(listed.get("pem", "")))
            except (ValueError, AttributeError):
                continue
            orchestrator[_keyid(k)] = k
    for position, entry in enumerate(document.get("chain") or []):
        label = f"entry {entry.get('index', position)}"
        if envelope_signed_by(entry.get("envelope") or {}, orchestrator) is None:
            problems.append(f"{label} is not signed by the orchestrator key")
        if compute_entry_hash(entry.get("index"), entry.get("prev_hash"), entry.get("envelope"), entry.get("sigstore_bundle")) != entry.get("entry_hash"):
            problems.append(f"{label} does not match its entry_hash")
        statement = _statement_or_none(entry) or {}
        predicate = statement.get("predicate") if isinstance(statement.get("predicate"), dict) else {}
        evidence = predicate.get("evidence") if isinstance(predicate.get("evidence"), dict) else {}
        raw_proof = evidence.get("proof")
        if not isinstance(raw_proof, dict) or not raw_proof.get("envelope"):
            continue
        principal = str(evidence.get("principal") or "")
        proof = Proof.model_validate(raw_proof)
        if envelope_signed_by(proof.envelope or {}, principal_keys.get(principal, {})) is None:
            problems.append(f"{label} ({predicate.get('kind')} by {principal}) carries a proof whose signature does not verify with {principal}'s keys")
            continue
        try:
            request = request_of(proof)
        except ValueError as e:
            problems.append(f"{label} carries an unreadable proof ({e})")
            continue
        if request.get("subject") != document.get("workflow_id"):
            problems.append(f"{label}'s proof was signed for {request.get('subject')}, not {document.get('workflow_id')}")
            continue
        if predicate.get("kind") == "approval_attempt" and predicate.get("outcome") == "accepted":
            attempt = evidence.get("attempt") if isinstance(evidence.get("attempt"), dict) else {}
            if request.get("action") != attempt.get("decision") or request.get("digest") != attempt.get("digest"):
                problems.append(f"{label} says {attempt.get('decision')} of {attempt.get('digest')}, but its proof signed {request.get('action')} of {request.get('digest')}")
                continue
            approvals.append(
                {
                    "entry": entry.get("index"),
                    "by": request.get("on_behalf_of") or principal.split(":", 1)[-1],
                    "decision": request.get("action"),
                    "digest": request.get("digest"),
                    "gate": request.get("gate"),
                    "signed_by": principal,
                    "channel": request.get("channel"),
                }
            )
    return {"ok": not problems, "problems": problems, "approvals": approvals, "records": len(document.get("chain") or [])}
