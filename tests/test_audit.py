"""Signed decision records and the hash-chained audit log (issue 8).

Everything is real: ed25519 from `cryptography`, the file log with its fcntl lock, the
Temporal dev server running a small workflow against the real `AuditActivities`, and an
exported file checked by `securesystemslib`'s DSSE verifier in a process that never imports
signoff.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from temporalio.client import Client
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.audit import AuditActivities, activities_from_settings
    from signoff.audit import (
        AuditLogCorrupt,
        GENESIS_HASH,
        PAYLOAD_TYPE,
        PREDICATE_TYPE,
        STATEMENT_TYPE,
        Ed25519Signer,
        FileLogStore,
        KeyExistsError,
        LogStore,
        NotFound,
        RecordConflict,
        append_record,
        build_statement,
        canonical_json,
        compute_entry_hash,
        cross_check,
        export,
        format_timeline,
        init_keys,
        keyid_for,
        load_public_key,
        pae,
        show,
        statement_of,
        verify,
        workflow_ids,
    )
    from signoff.config import Settings
    from signoff.models import DecisionInput

DIGEST = "sha256:" + "ab" * 32
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message


def decision(seq: int, *, workflow_id: str = "rel-checkout-1", kind: str = "approval", outcome: str = "accepted", **extra: Any) -> DecisionInput:
    fields: dict[str, Any] = {
        "kind": kind,
        "outcome": outcome,
        "subject_name": "checkout",
        "subject_digest": DIGEST,
        "reasons": [f"reason {seq}"],
        "actor": {"identity": "alice@example.com", "channel": "slack"},
        "evidence": {"policy_sha256": "cd" * 32, "error_rate": 0.004},
        "workflow_id": workflow_id,
        "run_id": "run-1",
        "at": T0 + timedelta(seconds=seq),
        "sequence": seq,
    }
    fields.update(extra)
    return DecisionInput(**fields)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "orchestrator.ed25519"
    init_keys(path)
    return path


@pytest.fixture
def signer(key_path: Path) -> Ed25519Signer:
    return Ed25519Signer.from_path(key_path)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "decisions.jsonl"


@pytest.fixture
def filled(log_path: Path, signer: Ed25519Signer) -> FileLogStore:
    """Four records from two releases, interleaved as concurrent releases would write them."""
    store = FileLogStore(log_path)
    append_record(store, decision(1, kind="policy", outcome="allow"), signer)
    append_record(store, decision(1, workflow_id="rel-other", kind="policy", outcome="deny"), signer)
    append_record(store, decision(2), signer)
    append_record(store, decision(3, kind="canary", outcome="successful", actor={"id": "signoff"}), signer)
    return store


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def problems_text(store: LogStore, key_path: Path, **kw: Any) -> list[str]:
    return [str(p) for p in verify(store, load_public_key(key_path), **kw).problems]


# --------------------------------------------------------------------------- keys and records


def test_init_keys_writes_private_0600_and_public_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k" / "orchestrator.ed25519"
    info = init_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "orchestrator.ed25519.pub").read_text() == info.public_pem
    raw = serialization.load_pem_public_key(info.public_pem.encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert info.keyid == hashlib.sha256(raw).hexdigest()
    before = path.read_bytes()
    with pytest.raises(KeyExistsError) as err:
        init_keys(path)
    assert one_sentence(str(err.value)) and "--force" in str(err.value)
    assert path.read_bytes() == before
    replaced = init_keys(path, force=True)
    assert replaced.keyid != info.keyid and path.stat().st_mode & 0o777 == 0o600
    assert keyid_for(load_public_key(path)) == replaced.keyid


def test_statement_and_envelope_are_in_toto_v1_in_dsse(signer: Ed25519Signer, key_path: Path) -> None:
    d = decision(7, actor={"id": "release-bot", "model": "gpt-x", "prompt_sha256": "ef" * 32})
    statement = build_statement(d)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "checkout", "digest": {"sha256": "ab" * 32}}]
    assert statement["predicate"] == {
        "kind": "approval",
        "outcome": "accepted",
        "reasons": ["reason 7"],
        "actor": {"id": "release-bot", "model": "gpt-x", "prompt_sha256": "ef" * 32},
        "evidence": {"policy_sha256": "cd" * 32, "error_rate": 0.004},
        "workflow_id": "rel-checkout-1",
        "run_id": "run-1",
        "at": "2025-03-01T12:00:07.000000Z",
        "sequence": 7,
    }
    envelope = signer.sign(canonical_json(statement)).envelope
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert json.loads(base64.b64decode(envelope["payload"])) == statement
    [sig] = envelope["signatures"]
    assert sig["keyid"] == keyid_for(load_public_key(key_path))
    load_public_key(key_path).verify(base64.b64decode(sig["sig"]), pae(PAYLOAD_TYPE, base64.b64decode(envelope["payload"])))
    with pytest.raises(ValueError, match="sha256:<64 lowercase hex>"):
        build_statement(decision(1, subject_digest="md5:abc"))


def test_a_sequence_of_decisions_verifies_and_chains(filled: FileLogStore, key_path: Path) -> None:
    entries = filled.entries()
    assert [e["index"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(entries, entries[1:]):
        assert after["prev_hash"] == before["entry_hash"]
    report = verify(filled, load_public_key(key_path))
    assert report.ok, report.problems
    assert (report.entries, report.records, report.head_hash) == (4, 4, entries[-1]["entry_hash"])
    only = verify(filled, load_public_key(key_path), workflow_id="rel-checkout-1")
    assert only.ok and only.records == 3
    missing = verify(filled, load_public_key(key_path), workflow_id="rel-nope")
    assert not missing.ok and "no decision records for workflow rel-nope" in str(missing.problems[0])
    assert workflow_ids(filled) == ["rel-checkout-1", "rel-other"]


# --------------------------------------------------------------------------- tampering


def _other_byte(b: int) -> int:
    """A different byte of the same class, so the edit stays valid JSON as often as possible
    (the hard case: the verifier must then catch it by hash, signature or statement)."""
    c = chr(b)
    if c.isdigit():
        return ord("1" if c == "0" else "0")
    if c.islower():
        return ord("b" if c == "a" else "a")
    if c.isupper():
        return ord("B" if c == "A" else "A")
    return ord("x")


def test_editing_any_single_byte_of_any_record_fails_naming_it(filled: FileLogStore, log_path: Path, key_path: Path) -> None:
    original = log_path.read_bytes()
    public_key = load_public_key(key_path)
    assert verify(filled, public_key).ok
    starts = [0]
    for line in lines_of(log_path):
        starts.append(starts[-1] + len(line))
    edits = 0
    for record, (start, end) in enumerate(zip(starts, starts[1:])):
        for offset in range(start, end):
            data = bytearray(original)
            data[offset] = _other_byte(data[offset])
            log_path.write_bytes(bytes(data))
            problems = [str(p) for p in verify(filled, public_key).problems]
            assert problems, f"editing byte {offset} of record {record} went unnoticed"
            assert any(f"line {record + 1}" in p for p in problems), (offset, problems)
            edits += 1
    assert edits == len(original)
    log_path.write_bytes(original)
    assert verify(filled, public_key).ok


def test_deleting_a_record_fails_naming_the_entry_after_the_gap(filled: FileLogStore, log_path: Path, key_path: Path) -> None:
    lines = lines_of(log_path)
    log_path.write_bytes(b"".join(lines[:1] + lines[2:]))
    problems = problems_text(filled, key_path)
    assert any(p.startswith("entry 2 (line 2)") and "deleted, inserted or moved" in p for p in problems), problems
    assert any(p.startswith("entry 2 (line 2)") and "does not link" in p for p in problems), problems

    log_path.write_bytes(b"".join(lines[1:]))  # the first one
    problems = problems_text(filled, key_path)
    assert any(p.startswith("entry 1 (line 1)") for p in problems), problems


def test_reordering_two_records_fails_naming_both(filled: FileLogStore, log_path: Path, key_path: Path) -> None:
    lines = lines_of(log_path)
    log_path.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    problems = problems_text(filled, key_path)
    assert any(p.startswith("entry 2 (line 2)") for p in problems), problems
    assert any(p.startswith("entry 1 (line 3)") for p in problems), problems
    assert any(p.startswith("entry 3 (line 4)") and "does not link" in p for p in problems), problems


def test_a_forged_record_signed_with_another_key_fails_even_with_a_correct_chain(
    filled: FileLogStore, log_path: Path, key_path: Path
) -> None:
    intruder = Ed25519Signer(Ed25519PrivateKey.generate())
    forged = append_record(filled, decision(4, outcome="accepted", actor={"identity": "mallory@example.com", "channel": "cli"}), intruder)
    assert forged["index"] == 4  # the chain itself is perfectly well formed
    problems = problems_text(filled, key_path)
    assert problems == [
        f"entry 4 (line 5) is signed by key {intruder.keyid[:16]}…, which the pinned keys (the key given) do not include: "
        "the signing key was swapped or the record forged"
    ]


def test_a_forged_record_inserted_mid_log_with_the_chain_relinked_fails_naming_it(
    filled: FileLogStore, log_path: Path, key_path: Path, signer: Ed25519Signer
) -> None:
    """The attacker rewrites every later link; only the signature can give the forgery away —
    here it copies the orchestrator's keyid and a real signature from another record."""
    entries = [{k: v for k, v in e.items() if not k.startswith("_")} for e in filled.entries()]
    genuine_sig = entries[0]["envelope"]["signatures"]
    statement = build_statement(decision(9, outcome="accepted", actor={"identity": "mallory@example.com", "channel": "cli"}))
    forged_envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(canonical_json(statement)).decode(), "signatures": genuine_sig}
    entries.insert(2, {"envelope": forged_envelope, "workflow_id": "rel-checkout-1", "sequence": 9, "kind": "approval"})
    prev = GENESIS_HASH
    for i, entry in enumerate(entries):
        entry.update(index=i, prev_hash=prev, entry_hash=compute_entry_hash(i, prev, entry["envelope"]))
        prev = entry["entry_hash"]
    log_path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    problems = problems_text(filled, key_path)
    assert f"entry 2 (line 3) has a signature that does not verify with key {signer.keyid[:16]}…" in problems
    assert "entry 2 (line 3) has no signed place in the log but follows records that do: it was not appended by signoff" in problems
    # and the genuine record after it was signed to follow another record than the one it now follows
    moved = [p for p in problems if "was signed as entry" in p]
    assert [p.split(" after hash")[0] for p in moved] == ["entry 3 (line 4) was signed as entry 2"]
    assert all(p.endswith("records were deleted, inserted or reordered here and the chain recomputed") for p in moved)


