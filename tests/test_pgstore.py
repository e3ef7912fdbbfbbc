"""The audit log, checkpoints and delivery logs on a real PostgreSQL (Debian's package): two
worker processes keep one valid chain, the application role cannot rewrite it, and a
superuser who does is caught by `signoff audit verify`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from signoff.audit import AuditTrust, init_keys, keyid_for, load_public_key, statement_of, verify
from signoff.pgstore import PostgresCheckpointStore, PostgresDeliveryLog, PostgresLogStore, install_schema
from signoff.trust.dsse import canonical_json
from tests.pg import PostgresServer, start_postgres

CLI = [sys.executable, "-c", "from signoff.cli import main; main()"]
APP = "signoff_app"


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        server.create_role(APP)
        install_schema(server.superuser_dsn, APP)
        yield server


@pytest.fixture
def chain() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


WORKER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from activities.audit import AuditActivities
    from signoff.config import Settings
    from signoff.models import DecisionInput

    settings = Settings.from_env()
    audit = AuditActivities(settings)
    who, count = sys.argv[1], int(sys.argv[2])
    for workflow, n in [(f"rel-{who}", count), ("rel-shared", count // 2)]:
        for sequence in range(1, n + 1):
            audit._append(DecisionInput(
                kind="approval_attempt", outcome="accepted", subject_name="checkout",
                subject_digest="sha256:" + "a" * 64, reasons=[f"{workflow} #{sequence}"],
                actor={"identity": "alice@example.com", "channel": "cli"}, evidence={},
                workflow_id=workflow, run_id="run-1", at=datetime(2026, 12, 2, tzinfo=timezone.utc), sequence=sequence))
    """
)


def env_for(pg: PostgresServer, chain: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SIGNOFF_DATABASE_URL": pg.dsn_for(APP),
        "SIGNOFF_AUDIT_CHAIN": chain,
        "SIGNOFF_KEY_PATH": str(tmp_path / "keys" / "orchestrator.ed25519"),
        "SIGNOFF_CHECKPOINT_EVERY": "10",
    }


def test_two_worker_processes_append_one_chain_with_every_record_once(pg: PostgresServer, chain: str, tmp_path: Path) -> None:
    env = env_for(pg, chain, tmp_path)
    init_keys(Path(env["SIGNOFF_KEY_PATH"]))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, who, "60"], env=env, stderr=subprocess.PIPE, text=True) for who in ("one", "two")]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
    store = PostgresLogStore(pg.dsn_for(APP), chain)
    entries = store.entries()
    assert len(entries) == 60 + 60 + 30  # the shared workflow's decisions, appended by both, are there once
    assert [e["index"] for e in entries] == list(range(150))
    keys = [(e["workflow_id"], e["sequence"]) for e in entries]
    assert len(set(keys)) == len(keys)
    for workflow, count in (("rel-one", 60), ("rel-two", 60), ("rel-shared", 30)):
        assert sorted(s for w, s in keys if w == workflow) == list(range(1, count + 1))
    checkpoints = PostgresCheckpointStore(pg.dsn_for(APP), chain).all()
    report = verify(store, load_public_key(Path(env["SIGNOFF_KEY_PATH"])), checkpoints=checkpoints)
    assert report.ok, report.to_dict()["problems"][:3]
    assert report.checkpoints >= 10 and report.covered >= 140
    # the interleaving really happened: the two processes' records alternate somewhere in the chain
    owners = [w for w, _ in keys if w != "rel-shared"]
    assert any(a != b for a, b in zip(owners, owners[1:]))


