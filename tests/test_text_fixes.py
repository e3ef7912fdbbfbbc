"""What a new user reads: the demo's gate line before any approval, and the CLI's answer to an
approval (progress once, not twice)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from temporalio.client import Client

from signoff.models import GateStatus
from tests.helpers import gated_spec, running_worker, wait_phase
from workers.demo import gate_line


def test_demo_gate_line_without_progress_says_none_yet() -> None:
    fresh = GateStatus(name="production", required=2)
    assert gate_line(fresh) == "  gate production: needs 2 approvals, none yet"
    assert "()" not in gate_line(fresh)
    half = GateStatus(name="production", required=2, progress="1 of 2: alice@example.com")
    assert gate_line(half) == "  gate production: needs 2 approvals (1 of 2: alice@example.com)"


@pytest.mark.asyncio
async def test_cli_approval_prints_progress_once(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        rid = f"txt-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
        run = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", "from signoff.cli import main; main()", "approve", rid, "--as", "alice@example.com"], env=env, capture_output=True, text=True, timeout=60
        )
        await sc.abort(rid, identity="dana@example.com", reason="test over")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "accepted: approval recorded; 1 of 2: alice@example.com"