def test_metadata_that_disagrees_with_the_signed_statement_is_caught(filled: FileLogStore, log_path: Path, key_path: Path) -> None:
    lines = lines_of(log_path)
    entry = json.loads(lines[2])
    entry["sequence"] = 5  # outside the hashed envelope: would dodge the idempotency check
    lines[2] = canonical_json(entry) + b"\n"
    log_path.write_bytes(b"".join(lines))
    # named once: which workflow and decision a record is comes from its signed statement only
    assert problems_text(filled, key_path) == ["entry 2 (line 3) says sequence 5 but its signed statement says 2"]


def test_a_torn_last_line_is_named_and_nothing_is_chained_onto_it(filled: FileLogStore, log_path: Path, key_path: Path, signer: Ed25519Signer) -> None:
    torn = log_path.read_bytes()[:-40]
    log_path.write_bytes(torn)
    problems = problems_text(filled, key_path)
    assert len(problems) == 1 and problems[0].startswith("the entry at line 4 cannot be read: line 4 is not valid JSON")
    with pytest.raises(AuditLogCorrupt) as err:
        append_record(filled, decision(4), signer)
    assert one_sentence(str(err.value)) and log_path.read_bytes() == torn


# --------------------------------------------------------------------------- idempotency and concurrency


def test_a_retried_append_appears_once(filled: FileLogStore, signer: Ed25519Signer, log_path: Path) -> None:
    before = log_path.read_bytes()
    again = append_record(filled, decision(2), signer)
    assert again["index"] == 2
    assert log_path.read_bytes() == before


