"""Attacks on the audit trail by someone who can write the log file (and, for some, who holds
the signing key), each on the records of a real gated release, each caught by `signoff audit
verify` naming the entry and the check that failed. Plus key rotation, and verification once
Temporal's history is gone.

The attacker's moves are the review's: cut the last records, delete one from the middle and
re-chain, reorder, swap the key and rewrite an approver, leave a gap in a workflow's numbers,
drop the outcome record.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError

from signoff.audit import (
    GENESIS_HASH,
    AuditTrust,
    Ed25519Signer,
    FileLogStore,
    KeyFileSigner,
    TrustedKey,
    append_record,
    chained_statement,
    checkpoint_path,
    compute_entry_hash,
    init_keys,
    keyid_for,
    load_public_key,
    load_signing_key,
    public_path_for,
    rotate_keys,
    statement_of,
    trust_path,
    unchained,
    verify,
)
from signoff.config import Settings
from signoff.models import ApprovalAttempt, DecisionInput
from signoff.trust.dsse import canonical_json
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase


CLI = [sys.executable, "-c", "from signoff.cli import main; main()"]


# --------------------------------------------------------------------------- a real release, and the attacker's tools


async def gated_release(client: Client, task_queue: str) -> tuple[str, Settings]:
    """dana (the requester) is refused, alice and bob approve, the release succeeds."""
    settings = Settings.from_env()
    async with running_worker(client, task_queue) as sc:
        rid = f"trail-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        for who in ("dana@example.com", "alice@example.com", "bob@example.com"):
            await sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A))
        await sc.handle(rid).result()
    return rid, settings


def cli(client: Client | None, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ}
    if client is not None:
        env["SIGNOFF_TEMPORAL_ADDRESS"] = client.service_client.config.target_host
    done = subprocess.run(CLI + list(args) + ["--json"], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def entries_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rechain(path: Path, entries: list[dict[str, Any]]) -> None:
    """What an attacker without the key can do: renumber and recompute every hash and link."""
    prev = GENESIS_HASH
    for i, entry in enumerate(entries):
        entry.update(index=i, prev_hash=prev, entry_hash=compute_entry_hash(i, prev, entry["envelope"]))
        prev = entry["entry_hash"]
    path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))


def resign(path: Path, entries: list[dict[str, Any]], signer: Ed25519Signer, edit: Any = None) -> None:
    """What a key holder can do: rebuild the whole chain, every place signed afresh."""
    prev = GENESIS_HASH
    for i, entry in enumerate(entries):
        statement = unchained(statement_of(entry["envelope"]))
        if edit is not None:
            statement = edit(statement)
        at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        envelope = signer.sign(canonical_json(chained_statement(statement, index=i, prev_hash=prev, logged_at=at))).envelope
        entry.update(index=i, prev_hash=prev, envelope=envelope, entry_hash=compute_entry_hash(i, prev, envelope))
        prev = entry["entry_hash"]
    path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))


def failed(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    assert doc["ok"] is False
    return [p for p in doc["problems"] + doc.get("history_problems", []) if p["kind"] == kind]


# --------------------------------------------------------------------------- the attacks


async def test_cut_from_the_end_is_caught_by_the_checkpoint(client: Client, task_queue: str) -> None:
    rid, settings = await gated_release(client, task_queue)
    code, doc, _ = cli(None, "audit", "verify", "--no-history")
    assert code == 0 and doc["ok"] and doc["covered_by_checkpoints"] == doc["entries"], doc
    lines = settings.audit_log.read_bytes().splitlines(keepends=True)
    settings.audit_log.write_bytes(b"".join(lines[:-2]))
    code, doc, _ = cli(None, "audit", "verify", "--no-history")
    assert code == 1
    [cut] = failed(doc, "cut")[-1:]
    assert f"the log has only {len(lines) - 2}: entries {len(lines) - 2}–{len(lines) - 1} were cut from the end" in cut["message"]
    assert cut["index"] == len(lines) - 2


async def test_a_record_deleted_from_the_middle_and_rechained_without_the_key_is_caught(client: Client, task_queue: str) -> None:
    rid, settings = await gated_release(client, task_queue)
    entries = entries_of(settings.audit_log)
    refused = next(i for i, e in enumerate(entries) if e["kind"] == "approval_attempt" and '"refused"' in json.dumps(statement_of(e["envelope"])))
    del entries[refused]  # the refused self-approval disappears …
    rechain(settings.audit_log, entries)  # … and every hash and link after it is recomputed
    code, doc, _ = cli(None, "audit", "verify", rid, "--no-history")
    assert code == 1
    [moved, *_] = failed(doc, "chain")
    assert moved["index"] == refused
    assert moved["message"].startswith(f"entry {refused} (line {refused + 1}) was signed as entry {refused + 1} after hash")
    [gap] = failed(doc, "gap")
    assert gap["sequence"] == entries[refused - 1]["sequence"] + 1 and f"the record after decision {gap['sequence'] - 1}" in gap["message"]


async def test_reordered_records_are_caught(client: Client, task_queue: str) -> None:
    rid, settings = await gated_release(client, task_queue)
    entries = entries_of(settings.audit_log)
    entries[3], entries[4] = entries[4], entries[3]
    rechain(settings.audit_log, entries)
    code, doc, _ = cli(None, "audit", "verify", "--no-history")
    assert code == 1
    assert [p["index"] for p in failed(doc, "chain")] == [3, 4, 5]  # both moved records, and the one whose predecessor changed
    assert failed(doc, "cut"), "the checkpoint no longer matches the rewritten prefix"


async def test_a_swapped_key_and_rewritten_approver_are_caught_by_the_pinned_key_ids(client: Client, task_queue: str, tmp_path: Path) -> None:
    rid, settings = await gated_release(client, task_queue)
    auditor_copy = tmp_path / "auditor-trust.json"
    shutil.copy(trust_path(settings), auditor_copy)

    # the attacker's own key goes where the orchestrator key was, with its .pub …
    mallory = Ed25519PrivateKey.generate()
    settings.key_path.unlink()
    public_path_for(settings.key_path).unlink()
    trust_path(settings).unlink()
    init_keys(settings.key_path)  # (this also pins the attacker's key in the trust file beside it)
    forger = Ed25519Signer(load_signing_key(settings.key_path))

    def alice_to_carol(statement: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(statement).replace("alice@example.com", "carol@example.com"))

    # … every record re-signed with it, alice's approval now carol's, the checkpoints dropped
    resign(settings.audit_log, entries_of(settings.audit_log), forger, alice_to_carol)
    checkpoint_path(settings).unlink()
    statements = json.dumps([statement_of(e["envelope"]) for e in entries_of(settings.audit_log)])
    assert "carol@example.com" in statements and "alice@example.com" not in statements
    del mallory

    code, doc, _ = cli(None, "audit", "verify", rid, "--no-history", "--trust", str(auditor_copy))
    assert code == 1
    bad = failed(doc, "key")
    assert len(bad) == doc["records"]
    assert bad[0]["message"].endswith("which the pinned keys (" + str(auditor_copy) + ") do not include: the signing key was swapped or the record forged")
    assert f"is signed by key {forger.keyid[:16]}…" in bad[0]["message"]


async def test_a_key_holder_who_drops_a_record_leaves_a_sequence_gap(client: Client, task_queue: str) -> None:
    """Even with the key (so every signature and link is fresh and valid) and without the
    checkpoints, a workflow's decisions must run 1, 2, 3… — the hole is named."""
    rid, settings = await gated_release(client, task_queue)
    entries = entries_of(settings.audit_log)
    dropped = next(i for i, e in enumerate(entries) if e["kind"] == "gate_outcome")
    sequence = entries[dropped]["sequence"]
    del entries[dropped]
    resign(settings.audit_log, entries, Ed25519Signer(load_signing_key(settings.key_path)))
    checkpoint_path(settings).unlink()
    code, doc, _ = cli(None, "audit", "verify", rid, "--no-history")
    assert code == 1
    [gap] = failed(doc, "gap")
    assert gap["sequence"] == sequence and f"but not {sequence}:" in gap["message"]
    assert gap["index"] == dropped - 1  # the entry after which the record is missing
    assert [p for p in doc["problems"] if p["kind"] != "gap"] == []


