"""The build/test runner with real subprocesses: exit codes, timeouts, env allow-list, JUnit,
provenance, and cancellation that kills the whole process group."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.runner import CommandActivities, _group_alive, activities_from_settings
from signoff.config import Settings
from signoff.models import BuildRequest, BuildResult, TestRequest


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture
def acts(settings: Settings) -> CommandActivities:
    return CommandActivities(settings)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def build_req(workdir: Path, command: str, output: str = "out.bin", **kw: object) -> BuildRequest:
    return BuildRequest(release_id="rel-test-1", command=command, workdir=str(workdir), output=output, **kw)


async def test_build_stores_artifact_by_digest_and_writes_provenance(
    acts: CommandActivities, workdir: Path, settings: Settings
) -> None:
    subprocess.run(["git", "init", "-q", str(workdir)], check=True)
    (workdir / "main.txt").write_text("source\n")
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "-C", str(workdir), "add", "."], check=True, env=git_env)
    subprocess.run(["git", "-C", str(workdir), "commit", "-qm", "init"], check=True, env=git_env)
    commit = subprocess.run(["git", "-C", str(workdir), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    heartbeats: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: heartbeats.append(d[0])
    result = await env.run(
        acts.run_build, build_req(workdir, "echo building; sleep 1.5; printf artifact-bytes > out.bin; echo done")
    )

    expected = hashlib.sha256(b"artifact-bytes").hexdigest()
    assert result.digest == f"sha256:{expected}"
    stored = Path(result.artifact_path)
    assert stored == settings.state_dir / "artifacts" / f"sha256-{expected}"
    assert stored.read_bytes() == b"artifact-bytes"
    assert "done" in result.output_tail
    # heartbeats every second carry the output tail and the process group id
    assert heartbeats and "building" in heartbeats[0]["tail"] and isinstance(heartbeats[0]["pgid"], int)

    statement = json.loads(Path(result.provenance_path or "").read_text())
    assert result.provenance_path == str(stored) + ".intoto.json"
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": "out.bin", "digest": {"sha256": expected}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"].startswith("https://signoff.dev/")
    assert "printf artifact-bytes" in definition["externalParameters"]["command"]
    assert definition["resolvedDependencies"] == [
        {"uri": f"git+file://{workdir.resolve()}", "digest": {"gitCommit": commit}}
    ]


async def test_failing_build_is_non_retryable_and_names_exit_code_and_last_line(
    acts: CommandActivities, workdir: Path
) -> None:
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.run_build, build_req(workdir, "echo compiling; echo 'error: syntax' >&2; exit 3"))
    assert err.value.type == "BuildFailed" and err.value.non_retryable
    assert "code 3" in err.value.message and "error: syntax" in err.value.message


async def test_missing_command_is_bad_command(acts: CommandActivities, workdir: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.run_build, build_req(workdir, "no-such-compiler-xyz --all"))
    assert err.value.type == "BadCommand" and err.value.non_retryable
    assert "no-such-compiler-xyz" in err.value.message
    # the test activity raises for a missing command too (everything else is a summary)
    with pytest.raises(ApplicationError) as err2:
        await ActivityEnvironment().run(
            acts.run_tests, TestRequest(release_id="r", command="no-such-test-runner-xyz", workdir=str(workdir))
        )
    assert err2.value.type == "BadCommand"


async def test_missing_output_and_missing_workdir_are_non_retryable(acts: CommandActivities, workdir: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.run_build, build_req(workdir, "true", output="dist/app.pyz"))
    assert err.value.non_retryable and "dist/app.pyz" in err.value.message
    with pytest.raises(ApplicationError) as err2:
        await ActivityEnvironment().run(acts.run_build, build_req(workdir / "nope", "true"))
    assert err2.value.type == "BadWorkdir" and err2.value.non_retryable


def processes_running(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (a unique sleep length names a test's
    processes; inside the sandbox's pid namespace `$$` means nothing on the host)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state not in ("Z", "X") and "bwrap" not in cmdline.split(" ", 1)[0]:
            found.append(int(entry.name))
    return found


def unique_sleep() -> str:
    import uuid

    return f"30.{uuid.uuid4().int % 10**6:06d}"


async def test_timeout_kills_the_command(acts: CommandActivities, workdir: Path) -> None:
    marker = unique_sleep()
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.run_build, build_req(workdir, f"sleep {marker}", timeout_seconds=1))
    assert time.monotonic() - started < 10
    assert err.value.type == "Timeout" and err.value.non_retryable and "1 seconds" in err.value.message
    assert processes_running(marker) == []


async def test_environment_is_reduced_to_the_allow_list(
    acts: CommandActivities, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("SIGNOFF_SIGNING_KEY", "secret-key")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    result = await ActivityEnvironment().run(
        acts.run_build, build_req(workdir, "env > out.bin", env={"RELEASE_FLAVOUR": "good"})
    )
    seen = dict(line.split("=", 1) for line in Path(result.artifact_path).read_text().splitlines() if "=" in line)
    assert "secret" not in Path(result.artifact_path).read_text()
    assert not any(k.startswith(("SLACK_", "SIGNOFF_", "JIRA_", "AWS_")) for k in seen)
    assert seen["RELEASE_FLAVOUR"] == "good"
    assert seen["LANG"] == "C.UTF-8" and "PATH" in seen


async def test_junit_report_is_summarised_with_failing_names(acts: CommandActivities, workdir: Path) -> None:
    report = """<?xml version="1.0"?>