def test_same_workflow_and_sequence_with_different_content_is_refused(filled: FileLogStore, signer: Ed25519Signer, log_path: Path) -> None:
    before = log_path.read_bytes()
    with pytest.raises(RecordConflict) as err:
        append_record(filled, decision(2, outcome="rejected"), signer)
    assert one_sentence(str(err.value)) and "entry 2" in str(err.value)
    assert log_path.read_bytes() == before


async def test_activity_refuses_conflicts_non_retryably_and_returns_the_entry(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "k", audit_log=tmp_path / "audit" / "log.jsonl")
    acts = AuditActivities(settings)
    first = await acts.append_decision(decision(1))
    assert settings.key_path.exists(), "the key is created on first use while the log is empty"
    assert first["index"] == 0 and first["entry_hash"] == FileLogStore(settings.audit_log).entries()[0]["entry_hash"]
    assert await acts.append_decision(decision(1)) == first
    with pytest.raises(ApplicationError) as err:
        await acts.append_decision(decision(1, outcome="rejected"))
    assert err.value.type == "RecordConflict" and err.value.non_retryable
    with pytest.raises(ApplicationError) as bad:
        await acts.append_decision(decision(2, subject_digest="sha256:xyz"))
    assert bad.value.type == "InvalidDecision" and bad.value.non_retryable
    names = [a.__temporal_activity_definition.name for a in activities_from_settings(settings)]  # type: ignore[attr-defined]
    assert names == ["append_decision", "append_decisions"]  # one record, or the records a workflow queued together