async def test_a_dropped_outcome_record_is_caught_when_the_workflow_has_ended(client: Client, task_queue: str) -> None:
    rid, settings = await gated_release(client, task_queue)
    entries = entries_of(settings.audit_log)
    assert entries[-1]["kind"] == "release_outcome"
    settings.audit_log.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries[:-1]))
    checkpoint_path(settings).unlink()  # the attacker also removes what would show the cut
    code, doc, _ = cli(None, "audit", "verify", rid, "--no-history")
    assert code == 0, "without history or checkpoints, a cut at the very end has nothing to contradict it"
    assert doc["workflows"][rid]["outcome"] is None and doc["workflows"][rid]["covered"] is False
    code, doc, _ = cli(client, "audit", "verify", rid)
    assert code == 1
    [outcome] = failed(doc, "outcome")
    assert outcome["message"].startswith(f"workflow {rid} has ended (completed) but the log has no outcome record for it")
    assert f"(its last record is entry {len(entries) - 2})" in outcome["message"]


# --------------------------------------------------------------------------- keys: pinned, rotated, outside their period


def _decision(n: int, workflow_id: str = "rel-rotate") -> DecisionInput:
    return DecisionInput(
        kind="policy", outcome="allowed", subject_name="checkout", subject_digest=DIGEST_A, reasons=[f"#{n}"],
        actor={"orchestrator": "signoff"}, evidence={}, workflow_id=workflow_id, run_id="run-1", at=datetime.now(timezone.utc), sequence=n,
    )


