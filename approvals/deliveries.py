"""Which inbound deliveries (Slack clicks, Jira webhooks) were already handled, kept on disk.

A delivery is *claimed* before it is processed, so two concurrent copies, a redelivery or a
captured request replayed after a gateway restart are not submitted twice; gateway replicas on
one host share the file (SQLite, WAL). Entries expire after a TTL longer than any channel's own
replay window.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

DELIVERY_TTL_SECONDS = 7 * 24 * 3600


class DeliveryLog:
    """Which webhook deliveries were already handled, and what we answered, kept on disk.

    A delivery is *claimed* before it is processed (so two concurrent copies are not both
    submitted) and either completed with its answer or released when processing failed for a
    reason on our side (Temporal unreachable), so Jira's retry gets a fresh chance.
    """

    def __init__(self, path: Path, *, ttl_seconds: int = DELIVERY_TTL_SECONDS) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")  # readers and one writer at a time, across replicas
            db.execute(
                "CREATE TABLE IF NOT EXISTS deliveries ("
                " id TEXT PRIMARY KEY, claimed_at REAL NOT NULL, status INTEGER, answer TEXT)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS deliveries_claimed_at ON deliveries (claimed_at)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        # WAL with synchronous=NORMAL: a claim is atomic and isolated at once and durable at the
        # next checkpoint; losing the last claims to a power cut only lets a sender retry.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def claim(self, delivery_id: str) -> tuple[bool, int | None, dict[str, Any] | None]:
        """(claimed, status, answer): claimed is False when the delivery was seen before; then
        status/answer are what we said the first time (None while it is still in flight)."""
        now = time.time()
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM deliveries WHERE claimed_at < ?", (now - self.ttl_seconds,))
                row = db.execute("SELECT status, answer FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO deliveries (id, claimed_at) VALUES (?, ?)", (delivery_id, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if row is None:
            return True, None, None
        return False, row[0], (json.loads(row[1]) if row[1] else None)

    def complete(self, delivery_id: str, status: int, answer: dict[str, Any]) -> None:
        with closing(self._connect()) as db:
            db.execute("UPDATE deliveries SET status = ?, answer = ? WHERE id = ?", (status, json.dumps(answer), delivery_id))

    def release(self, delivery_id: str) -> None:
        with closing(self._connect()) as db:
            db.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def count(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])


def delivery_log(state_dir: Path, channel: str, *, ttl_seconds: int = DELIVERY_TTL_SECONDS, database_url: str | None = None) -> Any:
    """The channel's delivery log: PostgreSQL when ``SIGNOFF_DATABASE_URL`` is set (gateway
    replicas on several machines), otherwise SQLite under the state directory."""
    if database_url:
        from signoff.pgstore import PostgresDeliveryLog

        return PostgresDeliveryLog(database_url, channel, ttl_seconds=ttl_seconds)
    return DeliveryLog(Path(state_dir) / channel / "deliveries.sqlite3", ttl_seconds=ttl_seconds)
