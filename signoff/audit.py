"""Signed decision records and the hash-chained audit log.

"Can I prove what the agent did?" is answered here. Every decision a workflow makes becomes an
in-toto Statement v1 (predicate type ``https://signoff.dev/decision/v1``) wrapped in a DSSE
envelope signed by the orchestrator's ed25519 key (or keyless with sigstore when
``SIGNOFF_SIGSTORE=1``), and is appended to a log in which every entry carries the hash of the
one before it. Three independent checks then make tampering visible:

* ``verify``: every signature, every entry hash, every index and every back-link;
* ``cross_check``: every ``append_decision`` activity in the Temporal history has its record
  with the same content, and every record has its activity;
* ``export``: the envelopes and the public key in one JSON file that anyone can check with
  standard DSSE tooling, without signoff.

Storage is the `LogStore` protocol (two methods, optimistic concurrency) so a WORM object
store can back the log in production; `FileLogStore` (JSON lines, ``fcntl`` lock, ``fsync``)
is the default under the state directory.

Known limit: a hash chain cannot reveal that its *last* entries were cut off, because
nothing after them links back. ``cross_check`` catches that for any workflow whose history
is still in Temporal (the activity was scheduled and completed, the record is gone).
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
import threading
import time
from collections.abc import Iterable
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
        decoded = json.loads(_unb64(envelope["payload"]))
    except (KeyError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as e:
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


def init_keys(path: Path, *, force: bool = False) -> PublicKeyInfo:
    """Create the orchestrator's ed25519 key: PKCS#8 PEM at ``path`` (0600), public PEM beside it.

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


def sigstore_enabled() -> bool:
    return os.environ.get(SIGSTORE_ENV, "") == "1"


def signer_from_settings(settings: Settings) -> DecisionSigner:
    """Keyless when ``SIGNOFF_SIGSTORE=1``, otherwise the orchestrator key at ``settings.key_path``."""
    if sigstore_enabled():
        return SigstoreSigner(staging=os.environ.get(SIGSTORE_STAGING_ENV, "") == "1")
    return Ed25519Signer.from_path(settings.key_path)