async def test_rotation_keeps_old_records_verifiable_and_bounds_each_key_to_its_period(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "orchestrator.ed25519", audit_log=tmp_path / "audit" / "log.jsonl")
    init_keys(settings.key_path)
    first_pin = tmp_path / "first-trust.json"
    shutil.copy(trust_path(settings), first_pin)  # what an auditor pinned on day one
    store = FileLogStore(settings.audit_log)
    signer = KeyFileSigner(settings.key_path)
    old = load_signing_key(settings.key_path)
    for n in (1, 2):
        append_record(store, _decision(n), signer)

    env = {**os.environ, "SIGNOFF_STATE_DIR": str(tmp_path), "SIGNOFF_KEY_PATH": str(settings.key_path), "SIGNOFF_AUDIT_LOG": str(settings.audit_log)}
    done = subprocess.run(CLI + ["keys", "rotate", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    assert rotated["old_keyid"] == keyid_for(old.public_key()) and rotated["new_keyid"] == signer.keyid  # the signer followed the file
    for n in (3, 4):
        append_record(store, _decision(n), signer)

    for trust in (AuditTrust.load(trust_path(settings)), AuditTrust.load(first_pin)):
        report = verify(store, trust)
        assert report.ok, report.to_dict()
    trust = AuditTrust.load(trust_path(settings))
    assert trust.keys[rotated["old_keyid"]].not_after is not None and trust.keys[rotated["new_keyid"]].not_before is not None
    rotation = entries_of(settings.audit_log)[2]
    assert rotation["kind"] == "key_rotation" and {s["keyid"] for s in rotation["envelope"]["signatures"]} == {rotated["old_keyid"], rotated["new_keyid"]}

    # the retired key, stolen, signs a record after the rotation: outside its period
    append_record(store, _decision(5), Ed25519Signer(old))
    for pinned in (trust, AuditTrust.load(first_pin)):
        [problem] = verify(store, pinned).problems
        assert problem.index == 5 and problem.kind == "key"
        assert f"is signed by key {rotated['old_keyid'][:16]}…" in problem.message
        assert "outside its validity period" in problem.message or "was rotated out at entry 2" in problem.message

    # and a record the new key signs as if logged before it existed
    lines = settings.audit_log.read_bytes().splitlines(keepends=True)
    settings.audit_log.write_bytes(b"".join(lines[:5]))
    early = datetime.now(timezone.utc) - timedelta(days=1)
    append_record(store, _decision(5), signer, now=lambda: early)
    [problem] = verify(store, trust).problems
    assert problem.index == 5 and "outside its validity period" in problem.message
    assert f"the record says it was logged at {early.isoformat(timespec='microseconds').replace('+00:00', 'Z')}" in problem.message


async def test_a_rotation_not_signed_by_the_old_key_adds_no_key(tmp_path: Path) -> None:
    """An attacker cannot introduce their key by writing a rotation record signed only by it."""
    key_path = tmp_path / "keys" / "k"
    init_keys(key_path)
    store = FileLogStore(tmp_path / "log.jsonl")
    genuine = KeyFileSigner(key_path)
    append_record(store, _decision(1), genuine)
    pinned = AuditTrust.load(key_path.with_name("k.trust.json"))
    mallory = Ed25519Signer(Ed25519PrivateKey.generate())
    from signoff.audit import KEYS_WORKFLOW, ROTATION_KIND, public_pem

    fake = _decision(1, workflow_id=KEYS_WORKFLOW).model_copy(
        update={"kind": ROTATION_KIND, "evidence": {"old_keyid": genuine.keyid, "new_keyid": mallory.keyid, "new_public_key_pem": public_pem(mallory.private_key.public_key())}}
    )
    append_record(store, fake, mallory)
    append_record(store, _decision(2), mallory)
    problems = verify(store, pinned).problems
    assert any(p.kind == "key" and "not signed by both keys" in p.message for p in problems)
    assert any(p.index == 2 and "do not include" in p.message for p in problems)


def test_a_trust_file_with_a_wrong_public_key_is_refused_in_one_sentence(tmp_path: Path) -> None:
    key_path = tmp_path / "k"
    init_keys(key_path)
    trust = json.loads(key_path.with_name("k.trust.json").read_text())
    other = Ed25519Signer(Ed25519PrivateKey.generate())
    from signoff.audit import public_pem

    trust["keys"][0]["public_key_pem"] = public_pem(other.private_key.public_key())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(trust))
    env = {**os.environ, "SIGNOFF_KEY_PATH": str(key_path), "SIGNOFF_AUDIT_LOG": str(tmp_path / "log.jsonl")}
    done = subprocess.run(CLI + ["audit", "verify", "--no-history", "--trust", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "does not have that key id; fix the trust file." in done.stderr
    missing = subprocess.run(CLI + ["audit", "verify", "--no-history", "--trust", str(tmp_path / "nope.json")], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "there is no audit trust file at" in missing.stderr and "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- history gone


async def _delete_history(client: Client, workflow_id: str) -> None:
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id))
    )

    for _ in range(900):  # deletion is asynchronous (and slow on a loaded machine)
        try:
            await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"Temporal still has {workflow_id} 90 s after deleting it")