<testsuites>
  <testsuite name="unit" tests="5">
    <testcase classname="tests.test_cart" name="test_add"/>
    <testcase classname="tests.test_cart" name="test_remove"><failure message="boom">trace</failure></testcase>
    <testcase classname="tests.test_pay" name="test_card"><error message="crash"/></testcase>
    <testcase classname="tests.test_pay" name="test_cash"><skipped/></testcase>
    <testcase classname="tests.test_pay" name="test_refund"/>
  </testsuite>
</testsuites>"""
    (workdir / "junit-src.xml").write_text(report)
    summary = await ActivityEnvironment().run(
        acts.run_tests,
        TestRequest(release_id="r", command="cp junit-src.xml report.xml; exit 1", workdir=str(workdir), junit="report.xml"),
    )
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (2, 1, 1, 1)
    assert summary.failures == ["tests.test_cart.test_remove", "tests.test_pay.test_card"]


async def test_test_run_without_report(acts: CommandActivities, workdir: Path) -> None:
    failed = await ActivityEnvironment().run(
        acts.run_tests,
        TestRequest(release_id="r", command="echo 'collected 0 items'; exit 4", workdir=str(workdir), junit="report.xml"),
    )
    assert failed.failed == 1 and "code 4" in failed.failures[0] and "report.xml" in failed.failures[0]
    passed = await ActivityEnvironment().run(
        acts.run_tests, TestRequest(release_id="r", command="true", workdir=str(workdir))
    )
    assert passed.failed == 0 and passed.errors == 0 and passed.failures == []


async def test_cancellation_kills_the_whole_process_group(acts: CommandActivities, workdir: Path) -> None:
    env = ActivityEnvironment()
    # the shell starts a background grandchild and a setsid daemon; all must die
    marker, daemon = unique_sleep(), unique_sleep()
    command = f"sleep {marker} & setsid sleep {daemon} & wait"
    task = asyncio.create_task(env.run(acts.run_build, build_req(workdir, command)))
    deadline = time.monotonic() + 10
    while len(processes_running(marker)) < 1 or len(processes_running(daemon)) < 1:
        assert time.monotonic() < deadline, "command did not start"
        await asyncio.sleep(0.05)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while processes_running(marker) or processes_running(daemon):
        assert time.monotonic() < deadline, "processes outlived the cancelled command"
        await asyncio.sleep(0.05)


def test_activities_from_settings_names(settings: Settings) -> None:
    names = sorted(getattr(a, "__temporal_activity_definition").name for a in activities_from_settings(settings))
    assert names == ["read_sbom", "run_build", "run_scan", "run_tests"]


async def test_retry_stops_the_process_group_a_crashed_attempt_left(acts: CommandActivities, workdir: Path) -> None:
    """A worker killed mid-build leaves the detached group running; the next attempt reads the
    pgid from the last heartbeat and stops it before building again."""
    import dataclasses
    import subprocess as sp

    command = "sleep 60; printf x > out.bin"
    orphan = sp.Popen(["/bin/sh", "-c", command], cwd=workdir, start_new_session=True)
    try:
        # a crashed attempt's shell has long been running; wait until this one is visibly exec'd
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{orphan.pid}/cmdline").read_bytes().startswith(b"/bin/sh"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[{"pgid": orphan.pid, "tail": ""}])
        task = asyncio.create_task(env.run(acts.run_build, build_req(workdir, command, timeout_seconds=30)))
        deadline = time.monotonic() + 10
        while orphan.poll() is None:
            assert time.monotonic() < deadline, "the leftover group was not stopped"
            await asyncio.sleep(0.05)
        assert orphan.returncode == -15  # SIGTERM from the retry
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


@workflow.defn(name="RunnerProbe", sandboxed=False)
class RunnerProbe:
    """Calls run_build the way the release workflow does (heartbeat timeout, no retry on BuildFailed)."""

    @workflow.run
    async def run(self, req: BuildRequest) -> str:
        result = await workflow.execute_activity(
            "run_build", req, result_type=BuildResult,
            start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=timedelta(seconds=5),
        )
        return result.digest


async def test_run_build_on_a_real_worker(
    dev_env: WorkflowEnvironment, task_queue: str, acts: CommandActivities, workdir: Path) -> None:
    """Through the real dev server: a result round-trips, and BuildFailed reaches the workflow
    as a non-retryable failure after exactly one attempt."""
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[RunnerProbe],
                      activities=[acts.run_build, acts.run_tests], workflow_runner=UnsandboxedWorkflowRunner()):
        digest = await dev_env.client.execute_workflow(
            "RunnerProbe", build_req(workdir, "sleep 1.2; printf ok > out.bin"), id=f"probe-{task_queue}", task_queue=task_queue,
            result_type=str,
        )
        assert digest == "sha256:" + hashlib.sha256(b"ok").hexdigest()
        with pytest.raises(WorkflowFailureError) as err:
            await dev_env.client.execute_workflow(
                "RunnerProbe", build_req(workdir, "echo broken; exit 2"), id=f"probe-fail-{task_queue}", task_queue=task_queue,
            )
        cause = err.value.cause
        assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
        assert cause.cause.type == "BuildFailed" and "code 2" in cause.cause.message
        history = await dev_env.client.get_workflow_handle(f"probe-fail-{task_queue}").fetch_history()
        scheduled = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
        assert len(scheduled) == 1 and scheduled[0].activity_task_started_event_attributes.attempt == 1
