"""A full gated release leaves signed records in decision order that verify end to end,
and match the Temporal history (library and `signoff audit verify` CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from signoff.audit import cross_check, public_key_from_settings, show, store_from_settings, verify
from signoff.config import Settings
from signoff.models import ApprovalAttempt
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase

pytestmark = pytest.mark.asyncio


async def test_gated_release_records_verify(client: Client, task_queue: str, tmp_path: Path) -> None:
    settings = Settings.from_env()
    async with running_worker(client, task_queue) as sc:
        rid = f"audit-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        for who in ("dana@example.com", "alice@example.com", "bob@example.com"):
            await sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A))
        await sc.handle(rid).result()

    store = store_from_settings(settings)
    rows = show(rid, store)
    kinds = [(r["kind"], r["outcome"]) for r in rows]
    assert kinds == [
        ("start", "authenticated"),
        ("policy", "allowed"),
        ("approval_attempt", "refused"),
        ("approval_attempt", "accepted"),
        ("approval_attempt", "accepted"),
        ("gate_outcome", "approved"),
        ("attestation", "verification-summary"),  # the SLSA VSA written at promotion
        ("deploy", "deployed"),
        ("promotion", "started"),
        ("promotion", "stable"),
        ("release_outcome", "succeeded"),
    ], kinds
    refused = rows[2]
    assert "dana@example.com" in json.dumps(refused) and "requester" in json.dumps(refused)
    report = verify(store, public_key_from_settings(settings), workflow_id=rid)
    assert report.ok, report.to_dict()
    assert await cross_check(client, rid, store) == []

    env = {
        **os.environ,
        "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "SIGNOFF_TASK_QUEUE": task_queue,
    }
    cli = [sys.executable, "-c", "from signoff.cli import main; main()"]
    ok = subprocess.run(cli + ["audit", "verify", rid, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    export = tmp_path / "export.json"
    exported = subprocess.run(cli + ["audit", "export", rid, "--out", str(export), "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads(export.read_text())["envelopes"]) == len(rows)
    offline = subprocess.run(cli + ["audit", "verify", "--export", str(export), "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    accepted = {r["who"] for r in rows if r["kind"] == "approval_attempt" and r["outcome"] == "accepted"}
    assert len(accepted) == 2 and {a["by"] for a in json.loads(offline.stdout)["approvals"]} == accepted

    # one byte changed in one record: verify fails and names the entry
    log = settings.audit_log
    lines = log.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if '"gate_outcome"' in line)
    lines[target] = lines[target].replace('"gate_outcome"', '"gate_outcomE"', 1)
    log.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(cli + ["audit", "verify", rid, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and any(f"entry {target}" in p["message"] or p.get("index") == target for p in doc["problems"])
    assert "Traceback" not in bad.stderr
