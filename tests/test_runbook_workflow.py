"""RunbookWorkflow on the real dev server, with a real Prometheus answering the checks."""

from __future__ import annotations

from signoff.trust.credentials import dev_key_path

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from temporalio.client import Client

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ApprovalAttempt
from signoff.runbooks import certify
from tests.helpers import REPO, running_worker
from tests.prom import PrometheusServer

pytestmark = pytest.mark.asyncio


def book(name: str, *, steps: list[dict[str, Any]], pre: str | None = "vector(1)", post: str | None = "vector(1)", gate: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "description": f"test runbook {name}",
        "owners": ["carol@example.com"],
        "allowed_groups": ["on-call"],
        "parameters": {
            "type": "object",
            "properties": {"service": {"type": "string", "enum": ["checkout"]}, "enabled": {"type": "boolean", "default": True}},
            "required": ["service"],
            "additionalProperties": False,
        },
        "steps": steps,
    }
    if pre:
        doc["prechecks"] = [{"name": "pre", "query": pre, "condition": {"equals": 1}}]
    if post:
        doc["postchecks"] = [{"name": "post", "query": post, "condition": {"equals": 1}}]
    if gate:
        doc["gate"] = gate
    return doc


FLAG_STEPS = [
    {"name": "announce", "action": "notify", "with": {"text": "flipping {{ params.service }}"}},
    {"name": "flip", "action": "toggle_flag", "with": {"service": "{{ params.service }}", "flag": "new-pricing", "enabled": "{{ params.enabled }}"}},
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prom")) as prom:
        yield prom


@pytest.fixture
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus: PrometheusServer) -> Path:
    """A runbook directory with certified test runbooks, a per-test key and lock."""
    directory = tmp_path / "runbooks"
    directory.mkdir()
    monkeypatch.setenv("SIGNOFF_RUNBOOK_DIR", str(directory))
    monkeypatch.setenv("SIGNOFF_KEY_PATH", str(tmp_path / "keys" / "orchestrator.ed25519"))
    monkeypatch.setenv("SIGNOFF_PROMETHEUS_URL", prometheus.url)
    books = {
        "flip-flag": book("flip-flag", steps=FLAG_STEPS),
        "bad-precheck": book("bad-precheck", steps=FLAG_STEPS, pre="vector(0)"),
        "bad-postcheck": book("bad-postcheck", steps=FLAG_STEPS, post="vector(0)"),
        "gated-flip": book("gated-flip", steps=FLAG_STEPS, gate={"name": "two-person", "required": 1, "from_groups": ["release-managers"]}),
        "slow-flip": book("slow-flip", steps=[FLAG_STEPS[1], {"name": "pause", "action": "wait", "with": {"seconds": 6}}, {"name": "flip-back", "action": "toggle_flag", "with": {"service": "checkout", "flag": "other", "enabled": True}}], pre=None, post=None),
    }
    settings = Settings.from_env()
    for name, doc in books.items():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        certify(path, "carol@example.com", directory / "certified.lock", key_path=dev_key_path(settings.state_dir, "person", "carol@example.com"))
    return directory


def flag_file() -> Path:
    return Settings.from_env().state_dir / "flags" / "checkout.json"


