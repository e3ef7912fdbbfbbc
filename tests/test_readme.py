"""The README's command blocks are checked, so what a newcomer copies works.

- the quick start is exactly two commands, each a script that exists and parses;
- every line of the CLI block names a real command with real options (click's own tree);
- the Python client snippet runs as written against the real dev server and worker, while
  people approve through the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import textwrap
from typing import Any

import click
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.cli import cli
from signoff.config import Settings
from signoff.errors import NotFound
from tests.helpers import REPO, running_worker, wait_phase
from tests.prom import PrometheusServer, prometheus_available
from tests.test_cli import signoff

README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language` ("" for blocks without one)."""
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.S | re.M) if m.group(1) == language]


def section_block(heading: str, language: str) -> str:
    """The first `language` block after `heading`."""
    start = README.index(heading)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(README, start)
    assert match, f"no ```{language} block after {heading!r}"
    return match.group(1)


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_quick_start_is_exactly_two_commands_that_exist() -> None:
    quick = commands(section_block("## Quick start", "bash"))
    assert quick == ["bash scripts/quickstart", "bash scripts/test"]
    for line in quick:
        script = REPO / line.split()[1]
        assert script.is_file(), script
        parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr


def _resolve(words: list[str]) -> tuple[click.Command, str, list[str]]:
    """The click command a README line names, its path, and the words after it; fails on an
    unknown command."""
    command: click.Command = cli
    path: list[str] = []
    rest = list(words)
    while isinstance(command, click.Group) and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"the README names `signoff {' '.join(words)}`, but `{rest[0]}` is not a command"
        command, rest = sub, rest[1:]
        path.append(command.name or "")
    return command, " ".join(path), rest


def alternatives(line: str) -> list[str]:
    """`a | b` are two commands; `[--x | --y]` inside brackets is one command's choice."""
    parts, depth, current = [], 0, ""
    for char in line:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip().removeprefix("signoff ").strip() for p in [*parts, current]]


def cli_lines() -> list[str]:
    return [alt for line in commands(section_block("## CLI", "")) for alt in alternatives(line)]


@pytest.mark.parametrize("line", cli_lines())
def test_cli_line_names_real_commands_and_options(line: str) -> None:
    command, _path, rest = _resolve(line.split())
    assert not isinstance(command, click.Group), f"`signoff {line}` stops at a group"
    known = {opt for p in command.params for opt in getattr(p, "opts", [])}
    named = {w.strip("[]") for w in rest if w.strip("[]").startswith("--")}
    assert named <= known, f"`signoff {line}`: {sorted(named - known)} are not options of it ({sorted(known)})"


def test_cli_block_covers_every_command() -> None:
    """The reverse: a command the CLI has but the README's block does not show fails here."""
    shown = {_resolve(line.split())[1] for line in cli_lines()}
    leaves: set[str] = set()

    def walk(group: click.Group, prefix: str) -> None:
        for name, sub in group.commands.items():
            if isinstance(sub, click.Group):
                walk(sub, f"{prefix}{name} ")
            else:
                leaves.add(prefix + name)

    walk(cli, "")
    assert leaves - shown == set()


def test_mcp_client_settings_start_the_real_command() -> None:
    """The Claude Code line and the JSON settings name `signoff mcp` and settings signoff reads."""
    section = README[README.index("### For agent authors") :]
    claude = commands(section_block("### For agent authors", "bash"))
    [line] = claude
    assert line.startswith("claude mcp add signoff ")
    command, path, rest = _resolve(line.split(" -- ", 1)[1].split()[1:])
    assert path == "mcp" and rest == []
    settings = json.loads(section_block("### For agent authors", "json"))["mcpServers"]["signoff"]
    assert settings["command"].endswith("/.venv/bin/signoff") and _resolve(settings["args"])[1] == "mcp"
    documented = set(re.findall(r"`(SIGNOFF_[A-Z_]+)`", README))
    named = set(settings["env"]) | set(re.findall(r"--env (SIGNOFF_[A-Z_]+)=", line))
    assert named <= documented, named - documented
    assert "SIGNOFF_AGENT_ID" in named


@pytest.mark.asyncio
async def test_agent_section_lists_exactly_the_servers_tools() -> None:
    from signoff.mcp_server import build_server

    section = README[README.index("### For agent authors") : README.index("**What an agent cannot do.**")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    served = {t.name for t in await build_server(Settings.from_env(), "release-bot").list_tools()}
    assert documented == served


@pytest.mark.skipif(not prometheus_available(), reason="release-good's canary needs Debian's prometheus (scripts/install installs it)")
@pytest.mark.asyncio
async def test_python_client_snippet_runs_as_written(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str, local_stack: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippet = section_block("### From an agent (Python)", "python")
    address = dev_env.client.service_client.config.target_host
    monkeypatch.setenv("SIGNOFF_TEMPORAL_ADDRESS", address)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.chdir(REPO)  # the snippet names examples/release-good.yaml relative to the checkout
    scope: dict[str, Any] = {}
    exec(compile("async def readme_snippet():\n" + textwrap.indent(snippet, "    ") + "\n    return locals()\n", "README.md", "exec"), scope)

    async with running_worker(client, task_queue) as sc:

        async def people_approve() -> None:
            for _ in range(300):  # until the snippet has started it
                try:
                    await sc.status("rel-checkout-42")
                    break
                except NotFound:
                    await asyncio.sleep(0.2)
            status = await wait_phase(sc, "rel-checkout-42", "awaiting_approval", timeout=240)
            for person in ("alice@example.com", "carol@example.com"):
                run = await signoff("approve", status.release_id, "--as", person, "--json", env={"SIGNOFF_TEMPORAL_ADDRESS": address, "SIGNOFF_TASK_QUEUE": task_queue})
                assert run.code == 0 and run.json()["accepted"] is True, run.stdout + run.stderr

        result, _ = await asyncio.wait_for(asyncio.gather(scope["readme_snippet"](), people_approve()), timeout=400)
        # the runbook it started restarts the service: let it finish before the stack is stopped
        await asyncio.wait_for(sc.client.get_workflow_handle(result["run"].run_id).result(), timeout=120)
    assert result["status"].release_id == "rel-checkout-42"
    assert result["status"].phase.value == "succeeded", result["status"].reason
    assert result["run"].runbook == "restart-service" and result["run"].requested_by == "carol@example.com"
    assert result["run"].phase != "refused", result["run"]