async def test_activity_will_not_mint_a_new_key_for_a_log_that_already_has_records(filled: FileLogStore, log_path: Path, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "elsewhere" / "k", audit_log=log_path)
    with pytest.raises(ApplicationError) as err:
        await AuditActivities(settings).append_decision(decision(4))
    assert err.value.type == "SigningKeyMissing" and not err.value.non_retryable
    assert one_sentence(str(err.value)) and not settings.key_path.exists()
    assert len(filled.entries()) == 4


async def test_keyless_signing_without_an_oidc_identity_fails_in_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "SIGSTORE_ID_TOKEN", "BUILDKITE_JOB_ID", "GITLAB_CI", "CIRCLECI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIGNOFF_SIGSTORE", "1")
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "k", audit_log=tmp_path / "log.jsonl")
    with pytest.raises(ApplicationError) as err:
        await AuditActivities(settings).append_decision(decision(1))
    assert err.value.type == "SigstoreIdentityMissing" and err.value.non_retryable
    assert one_sentence(str(err.value)) and "OIDC" in str(err.value)
    assert FileLogStore(settings.audit_log).entries() == [] and not settings.key_path.exists()


def test_concurrent_appends_from_threads_keep_one_valid_chain(log_path: Path, signer: Ed25519Signer, key_path: Path) -> None:
    threads, per_thread = 8, 12
    start = threading.Barrier(threads)

    def writer(n: int) -> list[int]:
        store = FileLogStore(log_path)  # each thread its own handle, as separate activities would
        start.wait(timeout=10)
        indexes = [append_record(store, decision(s, workflow_id=f"rel-{n}"), signer)["index"] for s in range(per_thread)]
        indexes.append(append_record(store, decision(1, workflow_id="rel-shared"), signer)["index"])
        return indexes

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(writer, range(threads), timeout=60))
    store = FileLogStore(log_path)
    report = verify(store, load_public_key(key_path))
    assert report.ok, report.problems[:3]
    assert report.entries == threads * per_thread + 1
    assert len({r[-1] for r in results}) == 1, "every thread got the one shared record back"
    assert sorted([i for r in results for i in r[:-1]] + [results[0][-1]]) == list(range(report.entries))


