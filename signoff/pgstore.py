"""PostgreSQL behind the audit log's, the checkpoints' and the delivery log's interfaces, for
more than one machine: several workers append to one chain, several gateways share one dedupe
log.

* **One chain under concurrency.** An append takes a transaction-scoped advisory lock on the
  chain, checks that the entry extends the current head (index and back-link) and inserts it;
  the primary key (chain, index) backs that up. A writer that lost the race gets `ChainConflict`
  and signs again (`signoff.audit.append_record`), exactly as with the file store.
* **Append-only for the application.** `install_schema` (run once by an owner, `signoff db
  init`) puts a trigger on the audit and checkpoint tables that refuses UPDATE, DELETE and
  TRUNCATE, and grants the application role only SELECT and INSERT there. A superuser can still
  rewrite rows, which is what the signatures, the signed chain and the checkpoints are for:
  `audit verify` names what was changed.

The file stores stay the embedded default; ``SIGNOFF_DATABASE_URL`` switches to these.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from signoff.audit import GENESIS_HASH, ChainConflict, SignedEnvelope
from signoff.errors import ConfigError
from signoff.trust.dsse import canonical_json

DATABASE_URL_ENV = "SIGNOFF_DATABASE_URL"

SCHEMA = """
CREATE TABLE IF NOT EXISTS signoff_audit_log (
    chain       text        NOT NULL,
    idx         bigint      NOT NULL,
    workflow_id text,
    sequence    integer,
    kind        text,
    entry_hash  text        NOT NULL,
    entry       text        NOT NULL,
    appended_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, idx)
);
CREATE INDEX IF NOT EXISTS signoff_audit_log_decision ON signoff_audit_log (chain, workflow_id, sequence);
CREATE TABLE IF NOT EXISTS signoff_audit_checkpoints (
    id     bigserial PRIMARY KEY,
    chain  text NOT NULL,
    record text NOT NULL
);
CREATE TABLE IF NOT EXISTS signoff_deliveries (
    channel    text             NOT NULL,
    id         text             NOT NULL,
    claimed_at double precision NOT NULL,
    status     integer,
    answer     text,
    PRIMARY KEY (channel, id)
);
CREATE OR REPLACE FUNCTION signoff_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'signoff audit records are append-only: % on % is refused', TG_OP, TG_TABLE_NAME;
END
$$;
"""

APPEND_ONLY = ("signoff_audit_log", "signoff_audit_checkpoints")


def install_schema(dsn: str, app_role: str | None = None) -> None:
    """Create the tables and the append-only triggers (idempotent); with ``app_role``, grant it
    what the worker and gateway need and nothing that rewrites the audit trail."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SELECT pg_advisory_lock(hashtextextended('signoff-schema', 0))")
        db.execute(SCHEMA)
        for table in APPEND_ONLY:
            for name, when in (("rows", "UPDATE OR DELETE ON {} FOR EACH ROW"), ("truncate", "TRUNCATE ON {} FOR EACH STATEMENT")):
                trigger = sql.Identifier(f"{table}_append_only_{name}")
                db.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, sql.Identifier(table)))
                db.execute(
                    sql.SQL("CREATE TRIGGER {} BEFORE " + when + " EXECUTE FUNCTION signoff_append_only()").format(
                        trigger, sql.Identifier(table)
                    )
                )
        if app_role:
            role = sql.Identifier(app_role)
            for table in APPEND_ONLY:
                db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), role))
                db.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(table), role))
            db.execute(sql.SQL("GRANT USAGE ON SEQUENCE signoff_audit_checkpoints_id_seq TO {}").format(role))
            db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON signoff_deliveries TO {}").format(role))
        db.execute("SELECT pg_advisory_unlock(hashtextextended('signoff-schema', 0))")