async def test_certified_runbook_runs_with_checks(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        status = await sc.runbooks.run("flip-flag", params={"service": "checkout", "enabled": "false"}, identity="carol@example.com", wait=True)
        assert status.phase == "succeeded", status.reason
        assert [s.state for s in status.steps] == ["succeeded", "succeeded"]
        assert [c.state for c in status.checks] == ["successful", "successful"]
        assert status.certified_by == "carol@example.com" and len(status.sha256) == 64
        assert flag_file().exists() and "new-pricing" in flag_file().read_text()


async def test_edited_after_certification_is_refused(client: Client, task_queue: str, books: Path) -> None:
    path = books / "flip-flag.yaml"
    path.write_bytes(path.read_bytes() + b" ")
    async with running_worker(client, task_queue) as sc:
        status = await sc.runbooks.run("flip-flag", params={"service": "checkout"}, identity="carol@example.com")
        assert status.phase == "refused"
        assert "certif" in (status.reason or "")
        assert not flag_file().exists()


async def test_outsider_and_bad_parameters_are_refused(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        outsider = await sc.runbooks.run("flip-flag", params={"service": "checkout"}, identity="dana@example.com")
        assert outsider.phase == "refused" and "on-call" in (outsider.reason or "")
        bad = await sc.runbooks.run("flip-flag", params={"service": "payments"}, identity="carol@example.com")
        assert bad.phase == "refused" and "service" in (bad.reason or "")
        unknown = await sc.runbooks.run("no-such-book", params={}, identity="carol@example.com")
        assert unknown.phase == "refused"
        assert not flag_file().exists()


async def test_failing_precheck_stops_before_any_step(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        status = await sc.runbooks.run("bad-precheck", params={"service": "checkout"}, identity="carol@example.com", wait=True)
        assert status.phase == "failed" and "precheck pre" in (status.reason or "")
        assert all(s.state == "pending" for s in status.steps)
        assert not flag_file().exists()


async def test_failing_postcheck_fails_and_escalates(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        status = await sc.runbooks.run("bad-postcheck", params={"service": "checkout"}, identity="carol@example.com", wait=True)
        assert status.phase == "failed" and "postcheck post" in (status.reason or "")
        assert [s.state for s in status.steps] == ["succeeded", "succeeded"]
        history = await client.get_workflow_handle(status.run_id).fetch_history()
        scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
        assert "jira_open_incident" in scheduled  # escalation (a no-op when Jira is not configured)


async def test_dry_run_changes_nothing(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        status = await sc.runbooks.run("flip-flag", params={"service": "checkout"}, identity="carol@example.com", dry_run=True, wait=True)
        assert status.phase == "succeeded" and status.dry_run
        assert [s.state for s in status.steps] == ["dry_run", "dry_run"]
        assert "new-pricing" in status.steps[1].detail
        assert not flag_file().exists()


async def test_gated_runbook_waits_for_approvers(client: Client, task_queue: str, books: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        started = await sc.runbooks.run("gated-flip", params={"service": "checkout"}, identity="carol@example.com")
        for _ in range(100):
            started = await sc.runbooks.status(started.run_id)
            if started.phase == "awaiting_approval" and started.gates and started.gates[0].state == "open":
                break
            await asyncio.sleep(0.1)
        assert started.phase == "awaiting_approval"
        assert not flag_file().exists()
        self_approval = await sc.submit_approval(ApprovalAttempt(release_id=started.run_id, identity="carol@example.com", channel="cli"))
        assert not self_approval.accepted
        ok = await sc.submit_approval(ApprovalAttempt(release_id=started.run_id, identity="alice@example.com", channel="cli"))
        assert ok.accepted and ok.gate is not None and ok.gate.state == "approved"
        await client.get_workflow_handle(started.run_id).result()
        done = await sc.runbooks.status(started.run_id)
        assert done.phase == "succeeded" and flag_file().exists()


async def test_worker_killed_mid_run_resumes_without_repeating_steps(client: Client, task_queue: str, books: Path, tmp_path: Path) -> None:
    address = client.service_client.config.target_host
    env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": address, "SIGNOFF_TASK_QUEUE": task_queue, "SIGNOFF_WORKER_METRICS": ""}
    cmd = [sys.executable, "-c", "from signoff.cli import main; main()", "worker"]

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "worker.log").open("ab"), start_new_session=True)

    worker = start_worker()
    try:
        sc = SignoffClient(client, settings=Settings.from_env(), task_queue=task_queue)
        status = await sc.runbooks.run("slow-flip", params={"service": "checkout"}, identity="carol@example.com")
        deadline = time.monotonic() + 60
        while status.steps[1].state != "running":
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
            status = await sc.runbooks.status(status.run_id)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = start_worker()
        await asyncio.wait_for(client.get_workflow_handle(status.run_id).result(), timeout=90)
        done = await sc.runbooks.status(status.run_id)
        assert done.phase == "succeeded", (done.reason, done.steps)
        history = await client.get_workflow_handle(status.run_id).fetch_history()
        steps = [
            json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)["step"]["name"]
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == "run_runbook_step"
        ]
        assert steps == ["flip", "pause", "flip-back"]  # each scheduled once: nothing completed was repeated
        started = [e.activity_task_started_event_attributes.attempt for e in history.events if e.HasField("activity_task_started_event_attributes")]
        assert max(started) >= 2  # the interrupted step was retried on the new worker
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
