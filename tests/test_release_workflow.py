"""The release plan end to end on the real Temporal dev server, with the real activities.

Builds really build (examples/service/build.py writes a zipapp into the test's tmp directory),
tests really run (examples/selftest.py starts the built artifact and writes JUnit XML), the
real Rego policy decides, and the `command` deployment target appends to a file we read back,
so every assertion is about something that actually happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ReleaseFile
from tests.helpers import REPO, running_worker, wait_for, wait_phase

pytestmark = pytest.mark.asyncio

# Release commands run in the sandbox, which sees the release's checkout (the test's tmp
# directory, holding a copy of the example service) and nothing else of this machine.
PY = "python3"
BUILD_PY = "service/build.py"
SELFTEST_PY = "selftest.py"
BUILD_GOOD = f"{PY} {BUILD_PY} --flavour good --out dist/checkout.pyz"


@pytest.fixture(autouse=True)
def checkout(tmp_path: Path) -> Path:
    """The test's tmp directory as a release checkout: the example service and its self-test."""
    import shutil

    shutil.copytree(REPO / "examples" / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "examples" / "selftest.py", tmp_path / "selftest.py")
    return tmp_path


def workspace(release_id: str) -> Path:
    """Where the release's commands ran (a copy of the checkout they could write)."""
    return Settings.from_env().state_dir / "workspaces" / release_id


def rid() -> str:
    return f"rel-e2e-{uuid.uuid4().hex[:10]}"


def deploy_settings(log: Path) -> dict[str, str]:
    """Command-target settings whose every action appends one line to `log`."""
    target = shlex.quote(str(log))
    return {
        "deploy": f"echo deploy {{service}} {{digest}} {{weight}} >> {target}",
        "rollback": f"echo rollback {{service}} {{digest}} >> {target}",
    }


def spec(log: Path, **overrides: Any) -> ReleaseFile:
    """A low-risk (docs-only, human) release that builds from source and runs the self-test."""
    doc: dict[str, Any] = {
        "service": "checkout",
        "requested_by": "dana@example.com",
        "environment": "production",
        "change": {"summary": "checkout: document the cart API", "paths": ["docs/checkout.md"]},
        "build": {"command": BUILD_GOOD, "output": "dist/checkout.pyz", "timeout_seconds": 120},
        "test": {
            "command": f"{PY} {SELFTEST_PY} --artifact dist/checkout.pyz --junit reports/junit.xml",
            "junit": "reports/junit.xml",
            "timeout_seconds": 120,
        },
        "deploy": {"target": "command", "settings": deploy_settings(log)},
    }
    doc.update(overrides)
    return ReleaseFile.model_validate(doc)


