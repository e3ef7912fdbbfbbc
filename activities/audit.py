"""The audit store: the one activity that signs a decision and appends it to the chained log.

Workflows call ``append_decision`` by name with a `DecisionInput` whose ``sequence`` they
number themselves (deterministically), so a retried activity — for example one whose worker
died after the fsync but before reporting — finds its own record and appends nothing.

Key on first use: when the key file is missing and the log is still empty, the activity
creates the key (as ``signoff keys init`` would) so a fresh dev stack records decisions
without a setup step. When the log already has records, a missing key is an operator error
(wrong ``SIGNOFF_KEY_PATH``, lost volume): creating a new key then would silently split the log
between two keys, so the activity refuses and keeps retrying until the key is restored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.audit import (
    AuditLogBusy,
    AuditLogCorrupt,
    CheckpointPolicy,
    CheckpointStore,
    DecisionSigner,
    KeyExistsError,
    LogStore,
    RecordConflict,
    SigstoreIdentityMissing,
    append_record,
    checkpoint_store_from_settings,
    init_keys,
    signer_from_settings,
    sigstore_enabled,
    store_from_settings,
    write_checkpoint,
)
from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import DecisionInput

log = logging.getLogger(__name__)


class AuditActivities:
    """Holds the log store and (lazily) the signer; tests hand in their own store."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: LogStore | None = None,
        signer: DecisionSigner | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_policy: CheckpointPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.store: LogStore = store if store is not None else store_from_settings(settings, incremental=True)
        self._signer = signer
        self.checkpoints = checkpoints if checkpoints is not None or store is not None else checkpoint_store_from_settings(settings)
        self.checkpoint_policy = checkpoint_policy or CheckpointPolicy()

    def _ensure_signer(self) -> DecisionSigner:
        if self._signer is not None:
            return self._signer
        if not sigstore_enabled() and not self.settings.key_path.exists():
            existing = self.store.entries()
            if existing:
                raise ApplicationError(
                    f"the signing key {self.settings.key_path} is missing but the audit log already holds "
                    f"{len(existing)} records; restore the key or point SIGNOFF_KEY_PATH at it (a new key would split the log).",
                    type="SigningKeyMissing",
                )
            try:
                info = init_keys(self.settings.key_path)
                log.warning("created the orchestrator signing key %s (keyid %s)", info.path, info.keyid)
            except KeyExistsError:
                pass  # another activity created it a moment ago: use that one
        try:
            self._signer = signer_from_settings(self.settings)
        except ConfigError as e:
            raise ApplicationError(str(e), type="SigningKeyInvalid", non_retryable=True) from e
        return self._signer

    def _append(self, decision: DecisionInput) -> dict[str, Any]:
        try:
            entry = append_record(self.store, decision, self._ensure_signer())
        except ValueError as e:
            raise ApplicationError(str(e), type="InvalidDecision", non_retryable=True) from e
        except RecordConflict as e:
            raise ApplicationError(str(e), type="RecordConflict", non_retryable=True) from e
        except SigstoreIdentityMissing as e:
            raise ApplicationError(str(e), type="SigstoreIdentityMissing", non_retryable=True) from e
        except AuditLogCorrupt as e:
            # retryable: an operator can restore the log and the release carries on, losing nothing
            raise ApplicationError(str(e), type="AuditLogCorrupt") from e
        except AuditLogBusy as e:
            raise ApplicationError(str(e), type="AuditLogBusy") from e
        if self.checkpoints is not None and self.checkpoint_policy.due(decision.kind):
            # a checkpoint of the prefix this append produced: a true statement even if another
            # writer has moved the head since; a failure here loses no record, so it only logs
            try:
                write_checkpoint(self.store, self.checkpoints, self._ensure_signer(), size=entry["index"] + 1, head_hash=entry["entry_hash"])
            except OSError as e:
                log.error("could not write an audit checkpoint to %s: %s", self.checkpoints.path, e)
        return {
            "index": entry["index"],
            "entry_hash": entry["entry_hash"],
            "workflow_id": decision.workflow_id,
            "sequence": decision.sequence,
        }

    @activity.defn(name="append_decision")
    async def append_decision(self, decision: DecisionInput) -> dict[str, Any]:
        """Sign and append; returns ``{"index", "entry_hash", "workflow_id", "sequence"}`` once
        the record is on disk (fsync), so a completed activity always means a durable record."""
        entry = await asyncio.to_thread(self._append, decision)
        if activity.in_activity():  # also called directly (tests, tools)
            activity.metric_meter().create_counter("signoff_decision_records", "Signed decision records appended", "records").add(
                1, {"kind": decision.kind, "outcome": decision.outcome}
            )
        return entry

    @activity.defn(name="append_decisions")
    async def append_decisions(self, decisions: list[DecisionInput]) -> list[dict[str, Any]]:
        """`append_decision` for each record in order: one activity for the records a workflow
        queued together. Each keeps its own (workflow id, sequence) idempotency, so a retry after
        a partial batch appends only the records not yet on disk."""
        return [await self.append_decision(decision) for decision in decisions]


def activities_from_settings(settings: Settings) -> list:
    audit = AuditActivities(settings)
    return [audit.append_decision, audit.append_decisions]



def _size_and_last(entries: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    return len(entries), (entries[-1] if entries else None)


async def checkpoint_loop(settings: Settings, *, seconds: float | None = None) -> None:
    """Every ``seconds`` (SIGNOFF_CHECKPOINT_SECONDS, default 60) sign a checkpoint if the log
    grew since the last one, so records of workflows still running are covered within that time
    even when nothing else is appended. Runs beside the worker until cancelled."""
    import os

    period = seconds if seconds is not None else float(os.environ.get("SIGNOFF_CHECKPOINT_SECONDS", "60"))
    store = store_from_settings(settings, incremental=True)
    checkpoints = checkpoint_store_from_settings(settings)
    last_size = -1
    while True:
        await asyncio.sleep(max(1.0, period))
        try:
            head = getattr(store, "head", None)  # the size and last entry, without reading the log
            size, last = await asyncio.to_thread(head) if head is not None else _size_and_last(await asyncio.to_thread(store.entries))
            if size and size != last_size and last is not None and "corrupt" not in last and settings.key_path.exists() and not sigstore_enabled():
                await asyncio.to_thread(write_checkpoint, store, checkpoints, signer_from_settings(settings), size=size, head_hash=str(last.get("entry_hash")))
                last_size = size
        except (OSError, ConfigError) as e:
            log.error("periodic audit checkpoint failed: %s", e)
