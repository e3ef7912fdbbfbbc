"""The worker exports Prometheus metrics: the Temporal SDK's runtime metrics and signoff's own
(releases finished, approval attempts, decision records), on the SDK's metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.converter import data_converter
from signoff.models import ApprovalAttempt
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase
from workers.worker import metrics_runtime

pytestmark = pytest.mark.asyncio


async def scrape_until(url: str, needle: str, *, within: float = 15.0) -> str:
    """The SDK core counts a completed workflow once the server has acknowledged the final
    workflow task, which can be a moment after the client sees the result: scrape until the
    counter is there, and return the last scrape either way."""
    deadline = time.monotonic() + within
    while True:
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        if needle in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_exports_sdk_and_signoff_metrics(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    bind = f"127.0.0.1:{free_port()}"
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(target, data_converter=data_converter, runtime=metrics_runtime(bind))
    async with running_worker(client, task_queue) as sc:
        rid = f"metrics-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(required=1), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        await sc.submit_approval(ApprovalAttempt(release_id=rid, identity="dana@example.com", channel="cli", digest=DIGEST_A))
        await sc.submit_approval(ApprovalAttempt(release_id=rid, identity="alice@example.com", channel="cli", digest=DIGEST_A))
        await sc.handle(rid).result()
        text = await scrape_until(f"http://{bind}/metrics", "workflow_completed")
    assert "workflow_completed" in text  # the SDK's own counter
    finished = [line for line in text.splitlines() if line.startswith("signoff_releases_finished") and 'phase="succeeded"' in line]
    assert finished and float(finished[0].rsplit(" ", 1)[1]) >= 1
    attempts = [line for line in text.splitlines() if line.startswith("signoff_approval_attempts")]
    assert any('outcome="refused"' in a for a in attempts) and any('outcome="accepted"' in a for a in attempts)
    assert any(line.startswith("signoff_decision_records") for line in text.splitlines())