def deployed(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def one_sentence(text: str | None) -> str:
    assert text, "expected a reason"
    assert "\n" not in text and "Traceback" not in text, text
    return text


async def activity_attempts(client: Client, release_id: str, activity: str) -> list[int]:
    """The attempt number of every started `activity` in the release's history."""
    scheduled: dict[int, str] = {}
    attempts: list[int] = []
    async for event in client.get_workflow_handle(release_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == activity:
                attempts.append(attrs.attempt)
    return attempts


def processes_with(marker: str) -> list[int]:
    """Pids (not zombies) whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- the happy path


async def test_builds_tests_decides_and_deploys_the_built_digest(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    async with running_worker(client, task_queue) as sc:
        r = rid()
        started = await sc.start_release(spec(log), release_id=r, base_dir=tmp_path)
        assert started.release_id == r and started.phase.value in ("building", "testing", "deciding", "promoting", "succeeded")
        done = await sc.wait(r, timeout=80)

    assert done.phase.value == "succeeded", done.reason
    built = workspace(r) / "dist" / "checkout.pyz"
    digest = "sha256:" + hashlib.sha256(built.read_bytes()).hexdigest()
    assert not (tmp_path / "dist").exists()  # the checkout itself was read-only to the build
    assert done.artifact_digest == digest
    assert done.outcome == "succeeded" and digest in (done.reason or "")
    assert [h["phase"] for h in done.history] == ["building", "testing", "deciding", "promoting", "succeeded"]
    assert done.tests is not None and (done.tests.passed, done.tests.failed, done.tests.errors) == (3, 0, 0)
    assert (workspace(r) / "reports" / "junit.xml").is_file()
    assert done.sandbox == {"build": "hermetic", "test": "hermetic"}
    assert done.tier == "low" and done.policy is not None and len(done.policy.policy_sha256) == 64
    assert done.gates == []
    assert deployed(log) == [f"deploy checkout {digest} 100"]
    assert done.previous_digest is None  # nothing was serving before


# --------------------------------------------------------------------------- failure paths


async def test_failing_build_fails_the_release_naming_the_exit(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    broken = spec(log, build={"command": "echo compiling; echo 'cart.py:3: syntax error' >&2; exit 3", "output": "dist/x"}, test=None)
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(broken, release_id=r, base_dir=tmp_path)
        done = await sc.wait(r, timeout=60)
        attempts = await activity_attempts(client, r, "run_build")
    assert done.phase.value == "failed"
    reason = one_sentence(done.reason)
    assert reason.startswith("the build failed: the build command exited with code 3"), reason
    assert "cart.py:3: syntax error" in reason
    assert attempts == [1]  # a failing build is permanent: no retry
    assert [h["phase"] for h in done.history] == ["building", "failed"]
    assert deployed(log) == []


async def test_missing_command_is_not_retried(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    missing = spec(log, build={"command": "no-such-build-tool-7f3a --release", "output": "dist/x"}, test=None)
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(missing, release_id=r, base_dir=tmp_path)
        done = await sc.wait(r, timeout=60)
        attempts = await activity_attempts(client, r, "run_build")
    assert done.phase.value == "failed"
    reason = one_sentence(done.reason)
    assert "could not be run" in reason and "no-such-build-tool-7f3a" in reason, reason
    assert attempts == [1]
    assert deployed(log) == []


async def test_failing_tests_fail_the_release_naming_the_test(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    failing = spec(
        log,
        test={
            "command": f"{PY} {SELFTEST_PY} --artifact dist/checkout.pyz --junit reports/junit.xml --fail test_serves_requests",
            "junit": "reports/junit.xml",
        },
    )
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(failing, release_id=r, base_dir=tmp_path)
        done = await sc.wait(r, timeout=80)
    assert done.phase.value == "failed"
    assert one_sentence(done.reason) == "1 test(s) failed: checkout.selftest.test_serves_requests"
    assert done.tests is not None and (done.tests.passed, done.tests.failed) == (2, 1)
    assert [h["phase"] for h in done.history] == ["building", "testing", "failed"]
    assert deployed(log) == []


async def test_policy_denial_deploys_nothing(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    agent_ci_change = spec(
        log,
        test=None,
        agent={"id": "release-bot", "model": "some-model"},
        change={"summary": "speed up CI", "paths": [".github/workflows/release.yml"]},
    )
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await sc.start_release(agent_ci_change, release_id=r, base_dir=tmp_path)
        done = await sc.wait(r, timeout=60)
    assert done.phase.value == "denied"
    reason = one_sentence(done.reason)
    assert "agent release-bot changes CI configuration (.github/workflows/release.yml) without a human co-requester" in reason
    assert done.tier == "high" and done.policy is not None and done.policy.denials
    assert [h["phase"] for h in done.history] == ["building", "deciding", "denied"]
    assert deployed(log) == []


async def test_abort_during_build_kills_the_build(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    marker = f"{40 + uuid.uuid4().int % 10}.{uuid.uuid4().int % 10**6:06d}"  # a unique sleep length
    slow = spec(log, build={"command": f"sleep {marker}; echo never", "output": "dist/x"}, test=None)
    async with running_worker(client, task_queue) as sc:
        r = rid()
        try:
            await sc.start_release(slow, release_id=r, base_dir=tmp_path)
            deadline = time.monotonic() + 30
            while not processes_with(marker):
                assert time.monotonic() < deadline, "the build never started"
                await asyncio.sleep(0.1)
            answer = await sc.abort(r, identity="dana@example.com", reason="wrong branch")
            assert answer["accepted"] is True
            done = await wait_phase(sc, r, "aborted", timeout=30)
            assert done.reason == "aborted by dana@example.com: wrong branch"
            deadline = time.monotonic() + 20  # cancellation arrives with the next heartbeat
            while processes_with(marker):
                assert time.monotonic() < deadline, f"build processes survived the abort: {processes_with(marker)}"
                await asyncio.sleep(0.2)
            done = await sc.wait(r, timeout=30)
        finally:
            for pid in processes_with(marker):
                os.kill(pid, 9)
    assert done.phase.value == "aborted"
    assert [h["phase"] for h in done.history] == ["building", "aborted"]
    assert deployed(log) == []


# --------------------------------------------------------------------------- one release per id


async def test_starting_the_same_id_again_returns_the_same_release(client: Client, task_queue: str, tmp_path: Path) -> None:
    log = tmp_path / "deploys.log"
    once = spec(log, build={"command": f"sleep 1 && {BUILD_GOOD}", "output": "dist/checkout.pyz"}, test=None)
    async with running_worker(client, task_queue) as sc:
        r = rid()
        first, second = await asyncio.gather(
            sc.start_release(once, release_id=r, base_dir=tmp_path),
            sc.start_release(once, release_id=r, base_dir=tmp_path),
        )
        again = await sc.start_release(once, release_id=r, base_dir=tmp_path)
        assert first.run_id and first.run_id == second.run_id == again.run_id
        done = await sc.wait(r, timeout=60)
        assert done.phase.value == "succeeded", done.reason
        after = await sc.start_release(once, release_id=r, base_dir=tmp_path)  # finished: still that release
        assert after.run_id == first.run_id and after.phase.value == "succeeded"
        status = await wait_for(sc, r, lambda s: s.phase.is_final)
        assert status.run_id == first.run_id
    # With no worker running, a finished release still answers and a retried start still
    # returns it (its status comes from the result in history, not from a query).
    no_worker = SignoffClient(client, settings=Settings.from_env(), task_queue=task_queue)
    offline = await asyncio.wait_for(no_worker.start_release(once, release_id=r, base_dir=tmp_path), timeout=15)
    assert offline.run_id == first.run_id and offline.phase.value == "succeeded"
    assert (await asyncio.wait_for(no_worker.status(r), timeout=15)).artifact_digest == done.artifact_digest
    assert len(deployed(log)) == 1
    starts = [
        e async for e in client.get_workflow_handle(r).fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    assert len(starts) == 1