def test_concurrent_appends_from_processes_keep_one_valid_chain(log_path: Path, key_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from datetime import datetime, timezone
        from pathlib import Path
        from signoff.audit import Ed25519Signer, FileLogStore, append_record
        from signoff.models import DecisionInput
        store, signer = FileLogStore(Path(sys.argv[1])), Ed25519Signer.from_path(Path(sys.argv[2]))
        for seq in range(15):
            append_record(store, DecisionInput(kind="canary", outcome="successful", subject_name="s",
                subject_digest="sha256:" + "0" * 64, workflow_id="proc-" + sys.argv[3], run_id="r",
                at=datetime.now(timezone.utc), sequence=seq), signer)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(log_path), str(key_path), str(n)]) for n in range(3)]
    try:
        assert [p.wait(timeout=45) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    report = verify(FileLogStore(log_path), load_public_key(key_path))
    assert report.ok and report.entries == 45, report.problems[:3]


# --------------------------------------------------------------------------- show and export


def test_show_gives_a_readable_timeline(filled: FileLogStore, signer: Ed25519Signer) -> None:
    rows = show("rel-checkout-1", filled)
    assert [(r["sequence"], r["kind"], r["outcome"], r["who"], r["channel"]) for r in rows] == [
        (1, "policy", "allow", "alice@example.com", "slack"),
        (2, "approval", "accepted", "alice@example.com", "slack"),
        (3, "canary", "successful", "signoff", "workflow"),
    ]
    assert rows[1]["when"] == "2025-03-01T12:00:02.000000Z" and rows[1]["why"] == "reason 2"
    text = format_timeline(rows).splitlines()
    assert len(text) == 3
    assert text[1].startswith("2025-03-01T12:00:02.000000Z") and "approval" in text[1]
    assert "alice@example.com via slack — reason 2" in text[1]
    append_record(filled, decision(1, workflow_id="rel-bot", actor={"orchestrator": "signoff", "requested_by": "dana@example.com", "agent": {"id": "release-bot", "model": "gpt-x"}}), signer)
    append_record(filled, decision(2, workflow_id="rel-bot", actor={"orchestrator": "signoff", "requested_by": "dana@example.com"}), signer)
    assert [(r["who"], r["channel"]) for r in show("rel-bot", filled)] == [
        ("release-bot (gpt-x) for dana@example.com", "agent"),
        ("signoff for dana@example.com", "workflow"),
    ]
    with pytest.raises(NotFound) as err:
        show("rel-unknown", filled)
    assert one_sentence(str(err.value))


STANDALONE_VERIFIER = textwrap.dedent(
    '''
    """Verify a signoff audit export with standard DSSE tooling only (securesystemslib)."""
    import hashlib, json, sys
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    doc = json.load(open(sys.argv[1]))
    public = load_pem_public_key(doc["public_key"]["pem"].encode())
    keyid = hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    assert keyid == doc["public_key"]["keyid"], "keyid is not sha256 of the raw key"
    key = SSlibKey.from_crypto(public, keyid=keyid)
    statements = []
    for raw in doc["envelopes"]:
        envelope = Envelope.from_dict(json.loads(json.dumps(raw)))
        envelope.verify([key], 1)  # raises VerificationError
        assert envelope.payload_type == "application/vnd.in-toto+json"
        statements.append(json.loads(envelope.payload))
    for entry in doc["chain"]:
        body = {"index": entry["index"], "prev_hash": entry["prev_hash"], "envelope": entry["envelope"]}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(canonical).hexdigest() == entry["entry_hash"], "entry hash"
    assert not [m for m in sys.modules if m.split(".")[0] in ("signoff", "activities", "workflows")]
    print(json.dumps([[s["predicateType"], s["predicate"]["sequence"], s["predicate"]["kind"]] for s in statements]))
    '''
)


def _run_standalone(export_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "dsse_verify.py"
    script.write_text(STANDALONE_VERIFIER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script), str(export_file)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)


def test_an_export_verifies_with_standard_dsse_tooling_and_tampering_does_not(
    filled: FileLogStore, key_path: Path, tmp_path: Path, log_path: Path
) -> None:
    out = tmp_path / "export" / "rel-checkout-1.json"
    document = export("rel-checkout-1", filled, load_public_key(key_path), out)
    assert document["public_key"]["pem"] == (key_path.parent / "orchestrator.ed25519.pub").read_text()
    assert [e["index"] for e in document["chain"]] == [0, 2, 3]
    done = _run_standalone(out, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[PREDICATE_TYPE, 1, "policy"], [PREDICATE_TYPE, 2, "approval"], [PREDICATE_TYPE, 3, "canary"]]

    tampered = json.loads(out.read_text())
    statement = statement_of(tampered["envelopes"][1])
    statement["predicate"]["outcome"] = "rejected"
    tampered["envelopes"][1]["payload"] = base64.b64encode(canonical_json(statement)).decode()
    out.write_text(json.dumps(tampered))
    refused = _run_standalone(out, tmp_path)
    assert refused.returncode != 0 and "VerificationError" in refused.stderr

    lines = lines_of(log_path)
    log_path.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    with pytest.raises(Exception) as err:
        export("rel-checkout-1", filled, load_public_key(key_path), tmp_path / "never.json")
    assert "fails verification" in str(err.value) and not (tmp_path / "never.json").exists()


# --------------------------------------------------------------------------- cross-check with a real workflow

PLAN: list[tuple[str, str, dict[str, Any], list[str], dict[str, Any]]] = [
    ("policy", "allow", {"id": "release-bot", "model": "gpt-x", "prompt_sha256": "ef" * 32}, ["tier low"], {"policy_sha256": "cd" * 32}),
    ("approval", "accepted", {"identity": "alice@example.com", "channel": "slack"}, ["looks good"], {}),
    ("canary", "successful", {"id": "signoff"}, ["error-rate 0.004 < 0.01"], {"error-rate": 0.004}),
]


@workflow.defn
class ThreeDecisionsWorkflow:
    """Records three decisions the way ReleaseWorkflow does: numbered, timed by the workflow."""

    @workflow.run
    async def run(self, digest: str) -> list[dict[str, Any]]:
        info = workflow.info()
        results = []
        for seq, (kind, outcome, actor, reasons, evidence) in enumerate(PLAN, start=1):
            record = DecisionInput(
                kind=kind,
                outcome=outcome,
                subject_name="checkout",
                subject_digest=digest,
                reasons=reasons,
                actor=actor,
                evidence=evidence,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                at=workflow.now(),
                sequence=seq,
            )
            results.append(
                await workflow.execute_activity(
                    "append_decision",
                    record,
                    start_to_close_timeout=timedelta(seconds=20),
                    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=4),
                    result_type=dict,
                )
            )
        return results