def sign_decision(decision: DecisionInput, signer: DecisionSigner) -> SignedEnvelope:
    return signer.sign(canonical_json(build_statement(decision)))


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
    replaced, shrank, or whose last line changed is read again from the start. The default
    reads every byte each time, which is what `verify` and tools want.
    """

    def __init__(self, path: Path, *, incremental: bool = False) -> None:
        self.path = Path(path)
        self.incremental = incremental
        self._tail: tuple[int, bytes] = (0, b"")
        self._lock = threading.Lock()
        self._cached: list[dict[str, Any]] = []
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self._keys: dict[tuple[str, int], int] = {}

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
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
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
        """Entries as on disk now: cached complete lines plus anything appended since."""
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino)
        tail_start, tail = self._tail
        if (
            not self.incremental
            or identity != self._identity
            or st.st_size < self._offset
            or (tail and os.pread(fd, len(tail), tail_start) != tail)
        ):
            self._cached, self._offset, self._keys, self._identity, self._tail = [], 0, {}, identity, (0, b"")
        data = self._read_from(fd, self._offset)
        complete, _, partial = data.rpartition(b"\n")
        if complete or data.startswith(b"\n"):
            for raw in (complete + b"\n").split(b"\n")[:-1]:
                entry = self._parse_line(raw, len(self._cached) + 1)
                if isinstance(entry.get("workflow_id"), str) and isinstance(entry.get("sequence"), int):
                    self._keys.setdefault((entry["workflow_id"], entry["sequence"]), len(self._cached))
                self._cached.append(entry)
            last_line = complete.rsplit(b"\n", 1)[-1]
            self._offset += len(complete) + 1
            self._tail = (self._offset - len(last_line) - 1, last_line + b"\n")
        out = list(self._cached)
        if partial:  # an unterminated last line (a torn write) is shown, never cached
            out.append(self._parse_line(partial, len(self._cached) + 1))
        return out

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                with self._lock:
                    return self._refresh(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def find(self, workflow_id: str, sequence: int) -> dict[str, Any] | None:
        """The entry recorded for (workflow_id, sequence), from the index (after `entries`)."""
        with self._lock:
            position = self._keys.get((workflow_id, sequence))
            return self._cached[position] if position is not None else None

    def append(self, entry: dict[str, Any]) -> None:
        record = {k: v for k, v in entry.items() if not k.startswith("_")}
        line = canonical_json(record) + b"\n"
        fd = self._open(os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with self._lock:
                    current = self._refresh(fd)
                head_hash = GENESIS_HASH
                if current:
                    last = current[-1]
                    if "corrupt" in last or not isinstance(last.get("entry_hash"), str):
                        raise AuditLogCorrupt(
                            f"the last entry of the audit log {self.path} is unreadable, so nothing can be chained to it; "
                            "run `signoff audit verify` and restore the log from a copy."
                        )
                    head_hash = last["entry_hash"]
                if record.get("index") != len(current) or record.get("prev_hash") != head_hash:
                    raise ChainConflict(f"the head of {self.path} moved (now {len(current)} entries)")
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def store_from_settings(settings: Settings) -> FileLogStore:
    return FileLogStore(settings.audit_log)


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


def append_record(
    store: LogStore,
    decision: DecisionInput,
    signer: DecisionSigner,
    *,
    max_attempts: int = 200,
) -> dict[str, Any]:
    """Sign ``decision`` and chain it onto the log; return the (new or existing) entry.

    Idempotent on (workflow_id, sequence): an activity retried after its append finds its own
    record and appends nothing. The same key with different content is refused loudly, because
    it means the history and the log disagree (tampering, or a workflow bug numbering twice).

    Raises:
        RecordConflict: the same (workflow_id, sequence) is already logged with other content.
        AuditLogCorrupt: the log's last line cannot be read.
        AuditLogBusy: lost the race for the head ``max_attempts`` times.
    """
    statement = build_statement(decision)
    signed: SignedEnvelope | None = None
    for attempt in range(max_attempts):
        entries = store.entries()
        finder = getattr(store, "find", None)
        existing = finder(decision.workflow_id, decision.sequence) if finder else _find_record(entries, decision.workflow_id, decision.sequence)
        if existing is not None:
            if _statement_or_none(existing) == statement:
                return existing
            raise RecordConflict(
                f"decision {decision.sequence} of workflow {decision.workflow_id} is already in the audit log "
                f"(entry {existing.get('index')}) with different content; investigate with `signoff audit verify {decision.workflow_id}` before retrying."
            )
        if signed is None:
            signed = signer.sign(canonical_json(statement))
        if entries and ("corrupt" in entries[-1] or not isinstance(entries[-1].get("entry_hash"), str)):
            raise AuditLogCorrupt(
                "the last entry of the audit log is unreadable, so nothing can be chained to it; "
                "run `signoff audit verify` and restore the log from a copy."
            )
        index = len(entries)
        prev_hash = entries[-1]["entry_hash"] if entries else GENESIS_HASH
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
    kind: Literal["invalid", "missing", "extra", "mismatch", "unavailable"] = "invalid"

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


def _check_signature(envelope: dict[str, Any], public_key: Ed25519PublicKey, keyid: str) -> str | None:
    """None when a signature by ``public_key`` verifies over the envelope's PAE, else why not."""
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return "has no signatures"
    try:
        payload = _unb64(envelope["payload"])
    except (KeyError, TypeError, binascii.Error) as e:
        return f"has a payload that is not base64 ({e})"
    message = pae(str(envelope.get("payloadType", "")), payload)
    others: list[str] = []
    for signature in signatures:
        if not isinstance(signature, dict):
            continue
        if signature.get("keyid") not in (keyid, "", None):
            others.append(str(signature.get("keyid")))
            continue
        try:
            public_key.verify(_unb64(str(signature.get("sig", ""))), message)
            return None
        except (InvalidSignature, binascii.Error, ValueError):
            continue
    if others:
        return f"is signed by an unknown key {others[0][:16]}…, not the orchestrator key {keyid[:16]}…"
    return f"has a signature that does not verify with the orchestrator key {keyid[:16]}…"


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