def test_the_application_role_cannot_update_delete_or_truncate_records(pg: PostgresServer, chain: str, tmp_path: Path) -> None:
    env = env_for(pg, chain, tmp_path)
    init_keys(Path(env["SIGNOFF_KEY_PATH"]))
    subprocess.run([sys.executable, "-c", WORKER, "one", "4"], env=env, check=True, timeout=120)
    attacks = [
        "UPDATE signoff_audit_log SET entry = replace(entry, 'alice', 'carol') WHERE chain = %s",
        "DELETE FROM signoff_audit_log WHERE chain = %s",
        "DELETE FROM signoff_audit_checkpoints WHERE chain = %s",
    ]
    with psycopg.connect(pg.dsn_for(APP), autocommit=True) as db:
        for attack in attacks:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(attack, (chain,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("TRUNCATE signoff_audit_log")
    # even the tables' owner is stopped by the trigger, unless it switches triggers off
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as db:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only: DELETE on signoff_audit_log is refused"):
            db.execute("DELETE FROM signoff_audit_log WHERE chain = %s", (chain,))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only: TRUNCATE"):
            db.execute("TRUNCATE signoff_audit_checkpoints")
    assert len(PostgresLogStore(pg.dsn_for(APP), chain).entries()) == 6


def test_a_superuser_rewriting_a_row_is_caught_by_audit_verify(pg: PostgresServer, chain: str, tmp_path: Path) -> None:
    env = env_for(pg, chain, tmp_path)
    init_keys(Path(env["SIGNOFF_KEY_PATH"]))
    subprocess.run([sys.executable, "-c", WORKER, "one", "6"], env=env, check=True, timeout=120)
    ok = subprocess.run(CLI + ["audit", "verify", "--no-history", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["entries"] == 9

    # the superuser switches the triggers off and rewrites who approved entry 2
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as db:
        (text,) = db.execute("SELECT entry FROM signoff_audit_log WHERE chain = %s AND idx = 2", (chain,)).fetchone()
        entry = json.loads(text)
        statement = statement_of(entry["envelope"])
        statement["predicate"]["actor"]["identity"] = "carol@example.com"
        entry["envelope"]["payload"] = base64.b64encode(canonical_json(statement)).decode()
        db.execute("SET session_replication_role = replica")
        db.execute("UPDATE signoff_audit_log SET entry = %s WHERE chain = %s AND idx = 2", (canonical_json(entry).decode(), chain))
    bad = subprocess.run(CLI + ["audit", "verify", "--no-history", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    problems = json.loads(bad.stdout)["problems"]
    assert {p["index"] for p in problems} == {2}
    assert any("does not match its entry_hash" in p["message"] for p in problems)
    assert any("has a signature that does not verify" in p["message"] for p in problems)


def test_two_gateways_claim_a_delivery_once(pg: PostgresServer, chain: str) -> None:
    gateways = [PostgresDeliveryLog(pg.dsn_for(APP), f"slack-{chain}", ttl_seconds=3600) for _ in range(2)]
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def claim(log: PostgresDeliveryLog) -> None:
        barrier.wait()
        results.append(log.claim("T1/U1/click-1"))

    threads = [threading.Thread(target=claim, args=(gateways[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed for claimed, _, _ in results) == [False] * 7 + [True]
    gateways[0].complete("T1/U1/click-1", 200, {"text": "approval recorded"})
    assert gateways[1].claim("T1/U1/click-1") == (False, 200, {"text": "approval recorded"})
    gateways[1].release("T1/U1/click-1")
    assert gateways[0].claim("T1/U1/click-1") == (True, None, None)


def test_db_init_and_its_errors_are_one_sentence(pg: PostgresServer, tmp_path: Path) -> None:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": pg.dsn_for("postgres"), "SIGNOFF_STATE_DIR": str(tmp_path)}
    env["SIGNOFF_DATABASE_URL"] = f"postgresql://{pg.superuser}@127.0.0.1:{pg.port}/postgres"
    done = subprocess.run(CLI + ["db", "init", "--app-role", APP, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout) == {"ok": True, "app_role": APP}, done.stderr
    missing = subprocess.run(CLI + ["db", "init"], env={k: v for k, v in env.items() if k != "SIGNOFF_DATABASE_URL"}, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "set SIGNOFF_DATABASE_URL" in missing.stderr and "Traceback" not in missing.stderr
    down = {**env, "SIGNOFF_DATABASE_URL": f"postgresql://{APP}@127.0.0.1:1/postgres", "SIGNOFF_KEY_PATH": str(tmp_path / "k")}
    init_keys(tmp_path / "k")
    unreachable = subprocess.run(CLI + ["audit", "verify", "--no-history"], env=down, capture_output=True, text=True, timeout=60)
    assert unreachable.returncode != 0 and "Traceback" not in unreachable.stderr
    assert "cannot connect to PostgreSQL at SIGNOFF_DATABASE_URL" in unreachable.stderr


def test_the_pinned_trust_applies_to_the_postgres_log_too(pg: PostgresServer, chain: str, tmp_path: Path) -> None:
    env = env_for(pg, chain, tmp_path)
    init_keys(Path(env["SIGNOFF_KEY_PATH"]))
    subprocess.run([sys.executable, "-c", WORKER, "one", "2"], env=env, check=True, timeout=120)
    other = tmp_path / "other.ed25519"
    init_keys(other)
    store = PostgresLogStore(pg.dsn_for(APP), chain)
    report = verify(store, AuditTrust.single(load_public_key(other), "an auditor's pin of another key"))
    assert not report.ok and {p.kind for p in report.problems} == {"key"}
    assert keyid_for(load_public_key(Path(env["SIGNOFF_KEY_PATH"])))[:16] in report.problems[0].message
