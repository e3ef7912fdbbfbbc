"""`signoff mcp` driven by the official MCP SDK's own client over stdio, against the real
Temporal dev server, a real worker (in this process, on a fresh task queue) and, for the
example's canary, a real Prometheus. People approve through the real `signoff` CLI."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import yaml
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.config import Settings
from signoff.errors import Refused
from signoff.mcp_server import AgentSession
from tests.helpers import DIGEST_A, REPO, running_worker, wait_phase
from tests.prom import PrometheusServer, prometheus_available
from tests.test_cli import SIGNOFF, signoff

pytestmark = pytest.mark.asyncio

TOOLS = {"plan_release", "start_release", "release_status", "wait_for_release", "list_releases", "explain_decision", "abort_release", "runbook_list"}


def server_env(dev_env: WorkflowEnvironment, task_queue: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SIGNOFF_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SIGNOFF_TASK_QUEUE": task_queue,
        "SIGNOFF_AGENT_ID": "release-bot",
        **extra,
    }


@asynccontextmanager
async def mcp_session(env: dict[str, str], tmp_path: Path) -> AsyncIterator[ClientSession]:
    """`signoff mcp` as an MCP host launches it: the console script, spoken to over stdio."""
    params = StdioServerParameters(command=SIGNOFF, args=["mcp"], env=env, cwd=str(tmp_path))
    with open(tmp_path / "mcp-stderr.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def agent_release(*, deploy: str) -> dict[str, Any]:
    """A staging release release-bot asks for: a digest, no build, a shell deploy command."""
    return {
        "service": "checkout",
        "requested_by": "dana@example.com",
        "environment": "staging",
        "agent": {"id": "release-bot"},
        "change": {"summary": "docs", "paths": ["docs/checkout.md"]},
        "artifact": DIGEST_A,
        "deploy": {"target": "command", "settings": {"deploy": deploy}},
    }


def text(result: CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    return json.loads(text(result))


def tool_error(result: CallToolResult) -> str:
    assert result.is_error, text(result)
    message = text(result)
    assert "Traceback" not in message and "\n" not in message, message
    return message


@pytest.mark.skipif(not prometheus_available(), reason="the example's canary needs Debian's prometheus (scripts/install installs it)")
async def test_agent_starts_release_good_over_mcp_and_people_approve_in_the_cli(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path, local_stack: PrometheusServer
) -> None:
    rid = f"mcp-good-{uuid.uuid4().hex[:8]}"
    env = server_env(dev_env, task_queue)
    cli_env = {"SIGNOFF_TEMPORAL_ADDRESS": env["SIGNOFF_TEMPORAL_ADDRESS"], "SIGNOFF_TASK_QUEUE": task_queue}
    async with running_worker(client, task_queue) as sc, mcp_session(env, tmp_path) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS  # and so no approval tool of any name
        assert not any("approv" in name or "reject" in name or "promote" in name for name in tools)
        for name in ("start_release", "abort_release"):
            assert tools[name].annotations is not None and tools[name].annotations.destructive_hint is True
        assert tools["release_status"].annotations is not None and tools["release_status"].annotations.read_only_hint is True

        plan = ok(await mcp.call_tool("plan_release", {"path": str(REPO / "examples" / "release-good.yaml")}))
        assert plan["tier"] == "high" and plan["denials"] == []
        assert plan["rules_fired"] == ["production change authored by agent release-bot"]

        started = ok(await mcp.call_tool("start_release", {"path": str(REPO / "examples" / "release-good.yaml"), "release_id": rid}))
        assert started["release_id"] == rid and started["agent"]["id"] == "release-bot"
        assert started["started_by"]["principal"] == "agent:release-bot"

        progress: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        at_gate = ok(await mcp.call_tool("wait_for_release", {"release_id": rid, "until": "gate", "timeout_seconds": 240}, progress_callback=on_progress))
        assert at_gate["phase"] == "awaiting_approval" and at_gate["timed_out"] is False
        # the plan it was shown is the plan that runs: the release records the same plan hash
        assert (await sc.status(rid)).planned_sha256 == plan["plan_sha256"]
        assert plan["approvers"] == {"production": ["alice@example.com", "bob@example.com", "carol@example.com"]}
        assert progress[-1] == f"{rid}: awaiting_approval" and len(progress) >= 2  # building … then the gate

        why = ok(await mcp.call_tool("explain_decision", {"release_id": rid}))
        assert why["tier"] == "high" and why["rules_fired"] == ["production change authored by agent release-bot"]
        [gate] = why["gates"]
        assert gate["eligible_approvers"] == ["alice@example.com", "bob@example.com", "carol@example.com"]
        assert "dana@example.com" in gate["never_approve"] and gate["approved_by"] == []

        # An agent that asks for a tool to approve gets an MCP error, and nothing changes.
        forged = await mcp.call_tool("approve_release", {"release_id": rid, "identity": "alice@example.com"})
        assert forged.is_error and "approve_release" in text(forged)
        assert (await sc.status(rid)).gates[0].approvals == []

        listed = ok(await mcp.call_tool("list_releases", {"phase": "awaiting_approval"}))
        assert rid in {r["release_id"] for r in listed["releases"]}

        for person in ("alice@example.com", "carol@example.com"):
            run = await signoff("approve", rid, "--as", person, "--json", env=cli_env)
            assert run.code == 0 and run.json()["accepted"] is True, run.stdout + run.stderr

        done = ok(await mcp.call_tool("wait_for_release", {"release_id": rid, "timeout_seconds": 240}))
        assert done["phase"] == "succeeded", done["reason"]
        assert {a["by"] for a in done["gates"][0]["approvals"]} == {"alice@example.com", "carol@example.com"}

        status = await mcp.read_resource(f"signoff://releases/{rid}/status")
        assert json.loads(status.contents[0].text)["phase"] == "succeeded"  # type: ignore[union-attr]
        audit = json.loads((await mcp.read_resource(f"signoff://releases/{rid}/audit")).contents[0].text)  # type: ignore[union-attr]
        assert {r["who"] for r in audit if r["kind"] == "approval_attempt" and r["outcome"] == "accepted"} == {"alice@example.com", "carol@example.com"}
        assert any(r["kind"] == "promotion" and r["outcome"] == "stable" for r in audit)


async def test_bad_release_file_and_wrong_agent_are_tool_errors_naming_the_field(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    good = agent_release(deploy="true")
    async with running_worker(client, task_queue) as sc, mcp_session(server_env(dev_env, task_queue), tmp_path) as mcp:
        bad = yaml.safe_dump({**good, "artifact": "sha256:abc"})
        message = tool_error(await mcp.call_tool("start_release", {"content": bad}))
        assert "field 'artifact' must be a digest" in message and "the release content" in message

        missing = yaml.safe_dump({k: v for k, v in good.items() if k != "requested_by"})
        assert "required field 'requested_by' is missing" in tool_error(await mcp.call_tool("plan_release", {"content": missing}))
        assert "does not exist" in tool_error(await mcp.call_tool("start_release", {"path": str(tmp_path / "nope.yaml")}))
        assert "exactly one of" in tool_error(await mcp.call_tool("start_release", {}))

        # The server acts as release-bot only: a release naming another agent is not started.
        other = yaml.safe_dump({**good, "agent": {"id": "deploy-bot"}})
        message = tool_error(await mcp.call_tool("start_release", {"content": other, "release_id": "mcp-other"}))
        assert "field 'agent.id' names deploy-bot" in message
        assert "no release mcp-other" in tool_error(await mcp.call_tool("release_status", {"release_id": "mcp-other"}))

        # A good one by content; then the agent aborts it at its gate.
        rid = f"mcp-abort-{uuid.uuid4().hex[:8]}"
        gated = yaml.safe_dump(
            {
                **good,
                "change": {**good["change"], "co_requested_by": ["bob@example.com"]},
                "gates": [{"name": "staging", "required": 1, "from_groups": ["release-managers"]}],
            }
        )
        ok(await mcp.call_tool("start_release", {"content": gated, "release_id": rid, "base_dir": str(tmp_path)}))
        await wait_phase(sc, rid, "awaiting_approval", timeout=60)
        waited = ok(await mcp.call_tool("wait_for_release", {"release_id": rid, "timeout_seconds": 0.5}))
        assert waited["timed_out"] is True and waited["phase"] == "awaiting_approval"
        # bob co-requested it: of the release managers only alice may approve (read from the start input)
        [gate] = ok(await mcp.call_tool("explain_decision", {"release_id": rid}))["gates"]
        assert gate["eligible_approvers"] == ["alice@example.com"] and {"bob@example.com", "dana@example.com"} <= set(gate["never_approve"])
        assert "unknown phase 'waiting'" in tool_error(await mcp.call_tool("list_releases", {"phase": "waiting"}))
        aborted = ok(await mcp.call_tool("abort_release", {"release_id": rid, "reason": "superseded"}))
        assert aborted["accepted"] is True, aborted
        assert (await wait_phase(sc, rid, "aborted", timeout=60)).gates[0].approvals == []

        # A denial: explain_decision names the rule that said no.
        denied_id = f"mcp-denied-{uuid.uuid4().hex[:8]}"
        ci_change = yaml.safe_dump({**good, "change": {"summary": "ci", "paths": [".github/workflows/x.yml"]}})
        ok(await mcp.call_tool("start_release", {"content": ci_change, "release_id": denied_id}))
        assert ok(await mcp.call_tool("wait_for_release", {"release_id": denied_id, "timeout_seconds": 60}))["phase"] == "denied"
        why = ok(await mcp.call_tool("explain_decision", {"release_id": denied_id}))
        assert "agent release-bot changes CI configuration (.github/workflows/x.yml) without a human co-requester" in why["denials"]
        assert why["gates"] == []

        runbooks = ok(await mcp.call_tool("runbook_list", {}))
        assert "restart-service" in {r["name"] for r in runbooks["runbooks"]}


async def test_temporal_down_is_one_sentence_tool_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": f"127.0.0.1:{port}", "SIGNOFF_AGENT_ID": "release-bot"}
    async with mcp_session(env, tmp_path) as mcp:
        message = tool_error(await mcp.call_tool("release_status", {"release_id": "rel-x"}))
        assert message.endswith(f"cannot reach Temporal at 127.0.0.1:{port}; is `signoff dev` running?")


async def test_the_server_cannot_sign_as_a_person() -> None:
    """Even code inside the server that tried to approve has no credential to do it with."""
    session = AgentSession(Settings.from_env(), "release-bot")
    with pytest.raises(Refused, match="acts only as agent release-bot and cannot sign as person:alice@example.com"):
        session.credential("person", "alice@example.com")
    assert session.credential("agent", "release-bot").principal == "agent:release-bot"


async def test_server_signs_with_signoff_identity_key_and_a_stolen_name_starts_nothing(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Attack: a server configured as release-bot but holding a key the registry does not know
    for it (an impostor claiming the agent's name) asks for a release; nothing starts."""
    from signoff.trust.credentials import dev_key_path
    from signoff.trust.keys import ensure_key

    release = yaml.safe_dump(agent_release(deploy=f"echo {{digest}} >> '{tmp_path / 'deploys.log'}'"))
    impostor_key = tmp_path / "impostor.ed25519"
    ensure_key(impostor_key)
    registered_key = dev_key_path(Settings.from_env().state_dir, "agent", "release-bot")
    impostor_id, agent_id = f"mcp-impostor-{uuid.uuid4().hex[:8]}", f"mcp-keyed-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, task_queue) as sc:
        async with mcp_session(server_env(dev_env, task_queue, SIGNOFF_IDENTITY_KEY=str(impostor_key)), tmp_path) as mcp:
            message = tool_error(await mcp.call_tool("start_release", {"content": release, "release_id": impostor_id}))
            assert message.endswith(f"release {impostor_id} was not started: the proof's signature does not verify with any key registered for agent release-bot.")
        refused = await sc.status(impostor_id)
        assert refused.phase.value == "denied" and refused.started_by is None and (refused.reason or "").startswith("the start was refused")
        assert not (tmp_path / "deploys.log").exists()  # nothing shipped

        async with mcp_session(server_env(dev_env, task_queue, SIGNOFF_IDENTITY_KEY=str(registered_key)), tmp_path) as mcp:
            started = ok(await mcp.call_tool("start_release", {"content": release, "release_id": agent_id}))
            assert started["started_by"]["principal"] == "agent:release-bot"
            assert ok(await mcp.call_tool("wait_for_release", {"release_id": agent_id, "timeout_seconds": 60}))["phase"] == "succeeded"
        assert (tmp_path / "deploys.log").read_text().split() == [DIGEST_A]  # the registered agent's one release shipped once
