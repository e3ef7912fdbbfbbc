"""Every file in examples/ is exercised, so the examples cannot rot silently.

Each release file runs through the real ReleaseWorkflow (real dev server, real worker, the
example service built in the sandbox, a real Prometheus for the canary) on a fresh state
directory to the end its comments promise; when it waits at a gate, the example approvers
approve as the demo does (and the requester is refused first). The directory and the agent
registry load with the loaders the worker uses. A new example without an expected end fails
`test_every_example_has_an_expected_end`.
"""

from __future__ import annotations

from pathlib import Path
import pytest
from temporalio.client import Client

from signoff.directory import load_directory
from signoff.releasefile import load_release_file
from signoff.trust.registry import load_registry_file
from tests.helpers import REPO, running_worker
from tests.prom import PrometheusServer, prometheus_available
from workers.demo import drive_release

EXAMPLES = REPO / "examples"

# file → (releases run before it on the same stack, its expected end)
RELEASES: dict[str, tuple[list[str], str]] = {
    "release-gated.yaml": ([], "succeeded"),
    "release-good.yaml": ([], "succeeded"),
    "release-bad.yaml": (["release-good.yaml"], "rolled_back"),
    "release-flag-good.yaml": ([], "succeeded"),
    "release-flag-bad.yaml": (["release-flag-good.yaml"], "rolled_back"),
}
NOT_RELEASES = {"approvers.yaml", "agents.yaml"}


def test_every_example_has_an_expected_end() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == set(RELEASES) | NOT_RELEASES


def test_directory_and_registry_examples_load() -> None:
    directory = load_directory(EXAMPLES / "approvers.yaml")
    assert {"release-managers", "sre", "on-call"} <= set(directory.groups)
    assert all(m in directory.people for members in directory.groups.values() for m in members)
    registry, _sha = load_registry_file(EXAMPLES / "agents.yaml")
    assert [a.id for a in registry.agents] == ["release-bot"]
    assert registry.agents[0].owner in directory.people


@pytest.mark.skipif(not prometheus_available(), reason="the examples' canaries need Debian's prometheus (scripts/install installs it)")
@pytest.mark.parametrize("name", sorted(RELEASES))
@pytest.mark.asyncio
async def test_example_release_reaches_its_expected_end(name: str, client: Client, task_queue: str, local_stack: PrometheusServer) -> None:
    before, expected = RELEASES[name]
    narration: list[str] = []
    async with running_worker(client, task_queue) as sc:
        ends = {}
        for i, file in enumerate([*before, name]):
            load_release_file(EXAMPLES / file)  # a file that no longer parses fails here, in one sentence
            status = await drive_release(sc, str(EXAMPLES / file), f"{Path(file).stem}-{i}-{task_queue}", echo=narration.append, timeout=300)
            ends[file] = status
    done = ends[name]
    assert done.phase.value == expected, f"{name} ended {done.phase.value}: {done.reason}\n" + "\n".join(narration)
    assert done.artifact_digest and done.artifact_digest.startswith("sha256:")  # signoff built it
    if any("tries to approve" in line for line in narration):
        assert any("tries to approve: refused" in line for line in narration)  # the requester never approves
        assert all(g.state == "approved" for g in done.gates)
    if expected == "rolled_back":
        good = ends[before[-1]]
        assert done.previous_digest == good.artifact_digest  # rolled back to what served before