def verify(store: LogStore, public_key: Ed25519PublicKey, *, workflow_id: str | None = None) -> VerifyReport:
    """Check the log end to end; every problem names the entry and says what is wrong.

    The chain (indexes, back-links, entry hashes) is always checked over the whole log, because
    a break anywhere undermines every record after it. Signatures and statements are checked
    for every record, or only ``workflow_id``'s when one is given; asking about a workflow with
    no records is itself a problem (there is nothing that proves what it did).
    """
    entries = store.entries()
    keyid = keyid_for(public_key)
    report = VerifyReport(
        entries=len(entries), records=0, keyid=keyid, head_hash=GENESIS_HASH, workflow_id=workflow_id
    )
    problems = report.problems
    expected_prev: str | None = GENESIS_HASH
    seen: dict[tuple[str, int], str] = {}
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
                Problem(f"{label} is entry number {position} of the log, not {index} (a record was deleted, inserted or moved)", index)
            )
        if expected_prev is not None and prev_hash != expected_prev:
            problems.append(
                Problem(f"{label} does not link to the entry before it (prev_hash differs: the chain is broken here)", index)
            )
        if compute_entry_hash(index, prev_hash, envelope, entry.get("sigstore_bundle")) != stored_hash:
            problems.append(Problem(f"{label} does not match its entry_hash (its content was changed after it was written)", index))
        expected_prev = stored_hash
        report.head_hash = stored_hash

        if workflow_id is not None and entry.get("workflow_id") != workflow_id:
            continue
        report.records += 1
        sequence = entry.get("sequence") if isinstance(entry.get("sequence"), int) else None
        key = (str(entry.get("workflow_id")), sequence if sequence is not None else -1)
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
            why = _check_signature(envelope, public_key, keyid)
        if why is not None:
            problems.append(Problem(f"{label} {why}", index, sequence))
        statement = _statement_or_none(entry)
        if statement is None:
            problems.append(Problem(f"{label} has a payload that is not a JSON statement", index, sequence))
            continue
        for wrong in _check_statement(entry, statement):
            problems.append(Problem(f"{label} {wrong}", index, sequence))
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
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.service import RPCError, RPCStatusCode

    records = [e for e in store.entries() if e.get("workflow_id") == workflow_id and "corrupt" not in e]
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

    converter = pydantic_data_converter.payload_converter
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
        inputs: dict[int, DecisionInput] = {}
        results: dict[int, dict[str, Any]] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name != APPEND_ACTIVITY:
                    continue
                try:
                    [decision] = converter.from_payloads(list(attrs.input.payloads), [DecisionInput])
                except Exception as e:  # an input we cannot read is itself a finding, not a crash
                    problems.append(
                        Problem(
                            f"the append_decision activity scheduled at event {event.event_id} of run {run_id} has an input that is not a DecisionInput ({e})",
                            kind="mismatch",
                        )
                    )
                    continue
                inputs[event.event_id] = decision
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                completed = event.activity_task_completed_event_attributes
                if completed.scheduled_event_id in inputs:
                    try:
                        [result] = converter.from_payloads(list(completed.result.payloads), [dict])
                    except Exception:
                        result = {}
                    results[completed.scheduled_event_id] = result if isinstance(result, dict) else {}
        scheduled.extend((decision, results.get(event_id)) for event_id, decision in inputs.items())

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
        if _statement_or_none(entry) != expected:
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


# --------------------------------------------------------------------------- export


def _principals_in(chain: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for entry in chain:
        predicate = (_statement_or_none(entry) or {}).get("predicate")
        evidence = predicate.get("evidence") if isinstance(predicate, dict) else None
        if isinstance(evidence, dict) and isinstance(evidence.get("principal"), str):
            found.add(evidence["principal"])
    return found


def export(workflow_id: str, store: LogStore, public_key: Ed25519PublicKey, out: Path, *, registry: Any = None) -> dict[str, Any]:
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
        "public_key": {"keyid": keyid_for(public_key), "scheme": "ed25519", "pem": public_pem(public_key)},
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
