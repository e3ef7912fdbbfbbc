"""Faults (issue 10): a worker SIGKILLed at a gate and mid-canary, Slack failing and rate
limiting, Jira down when a gate opens.

Everything is real: the Temporal dev server, the `signoff worker` process (killed with SIGKILL,
no graceful shutdown, like an OOM kill), the command deploy target writing to a file, the signed
decision log. Only Slack's and Jira's web APIs are the local stubs, which count every request.

Each test kills every process it started in `finally` and is bounded in time (< ~90 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from temporalio.client import Client

from signoff.audit import cross_check, public_key_from_settings, statement_of, store_from_settings, verify
from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ApprovalAttempt, ReleaseFile, ReleaseStatus
from tests.helpers import DIGEST_A, REPO, gated_spec, running_worker, wait_for, wait_phase
from tests.stubs.jira_stub import JiraStub
from tests.stubs.slack_stub import SlackStub

pytestmark = pytest.mark.asyncio

SIGNOFF = str(Path(sys.executable).parent / "signoff")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "approvers.yaml"
    shutil.copy(Path(os.environ["SIGNOFF_STATE_DIR"]) / "dev" / "approvers.yaml", path)
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(path))
    return path


class Workers:
    """`signoff worker` processes in their own process groups; every one is SIGKILLed at the end."""

    def __init__(self, client: Client, task_queue: str, logs: Path) -> None:
        self.env = {
            **os.environ,  # SIGNOFF_STATE_DIR and SIGNOFF_DIRECTORY of this test (conftest / fixtures)
            "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "SIGNOFF_TASK_QUEUE": task_queue,
            "SIGNOFF_WORKER_METRICS": "",  # two workers must not fight over one metrics port
        }
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.procs) + 1}.log"
        proc = subprocess.Popen(
            [SIGNOFF, "worker"], env=self.env, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.logs.glob("worker-*.log")))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@contextlib.asynccontextmanager
async def subprocess_workers(client: Client, task_queue: str, tmp_path: Path) -> AsyncIterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir(exist_ok=True)
    workers = Workers(client, task_queue, logs)
    try:
        yield workers
    finally:
        workers.kill_all()


def attempt(release_id: str, who: str, channel: str = "cli") -> ApprovalAttempt:
    return ApprovalAttempt(release_id=release_id, identity=who, channel=channel, digest=DIGEST_A)  # type: ignore[arg-type]


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def decision_records(settings: Settings, release_id: str) -> list[dict[str, Any]]:
    """The release's records in the signed log, each with its decoded predicate."""
    out = []
    for entry in store_from_settings(settings).entries():
        if entry.get("workflow_id") == release_id:
            out.append({**entry, "predicate": statement_of(entry["envelope"])["predicate"]})
    return out


async def assert_log_exact(client: Client, settings: Settings, release_id: str) -> list[dict[str, Any]]:
    """The log verifies, matches the Temporal history one to one, and numbers each decision once."""
    store = store_from_settings(settings)
    report = verify(store, public_key_from_settings(settings), workflow_id=release_id)
    assert report.ok, [str(p) for p in report.problems]
    problems = await cross_check(client, release_id, store)
    assert problems == [], [str(p) for p in problems]
    records = decision_records(settings, release_id)
    assert [r["sequence"] for r in records] == list(range(1, len(records) + 1))
    return records


def accepted_approvals(records: list[dict[str, Any]]) -> list[str]:
    return [
        r["predicate"]["actor"].get("identity")
        for r in records
        if r["kind"] == "approval_attempt" and r["predicate"]["outcome"] == "accepted"
    ]