class LostAfterAppend:
    """The real activity, except the first attempt 'loses its worker' after the append."""

    def __init__(self, real: AuditActivities) -> None:
        self.real = real

    @activity.defn(name="append_decision")
    async def append_decision(self, record: DecisionInput) -> dict[str, Any]:
        result = await self.real.append_decision(record)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost after the append, before reporting")
        return result


async def _run(client: Client, task_queue: str, acts: Any) -> tuple[str, list[dict[str, Any]]]:
    workflow_id = f"rel-audit-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=task_queue, workflows=[ThreeDecisionsWorkflow], activities=[acts.append_decision]):
        result = await asyncio.wait_for(
            client.execute_workflow(ThreeDecisionsWorkflow.run, DIGEST, id=workflow_id, task_queue=task_queue), timeout=40
        )
    return workflow_id, result


def _rewrite(log_path: Path, entries: list[dict[str, Any]], signer: Ed25519Signer | None = None) -> None:
    """What an insider holding the key could do: rewrite records, re-sign, re-link the chain."""
    prev = GENESIS_HASH
    out = []
    for i, entry in enumerate(entries):
        entry = {k: v for k, v in entry.items() if not k.startswith("_")}
        if signer is not None:
            entry["envelope"] = signer.sign(canonical_json(statement_of(entry["envelope"]))).envelope
        entry.update(index=i, prev_hash=prev, entry_hash=compute_entry_hash(i, prev, entry["envelope"]))
        prev = entry["entry_hash"]
        out.append(canonical_json(entry) + b"\n")
    log_path.write_bytes(b"".join(out))


