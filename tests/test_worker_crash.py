"""Killing the worker while a build runs, then starting another one, finishes the release.

The worker is the real `signoff worker` process. It is SIGKILLed (no graceful shutdown, like
an OOM kill or a lost machine) while the build command runs; Temporal notices the missing
heartbeats after the heartbeat timeout, retries the build activity on the new worker, which
stops the orphaned build process group the dead attempt left behind and builds again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ReleaseFile
from tests.helpers import REPO

pytestmark = pytest.mark.asyncio

SIGNOFF = str(Path(sys.executable).parent / "signoff")


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`signoff worker` in its own process group, output to `log` (read on failure)."""
    return subprocess.Popen(
        [SIGNOFF, "worker"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def wait_until(predicate, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_killed_worker_mid_build_resumes_on_a_new_worker(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    state = tmp_path / "worker-state"
    env = {
        **os.environ,
        "SIGNOFF_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SIGNOFF_TASK_QUEUE": task_queue,
        "SIGNOFF_STATE_DIR": str(state),
        "SIGNOFF_WORKER_METRICS": "",  # no metrics port: two workers must not fight over one
        # the worker trusts the test's principals (the dev keys the client signs with)
        "SIGNOFF_DIRECTORY": str(Settings.from_env().directory_path),
        "SIGNOFF_AGENTS": str(Settings.from_env().agents_path),
    }
    deploys = tmp_path / "deploys.log"
    marker = f"6.{uuid.uuid4().int % 10**6:06d}"  # a unique sleep length names this build's processes
    build = f"sleep {marker} && python3 service/build.py --flavour good --out dist/checkout.pyz"
    shutil.copytree(REPO / "examples" / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    spec = ReleaseFile.model_validate(
        {
            "service": "checkout",
            "requested_by": "dana@example.com",
            "change": {"summary": "docs", "paths": ["docs/checkout.md"]},
            "build": {"command": build, "output": "dist/checkout.pyz", "timeout_seconds": 60},
            "deploy": {"target": "command", "settings": {"deploy": f"echo {{digest}} >> {shlex.quote(str(deploys))}"}},
        }
    )
    sc = SignoffClient(client, settings=Settings.from_env(), task_queue=task_queue)
    r = f"rel-crash-{uuid.uuid4().hex[:10]}"
    workers: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    try:
        workers.append(start_worker(env, logs[0]))
        begun = time.monotonic()
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)

        async def building() -> bool:
            assert workers[0].poll() is None, logs[0].read_text()
            return bool(processes_with(marker))

        await wait_until(building, "the build to start on the first worker", timeout=30)
        await asyncio.sleep(1.5)  # let it heartbeat its process group at least once
        kill_group(workers[0])
        killed_at = time.monotonic()
        # The sandbox dies with the worker that started it (bwrap --die-with-parent): no orphan
        # build keeps running, and the retry builds again from a fresh workspace.
        deadline = time.monotonic() + 5
        while processes_with(marker):
            assert time.monotonic() < deadline, "the sandboxed build outlived its worker"
            await asyncio.sleep(0.1)

        workers.append(start_worker(env, logs[1]))
        status = await sc.wait(r, timeout=75)
        finished = time.monotonic()
        assert status.phase.value == "succeeded", f"{status.phase.value}: {status.reason}\n{logs[1].read_text()[-3000:]}"

        built = state / "workspaces" / r / "dist" / "checkout.pyz"  # the worker's workspace for this release
        digest = "sha256:" + hashlib.sha256(built.read_bytes()).hexdigest()
        assert status.artifact_digest == digest
        assert deploys.read_text().split() == [digest]
        # The retry waited for the 10 s heartbeat timeout, then built again (about 6 s).
        assert 10 <= finished - killed_at <= 60, finished - killed_at
        assert finished - begun <= 75

        attempts = []
        async for event in client.get_workflow_handle(r).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attempts.append(event.activity_task_started_event_attributes.attempt)
        assert 2 in attempts, attempts  # run_build's second attempt is the one that completed
        assert workers[1].poll() is None, "the new worker keeps running"
        assert not processes_with(marker), "no build process is left behind"
    finally:
        for proc in workers:
            if proc.poll() is None:
                kill_group(proc)
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