async def until(predicate: Callable[[], Any], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- 1. worker killed at a gate


async def test_worker_killed_at_a_gate_loses_no_approval_and_counts_none_twice(
    client: Client, task_queue: str, tmp_path: Path, directory: Path
) -> None:
    settings = Settings.from_env()
    sc = SignoffClient(client, settings=settings, task_queue=task_queue)
    r = rid("rel-gate-kill")
    async with subprocess_workers(client, task_queue, tmp_path) as workers:
        first = workers.start()
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval", timeout=60)
        alice_signed = await sc.signed_attempt(attempt(r, "alice@example.com"))
        alice = await sc.submit_approval(alice_signed)
        assert alice.accepted and alice.gate is not None and alice.gate.progress.startswith("1 of 2")

        workers.kill(first)
        # A retry of Alice's signed approval (a client that never saw its answer) has the same
        # Update id: the server answers it from the completed Update, even with no worker running.
        again = await asyncio.wait_for(sc.submit_approval(alice_signed), timeout=20)
        assert again.accepted and again.gate is not None and again.gate.progress == alice.gate.progress, again
        # Bob's approval, sent while no worker runs, waits in the server for a worker.
        bob_task = asyncio.create_task(asyncio.wait_for(sc.submit_approval(attempt(r, "bob@example.com", "api")), timeout=75))
        await asyncio.sleep(3)
        assert not bob_task.done(), "an Update was applied with no worker running"

        workers.start()
        bob = await bob_task
        assert bob.accepted and bob.gate is not None and bob.gate.state == "approved", bob
        done = await sc.wait(r, timeout=60)
        assert done.phase.value == "succeeded", (done.phase, done.reason, workers.tail())
        assert [(a.by, a.channel) for a in done.gates[0].approvals] == [("alice@example.com", "cli"), ("bob@example.com", "api")]

    records = await assert_log_exact(client, settings, r)
    approvals = accepted_approvals(records)
    assert sorted(set(approvals)) == ["alice@example.com", "bob@example.com"]
    assert approvals.count("bob@example.com") == 1
    # Alice's retry never reached the workflow again, so it left no second record.
    assert approvals.count("alice@example.com") == 1, [r["predicate"]["reasons"] for r in records if r["kind"] == "approval_attempt"]
    outcomes = [(r["kind"], r["predicate"]["outcome"]) for r in records]
    assert outcomes.count(("gate_outcome", "approved")) == 1
    assert outcomes.count(("release_outcome", "succeeded")) == 1


# --------------------------------------------------------------------------- 2. worker killed mid-canary


async def test_worker_killed_mid_canary_resumes_at_the_same_step_without_redeploying(
    client: Client, task_queue: str, tmp_path: Path, directory: Path
) -> None:
    settings = Settings.from_env()
    deploys = tmp_path / "deploys.log"
    spec = ReleaseFile.model_validate(
        {
            "service": "checkout",
            "requested_by": "dana@example.com",
            "change": {"summary": "canary under a crash", "paths": ["docs/x.md"]},
            "artifact": DIGEST_A,
            "environment": "staging",  # a digest signoff did not build needs Sigstore provenance in production
            "deploy": {
                "target": "command",
                "settings": {
                    "deploy": f"echo {{digest}} {{weight}} >> {shlex.quote(str(deploys))}",
                    "current": "echo '{\"stable\": \"sha256:%s\"}'" % ("b" * 64),
                    "rollback": f"echo rollback {{digest}} >> {shlex.quote(str(deploys))}",
                },
            },
            "canary": {"steps": [{"set_weight": 20}, {"pause": {"duration": "15s"}}, {"set_weight": 50}, {"pause": {"duration": "2s"}}]},
        }
    )
    sc = SignoffClient(client, settings=settings, task_queue=task_queue)
    r = rid("rel-canary-kill")
    async with subprocess_workers(client, task_queue, tmp_path) as workers:
        first = workers.start()
        await sc.start_release(spec, release_id=r)
        paused = await wait_for(sc, r, lambda s: bool(s.canary and s.canary.step == 2 and s.canary.paused), timeout=60)
        assert paused.canary is not None and paused.canary.weight == 20
        workers.kill(first)
        killed_at = time.monotonic()
        assert deploys.read_text().split("\n")[:-1] == [f"{DIGEST_A} 20"]

        workers.start()
        # The new worker rebuilds the workflow from history: still step 2, weight 20, paused.
        resumed = await sc.status(r)
        assert resumed.canary is not None and (resumed.canary.step, resumed.canary.weight) == (2, 20), resumed.canary
        done = await sc.wait(r, timeout=75)
        assert done.phase.value == "succeeded", (done.phase, done.reason, workers.tail())
        assert time.monotonic() - killed_at < 75
        # The pause's durable timer was started once and fired once: nothing was restarted.
        history = await client.get_workflow_handle(r).fetch_history()
        timers = [e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds() for e in history.events if e.HasField("timer_started_event_attributes")]
        assert sorted(timers) == [2, 15], timers

    lines = deploys.read_text().splitlines()
    assert lines == [f"{DIGEST_A} 20", f"{DIGEST_A} 50", f"{DIGEST_A} 100"], lines  # each weight exactly once
    records = await assert_log_exact(client, settings, r)
    weights = [r["predicate"]["evidence"]["weight"] for r in records if r["kind"] == "deploy"]
    assert weights == [20, 50, 100]
    kinds = [(r["kind"], r["predicate"]["outcome"]) for r in records]
    assert kinds.count(("canary_verdict", "promoted")) == 1 and kinds.count(("release_outcome", "succeeded")) == 1


# --------------------------------------------------------------------------- 5. Slack 500, then 429


async def test_slack_500_then_429_is_retried_and_posted_exactly_once(
    client: Client, task_queue: str, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = SlackStub().start()
    try:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-faults")
        monkeypatch.setenv("SIGNOFF_SLACK_API_URL", stub.api_url)
        monkeypatch.setenv("SIGNOFF_SLACK_CHANNEL", "C0RELEASES")
        # Two 500s: the client's own single retry, then the activity fails and Temporal retries.
        stub.fail_next("chat.postMessage", status=500, count=2)
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as sc:
            r = rid("rel-slack-fault")
            await sc.start_release(gated_spec(), release_id=r)
            await stub.until("chat.postMessage", 2, timeout=20)
            # Then rate limiting: three 429s with Retry-After (the client sleeps and retries twice,
            # then the activity asks Temporal to retry after Retry-After), then success.
            stub.fail_next("chat.postMessage", status=429, count=3, retry_after=1)
            posted = await wait_for(sc, r, lambda s: bool(s.gates and s.gates[0].slack_ts), timeout=45)
            assert posted.phase.value == "awaiting_approval"
            for who in ("alice@example.com", "bob@example.com"):
                assert (await sc.submit_approval(attempt(r, who))).accepted
            done = await sc.wait(r, timeout=45)
            assert done.phase.value == "succeeded", done.reason

        calls = stub.calls("chat.postMessage")
        answered = [(c.response or {}).get("ok") for c in calls]
        assert answered.count(True) == 1, answered  # the approval request exists exactly once
        assert answered[:5] == [False] * 5 and len(calls) == 6, answered
        ok = next(c for c in calls if (c.response or {}).get("ok"))
        assert (ok.response or {}).get("ts") == done.gates[0].slack_ts
        assert r in str(ok.body.get("blocks"))
        # The gate's progress and close edited that one message; nothing else was posted for it.
        assert {c.body.get("ts") for c in stub.calls("chat.update")} == {done.gates[0].slack_ts}
        history = await client.get_workflow_handle(r).fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
        ]
        assert max(attempts) >= 3, attempts  # 500 → retry, 429 → retry, then success
    finally:
        stub.stop()


# --------------------------------------------------------------------------- 6. Jira down when the gate opens


async def test_jira_down_when_the_gate_opens_release_goes_on_and_ticket_comes_later(
    client: Client, task_queue: str, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behaviour: the Jira notice is in a background outbox, so approvals through other channels
    carry the release to its end while Jira is down; the workflow keeps retrying (PATIENT policy,
    up to 1 h) and, once Jira answers, creates the approval ticket exactly once and closes it with
    the outcome. The workflow only completes after that, so nothing is silently dropped."""
    with JiraStub() as jira:
        jira.down = True
        for key, value in {"SIGNOFF_JIRA_URL": jira.url, "SIGNOFF_JIRA_USER": jira.user, "SIGNOFF_JIRA_TOKEN": jira.token, "SIGNOFF_JIRA_PROJECT": jira.project}.items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as sc:
            r = rid("rel-jira-down")
            await sc.start_release(gated_spec(), release_id=r)
            await wait_phase(sc, r, "awaiting_approval")
            await until(lambda: len(jira.requests) >= 1, "the first (failed) call to Jira", 20)
            for who in ("alice@example.com", "bob@example.com"):
                assert (await sc.submit_approval(attempt(r, who))).accepted
            ended = await wait_phase(sc, r, "succeeded", timeout=30)
            assert ended.gates[0].jira_key is None
            assert jira.requests_to("POST", r"/rest/api/\d+/issue") == []
            handle = client.get_workflow_handle(r)
            assert (await handle.describe()).status.name == "RUNNING", "the release waits for its Jira notices"

            jira.down = False
            await asyncio.wait_for(handle.result(), timeout=60)
            done = await sc.status(r)

        creates = jira.requests_to("POST", r"/rest/api/\d+/issue")
        assert len(creates) == 1, len(creates)
        [ticket] = jira.issues_with_label(f"signoff-release-{r}")
        assert done.phase.value == "succeeded" and done.gates[0].jira_key == ticket.key
        assert ticket.status == "Done" and any("approved" in c["body"] for c in ticket.comments)
        assert len(ticket.comments) == 1