async def test_cross_check_against_a_real_workflow_run(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "orchestrator.ed25519", audit_log=tmp_path / "audit" / "log.jsonl")
    store = FileLogStore(settings.audit_log)
    workflow_id, results = await _run(dev_env.client, task_queue, AuditActivities(settings))
    assert [r["index"] for r in results] == [0, 1, 2] and [r["sequence"] for r in results] == [1, 2, 3]
    public_key = load_public_key(settings.key_path)
    assert verify(store, public_key, workflow_id=workflow_id).ok
    assert await cross_check(dev_env.client, workflow_id, store) == []
    rows = show(workflow_id, store)
    assert [(r["kind"], r["who"], r["channel"]) for r in rows] == [
        ("policy", "release-bot (gpt-x)", "agent"),
        ("approval", "alice@example.com", "slack"),
        ("canary", "signoff", "workflow"),
    ]
    original = settings.audit_log.read_bytes()
    signer = Ed25519Signer.from_path(settings.key_path)

    # content changed by someone holding the key: signatures and chain are fine, the history is not
    entries = store.entries()
    statement = statement_of(entries[1]["envelope"])
    statement["predicate"]["actor"] = {"identity": "bob@example.com", "channel": "jira"}
    entries[1]["envelope"] = signer.sign(canonical_json(statement)).envelope
    _rewrite(settings.audit_log, entries)
    # the record after it was signed behind the original: the signed back-link gives it away
    assert [(p.kind, p.index) for p in verify(store, public_key).problems] == [("chain", 2)]
    problems = await cross_check(dev_env.client, workflow_id, store)
    assert [(p.kind, p.index, p.sequence) for p in problems] == [("mismatch", 1, 2), ("mismatch", 1, 2), ("mismatch", 2, 3)]
    assert "does not match the decision in the Temporal history" in str(problems[0])
    assert "is not the entry the activity wrote" in str(problems[1])  # and the re-linked one after it

    # content changed without the key: both checks object
    lines = original.splitlines(keepends=True)
    last = json.loads(lines[2])
    statement = statement_of(last["envelope"])
    statement["predicate"]["outcome"] = "failed"
    last["envelope"]["payload"] = base64.b64encode(canonical_json(statement)).decode()
    settings.audit_log.write_bytes(b"".join(lines[:2]) + canonical_json(last) + b"\n")
    assert {p.index for p in verify(store, public_key).problems} == {2}
    problems = await cross_check(dev_env.client, workflow_id, store)
    assert [(p.kind, p.index, p.sequence) for p in problems] == [("mismatch", 2, 3)]

    # the last record cut off: invisible to the chain (no checkpoint was taken here), not to the history
    settings.audit_log.write_bytes(b"".join(original.splitlines(keepends=True)[:2]))
    assert verify(store, public_key).ok
    problems = await cross_check(dev_env.client, workflow_id, store)
    assert [(p.kind, p.sequence) for p in problems] == [("missing", 3)]
    assert "has no record in the log" in str(problems[0])

    # a middle record deleted and the chain re-linked: the record is missing, and the survivor moved
    settings.audit_log.write_bytes(original)
    kept = [e for e in store.entries() if e["sequence"] != 2]
    _rewrite(settings.audit_log, kept)
    assert sorted(p.kind for p in verify(store, public_key).problems) == ["chain", "gap"]
    problems = await cross_check(dev_env.client, workflow_id, store)
    assert sorted((p.kind, p.sequence) for p in problems) == [("mismatch", 3), ("missing", 2)]

    # a record the workflow never made, properly signed and chained
    settings.audit_log.write_bytes(original)
    append_record(store, decision(4, workflow_id=workflow_id, run_id=rows[0]["run_id"]), signer)
    assert verify(store, public_key).ok
    problems = await cross_check(dev_env.client, workflow_id, store)
    assert [(p.kind, p.index, p.sequence) for p in problems] == [("extra", 3, 4)]


