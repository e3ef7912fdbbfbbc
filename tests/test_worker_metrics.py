"""The worker exports Prometheus metrics: the Temporal SDK's runtime metrics and signoff's own
(releases finished, approval attempts, decision records), on the SDK's metrics endpoint."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from signoff.models import ApprovalAttempt
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase
from workers.worker import metrics_runtime

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_exports_sdk_and_signoff_metrics(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    bind = f"127.0.0.1:{free_port()}"
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(target, data_converter=pydantic_data_converter, runtime=metrics_runtime(bind))
    async with running_worker(client, task_queue) as sc:
        rid = f"metrics-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(required=1), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        await sc.submit_approval(ApprovalAttempt(release_id=rid, identity="dana@example.com", channel="cli", digest=DIGEST_A))
        await sc.submit_approval(ApprovalAttempt(release_id=rid, identity="alice@example.com", channel="cli", digest=DIGEST_A))
        await sc.handle(rid).result()
        text = urllib.request.urlopen(f"http://{bind}/metrics", timeout=5).read().decode()
    assert "temporal_workflow_completed" in text or "workflow_completed" in text  # the SDK's own
    finished = [line for line in text.splitlines() if line.startswith("signoff_releases_finished") and 'phase="succeeded"' in line]
    assert finished and float(finished[0].rsplit(" ", 1)[1]) >= 1
    attempts = [line for line in text.splitlines() if line.startswith("signoff_approval_attempts")]
    assert any('outcome="refused"' in a for a in attempts) and any('outcome="accepted"' in a for a in attempts)
    assert any(line.startswith("signoff_decision_records") for line in text.splitlines())