async def test_verify_after_the_history_is_deleted_stands_on_checkpoints_and_says_so(client: Client, task_queue: str) -> None:
    rid, settings = await gated_release(client, task_queue)
    code, doc, _ = cli(client, "audit", "verify", rid)
    assert code == 0 and doc["guarantees"] == {rid: "history"}, doc
    await _delete_history(client, rid)

    code, doc, _ = cli(client, "audit", "verify", rid)
    assert code == 0, doc
    assert doc["guarantees"] == {rid: "checkpoints"} and doc["history_problems"] == []
    env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host}
    text = subprocess.run(CLI + ["audit", "verify", rid], env=env, capture_output=True, text=True, timeout=60).stdout
    assert f"Temporal no longer has the history of {rid}; relied on the signed chain, contiguous sequences, the outcome record and the checkpoints" in text

    # without a checkpoint covering its last record, the same release cannot stand on its own
    checkpoint_path(settings).unlink()
    code, doc, _ = cli(client, "audit", "verify", rid)
    assert code == 1 and doc["guarantees"] == {rid: "none"}
    [problem] = doc["history_problems"]
    assert problem["message"].startswith(f"the Temporal history of {rid} is gone and its records cannot stand on their own: no signed checkpoint covers its last record")

    # a checkpoint published elsewhere (`audit checkpoint --new`, kept by the auditor) restores it
    code, published, _ = cli(None, "audit", "checkpoint", "--new")
    assert code == 0 and published["size"] == doc["entries"]
    kept = Path(settings.state_dir) / "published-checkpoint.json"
    kept.write_text(json.dumps(published))
    checkpoint_path(settings).unlink()
    code, doc, _ = cli(client, "audit", "verify", rid, "--checkpoint", str(kept))
    assert code == 0 and doc["guarantees"] == {rid: "checkpoints"} and doc["checkpoints"] == 1