async def test_an_activity_retried_after_its_append_leaves_one_record(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "k", audit_log=tmp_path / "audit" / "log.jsonl")
    workflow_id, results = await _run(dev_env.client, task_queue, LostAfterAppend(AuditActivities(settings)))
    store = FileLogStore(settings.audit_log)
    assert [e["sequence"] for e in store.entries()] == [1, 2, 3]
    assert [r["index"] for r in results] == [0, 1, 2]
    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    attempts = [e.activity_task_started_event_attributes.attempt for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert attempts == [2, 2, 2], "each activity really failed once after appending"
    assert verify(store, load_public_key(settings.key_path)).ok
    assert await cross_check(dev_env.client, workflow_id, store) == []


def test_incremental_store_sees_other_writers_and_edits_of_its_tail(tmp_path: Path) -> None:
    """The worker's incremental reader chains correctly after another process appended, and
    notices when the line it would chain onto was changed (it re-reads instead of trusting its cache)."""
    from datetime import datetime, timezone

    from signoff.audit import Ed25519Signer, FileLogStore, append_record, init_keys, load_signing_key, verify
    from signoff.models import DecisionInput

    init_keys(tmp_path / "key")
    signer = Ed25519Signer(load_signing_key(tmp_path / "key"))
    log = tmp_path / "log.jsonl"
    worker, other = FileLogStore(log, incremental=True), FileLogStore(log)

    def decision(seq: int, wf: str = "wf") -> DecisionInput:
        return DecisionInput(kind="k", outcome="o", subject_name="s", subject_digest="sha256:" + "a" * 64, workflow_id=wf, run_id="r", at=datetime(2026, 1, 1, tzinfo=timezone.utc), sequence=seq)

    for i in range(5):
        append_record(worker if i % 2 else other, decision(i), signer)
    assert [e["index"] for e in worker.entries()] == list(range(5))
    assert append_record(worker, decision(3), signer)["index"] == 3  # idempotent via the index
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key((tmp_path / "key.pub").read_bytes())
    assert verify(FileLogStore(log), public).ok
    # an edit of the last line (same length) is noticed by the incremental reader
    lines = log.read_bytes().split(b"\n")
    lines[-2] = lines[-2].replace(b'"kind":"k"', b'"kind":"x"')
    log.write_bytes(b"\n".join(lines))
    assert worker.entries()[-1]["kind"] == "x"


def test_the_incremental_store_keeps_no_entries_in_memory(tmp_path: Path) -> None:
    """The worker's appender holds where each record is, not the records (issue 18: at 70,000
    records the cached entries were ~300 MiB of a worker's 1 GiB). Idempotency still finds a
    record by (workflow id, sequence), also after the file was replaced under it."""
    import shutil
    from datetime import datetime, timezone

    from signoff.audit import Ed25519Signer, FileLogStore, RecordConflict, append_record, init_keys, load_signing_key
    from signoff.models import DecisionInput

    init_keys(tmp_path / "key")
    signer = Ed25519Signer(load_signing_key(tmp_path / "key"))
    log = tmp_path / "log.jsonl"
    worker = FileLogStore(log, incremental=True)

    def decision(seq: int, wf: str = "wf", outcome: str = "o") -> DecisionInput:
        return DecisionInput(kind="k", outcome=outcome, subject_name="s", subject_digest="sha256:" + "a" * 64, workflow_id=wf, run_id="r", at=datetime(2026, 1, 1, tzinfo=timezone.utc), sequence=seq)

    for i in range(50):
        append_record(worker, decision(i, wf=f"wf-{i % 5}"), signer)
    assert worker._cached == []  # nothing parsed is kept
    size, last = worker.head()
    assert size == 50 and last is not None and last["index"] == 49
    assert worker.find("wf-3", 13)["index"] == 13
    assert worker.find("wf-3", 14) is None  # wf-3 has sequences 3, 8, 13, ...
    assert append_record(worker, decision(13, wf="wf-3"), signer)["index"] == 13  # a retry appends nothing
    with pytest.raises(RecordConflict):
        append_record(worker, decision(13, wf="wf-3", outcome="other"), signer)
    assert [e["index"] for e in worker.entries()] == list(range(50))
    assert worker._cached == []

    # the file replaced by a copy with one record fewer at the front: the index is stale
    lines = log.read_bytes().split(b"\n")
    shutil.copy(log, tmp_path / "kept.jsonl")
    log.write_bytes(b"\n".join(lines[1:]))
    assert worker.find("wf-3", 13)["sequence"] == 13  # read again, found at its new place
    assert worker.find("wf-0", 0) is None