class _Connections:
    """One connection per thread (activities run in a thread pool), opened on first use."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local = threading.local()

    def get(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True)
            except psycopg.OperationalError as e:
                raise ConfigError(
                    f"cannot connect to PostgreSQL at {DATABASE_URL_ENV} ({str(e).strip().splitlines()[0]}); check the URL and that the server is up."
                ) from e
            self._local.conn = conn
        return conn


def _undefined_table(e: Exception) -> ConfigError:
    return ConfigError(f"the signoff tables are missing in PostgreSQL ({e}); create them once with `signoff db init`.")


class PostgresLogStore:
    """`signoff.audit.LogStore` on PostgreSQL: rows of canonical JSON entries, per chain."""

    def __init__(self, dsn: str, chain: str = "default") -> None:
        self.chain = chain
        self._db = _Connections(dsn)

    def __repr__(self) -> str:
        return f"PostgresLogStore(chain={self.chain!r})"

    def entries(self) -> list[dict[str, Any]]:
        try:
            rows = self._db.get().execute("SELECT idx, entry FROM signoff_audit_log WHERE chain = %s ORDER BY idx", (self.chain,)).fetchall()
        except psycopg.errors.UndefinedTable as e:
            raise _undefined_table(e) from e
        return [self._parse(idx, text) for idx, text in rows]

    @staticmethod
    def _parse(idx: int, text: str) -> dict[str, Any]:
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as e:
            return {"corrupt": f"row {idx} is not valid JSON ({e.msg})", "line": idx + 1}
        if not isinstance(entry, dict):
            return {"corrupt": f"row {idx} is not a JSON object", "line": idx + 1}
        return entry

    def find(self, workflow_id: str, sequence: int) -> dict[str, Any] | None:
        row = self._db.get().execute(
            "SELECT idx, entry FROM signoff_audit_log WHERE chain = %s AND workflow_id = %s AND sequence = %s ORDER BY idx LIMIT 1",
            (self.chain, workflow_id, sequence),
        ).fetchone()
        return self._parse(*row) if row else None

    def head(self) -> tuple[int, dict[str, Any] | None]:
        """(number of entries, last entry): all an append needs, without reading the log."""
        row = self._db.get().execute(
            "SELECT idx, entry FROM signoff_audit_log WHERE chain = %s ORDER BY idx DESC LIMIT 1", (self.chain,)
        ).fetchone()
        return (row[0] + 1, self._parse(*row)) if row else (0, None)

    def append(self, entry: dict[str, Any]) -> None:
        record = {k: v for k, v in entry.items() if not k.startswith("_")}
        db = self._db.get()
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"signoff-audit:{self.chain}",))
                row = db.execute(
                    "SELECT idx, entry_hash FROM signoff_audit_log WHERE chain = %s ORDER BY idx DESC LIMIT 1", (self.chain,)
                ).fetchone()
                size, head_hash = (row[0] + 1, row[1]) if row else (0, GENESIS_HASH)
                if record.get("index") != size or record.get("prev_hash") != head_hash:
                    raise ChainConflict(f"the head of chain {self.chain} moved (now {size} entries)")
                db.execute(
                    "INSERT INTO signoff_audit_log (chain, idx, workflow_id, sequence, kind, entry_hash, entry) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (self.chain, size, record.get("workflow_id"), record.get("sequence"), record.get("kind"), record["entry_hash"], canonical_json(record).decode()),
                )
        except psycopg.errors.UniqueViolation as e:  # the lock makes this unreachable; the key backs it up
            raise ChainConflict(str(e)) from e
        except psycopg.errors.UndefinedTable as e:
            raise _undefined_table(e) from e


class PostgresCheckpointStore:
    """`signoff.audit.CheckpointStore` on PostgreSQL (append-only table)."""

    def __init__(self, dsn: str, chain: str = "default") -> None:
        self.chain = chain
        self.path = f"PostgreSQL table signoff_audit_checkpoints (chain {chain})"
        self._db = _Connections(dsn)

    def append(self, signed: SignedEnvelope) -> None:
        record: dict[str, Any] = {"envelope": signed.envelope}
        if signed.sigstore_bundle is not None:
            record["sigstore_bundle"] = signed.sigstore_bundle
        self._db.get().execute(
            "INSERT INTO signoff_audit_checkpoints (chain, record) VALUES (%s, %s)", (self.chain, canonical_json(record).decode())
        )

    def all(self) -> list[dict[str, Any]]:
        rows = self._db.get().execute("SELECT id, record FROM signoff_audit_checkpoints WHERE chain = %s ORDER BY id", (self.chain,)).fetchall()
        return [PostgresLogStore._parse(i, text) for i, text in rows]


class PostgresDeliveryLog:
    """`approvals.deliveries.DeliveryLog` on PostgreSQL, shared by every gateway replica."""

    def __init__(self, dsn: str, channel: str, *, ttl_seconds: int) -> None:
        self.channel = channel
        self.ttl_seconds = ttl_seconds
        self._db = _Connections(dsn)

    def claim(self, delivery_id: str) -> tuple[bool, int | None, dict[str, Any] | None]:
        now = time.time()
        db = self._db.get()
        with db.transaction():
            db.execute("DELETE FROM signoff_deliveries WHERE channel = %s AND claimed_at < %s", (self.channel, now - self.ttl_seconds))
            inserted = db.execute(
                "INSERT INTO signoff_deliveries (channel, id, claimed_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (self.channel, delivery_id, now),
            ).fetchone()
            if inserted:
                return True, None, None
            row = db.execute("SELECT status, answer FROM signoff_deliveries WHERE channel = %s AND id = %s", (self.channel, delivery_id)).fetchone()
        status, answer = row if row else (None, None)
        return False, status, (json.loads(answer) if answer else None)

    def complete(self, delivery_id: str, status: int, answer: dict[str, Any]) -> None:
        self._db.get().execute(
            "UPDATE signoff_deliveries SET status = %s, answer = %s WHERE channel = %s AND id = %s", (status, json.dumps(answer), self.channel, delivery_id)
        )

    def release(self, delivery_id: str) -> None:
        self._db.get().execute("DELETE FROM signoff_deliveries WHERE channel = %s AND id = %s", (self.channel, delivery_id))

    def count(self) -> int:
        return int(self._db.get().execute("SELECT COUNT(*) FROM signoff_deliveries WHERE channel = %s", (self.channel,)).fetchone()[0])