# --------------------------------------------------------------------------- from the adversarial review


def _rotated_log(tmp_path: Path) -> tuple[Settings, FileLogStore, Any, dict[str, Any], Any]:
    from signoff.audit import CheckpointStore, write_checkpoint

    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "keys" / "k.ed25519", audit_log=tmp_path / "audit" / "log.jsonl")
    init_keys(settings.key_path)
    store, checkpoints = FileLogStore(settings.audit_log), CheckpointStore(tmp_path / "checkpoints.jsonl")
    signer = KeyFileSigner(settings.key_path)
    old = load_signing_key(settings.key_path)
    for n in (1, 2):
        append_record(store, _decision(n), signer)
    rotated = rotate_keys(settings, store, checkpoints)
    append_record(store, _decision(3), signer)
    write_checkpoint(store, checkpoints, signer)
    return settings, store, checkpoints, rotated, old


async def test_a_retired_key_cannot_bring_in_a_key_of_its_own(tmp_path: Path) -> None:
    """The stolen retired key signs a second, back-dated rotation to the attacker's key, then
    records and a checkpoint with it: nothing of it is trusted."""
    from signoff.audit import KEYS_WORKFLOW, ROTATION_KIND, CoSigner, public_pem, signed_place, write_checkpoint

    settings, store, checkpoints, rotated, old = _rotated_log(tmp_path)
    trust = AuditTrust.load(trust_path(settings))
    assert verify(store, trust, checkpoints=checkpoints.all()).ok
    rotation = next(e for e in store.entries() if e["kind"] == ROTATION_KIND)
    at = datetime.fromisoformat(signed_place(statement_of(rotation["envelope"]))["logged_at"].replace("Z", "+00:00"))
    mallory = Ed25519Signer(Ed25519PrivateKey.generate())
    fake = _decision(2, workflow_id=KEYS_WORKFLOW).model_copy(
        update={"kind": ROTATION_KIND, "evidence": {"old_keyid": rotated["old_keyid"], "new_keyid": mallory.keyid, "new_public_key_pem": public_pem(mallory.private_key.public_key())}}
    )
    append_record(store, fake, CoSigner(mallory, Ed25519Signer(old)), now=lambda: at)
    append_record(store, _decision(4), mallory)
    write_checkpoint(store, checkpoints, mallory)
    report = verify(store, trust, checkpoints=checkpoints.all())
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any("is a key rotation from" in m and "not signed by both keys while the old one was trusted" in m for m in messages)
    assert any(m.startswith(f"entry 4 (line 5) is signed by key {rotated['old_keyid'][:16]}…, which was rotated out at entry 2") for m in messages)
    assert any(m.startswith(f"entry 5 (line 6) is signed by key {mallory.keyid[:16]}…") and "do not include" in m for m in messages)
    assert any(m.startswith("checkpoint 3 is signed by key") for m in messages)
    assert report.covered == 4  # the attacker's checkpoint does not count


async def test_a_relabelled_record_cannot_hide_from_a_workflow_check(tmp_path: Path) -> None:
    """The copies beside the envelope are not signed: which workflow a record belongs to is
    what its signed statement says, and a relabelled copy is named."""
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "k", audit_log=tmp_path / "log.jsonl")
    init_keys(settings.key_path)
    store = FileLogStore(settings.audit_log)
    signer = KeyFileSigner(settings.key_path)
    for n in (1, 2):
        append_record(store, _decision(n), signer)
    append_record(store, _decision(3).model_copy(update={"kind": "release_outcome"}), signer)
    entries = entries_of(settings.audit_log)
    entries[2]["workflow_id"] = "rel-rotate-x"  # hide the outcome from `verify rel-rotate`
    settings.audit_log.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    report = verify(store, load_public_key(settings.key_path), workflow_id="rel-rotate")
    assert not report.ok and report.workflows["rel-rotate"]["outcome"] == 2
    assert [str(p) for p in report.problems] == ["entry 2 (line 3) says workflow_id 'rel-rotate-x' but its signed statement says 'rel-rotate'"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: e["envelope"].update(payload="é" * 8),
        lambda e: e["envelope"].update(payload=5),
        lambda e: e.update(kind=["release_outcome"]),
        lambda e: e.update(sequence=10**12),
    ],
    ids=["non-ascii-payload", "payload-not-a-string", "kind-a-list", "huge-sequence"],
)
async def test_malformed_entries_are_problems_not_crashes(tmp_path: Path, damage: Any) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "k", audit_log=tmp_path / "log.jsonl")
    init_keys(settings.key_path)
    store = FileLogStore(settings.audit_log)
    for n in (1, 2, 3):
        append_record(store, _decision(n), KeyFileSigner(settings.key_path))
    entries = entries_of(settings.audit_log)
    damage(entries[1])
    settings.audit_log.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    report = verify(store, load_public_key(settings.key_path))
    assert not report.ok and {p.index for p in report.problems} >= {1}


async def test_a_nan_in_a_log_line_is_a_corrupt_line(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "k", audit_log=tmp_path / "log.jsonl")
    init_keys(settings.key_path)
    store = FileLogStore(settings.audit_log)
    append_record(store, _decision(1), KeyFileSigner(settings.key_path))
    settings.audit_log.write_text(settings.audit_log.read_text().replace('"sequence":1', '"sequence":NaN'))
    [problem] = verify(store, load_public_key(settings.key_path)).problems
    assert "cannot be read" in str(problem) and "NaN is not a JSON value" in str(problem)


async def test_records_from_before_signed_places_do_not_raise_a_false_alarm(tmp_path: Path) -> None:
    """A log upgraded in place: older records without a signed place, then new ones."""
    from signoff.audit import build_statement

    settings = Settings(state_dir=tmp_path, key_path=tmp_path / "k", audit_log=tmp_path / "log.jsonl")
    init_keys(settings.key_path)
    signer = Ed25519Signer(load_signing_key(settings.key_path))
    entries = [{"envelope": signer.sign(canonical_json(build_statement(_decision(n)))).envelope, "workflow_id": "rel-rotate", "sequence": n, "kind": "policy"} for n in (1, 2)]
    rechain(settings.audit_log, entries)
    store = FileLogStore(settings.audit_log)
    append_record(store, _decision(3), signer)
    report = verify(store, load_public_key(settings.key_path))
    assert report.ok, report.to_dict()["problems"]
    assert report.legacy == 2
