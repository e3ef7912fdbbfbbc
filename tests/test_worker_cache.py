"""The worker's workflow cache size: the measured default, an override, and a bad value refused
in one sentence before the worker connects anywhere (the real `signoff worker` entry point)."""

from __future__ import annotations

import pytest

from signoff.errors import ConfigError
from tests.test_cli import one_sentence, signoff
from workers.worker import DEFAULT_MAX_CACHED_WORKFLOWS, cache_size, sandbox_mode


def test_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_size() == DEFAULT_MAX_CACHED_WORKFLOWS == 1000
    monkeypatch.setenv("SIGNOFF_MAX_CACHED_WORKFLOWS", "4000")
    assert cache_size() == 4000


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5"])
def test_a_bad_cache_size_is_one_sentence(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_MAX_CACHED_WORKFLOWS", value)
    with pytest.raises(ConfigError) as caught:
        cache_size()
    assert repr(value) in one_sentence(str(caught.value))


async def test_the_worker_command_refuses_a_bad_cache_size_before_connecting() -> None:
    # an address nothing listens on: had the worker tried to connect, the error would name it
    run = await signoff("worker", env={"SIGNOFF_MAX_CACHED_WORKFLOWS": "lots", "SIGNOFF_TEMPORAL_ADDRESS": "127.0.0.1:1", "SIGNOFF_WORKER_METRICS": ""})
    assert run.code != 0
    assert "SIGNOFF_MAX_CACHED_WORKFLOWS must be a whole number" in one_sentence(run.error_line())


async def _compiles_during_replay(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replay a saved release history in the strict sandbox (which re-imports the workflow modules
    per instance); the workflow sources compiled."""
    import importlib._bootstrap_external as external
    import json

    from temporalio.client import WorkflowHistory
    from signoff.converter import data_converter
    from temporalio.worker import Replayer

    from tests.test_replay import HISTORIES
    from workers.registry import all_workflows
    from workers.worker import workflow_runner

    compiled: list[str] = []
    original = external.SourceLoader.source_to_code

    def counting(self: object, data: bytes, path: str, *, _optimize: int = -1) -> object:
        compiled.append(str(path))
        return original(self, data, path, _optimize=_optimize)

    monkeypatch.setattr(external.SourceLoader, "source_to_code", counting)
    history = WorkflowHistory.from_json("release", json.loads((HISTORIES / "release-gated-batched.json").read_text()))
    replayer = Replayer(workflows=all_workflows(), data_converter=data_converter, workflow_runner=workflow_runner("strict"))
    for _ in range(2):  # two fresh sandboxed instances, like two cache misses
        await replayer.replay_workflow(history)
    return [p for p in compiled if "/workflows/" in p]


async def test_the_worker_compiles_workflow_modules_once_so_a_cache_miss_does_not(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A release evicted from the cache is re-imported into a fresh sandbox. Without bytecode
    (PYTHONDONTWRITEBYTECODE, a read-only install) each of those imports compiled
    workflows/release.py again. The worker writes the bytecode at start; where the package
    cannot be written, under its state directory."""
    import os
    import sys

    from workers import worker as worker_module

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    # Before: an empty bytecode cache, as on a fresh read-only install: every instance compiles.
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "empty"))
    before = await _compiles_during_replay(monkeypatch)
    assert any(p.endswith("workflows/release.py") for p in before), before
    assert len(before) >= 2  # once per instance

    # The worker's start-up step, with the package directory read-only: bytecode goes to state.
    monkeypatch.setattr(sys, "pycache_prefix", None)
    real_access = os.access
    monkeypatch.setattr(worker_module.os, "access", lambda path, mode: False if str(path).endswith("workflows") else real_access(path, mode))
    prefix = worker_module.compile_workflow_modules(tmp_path / "state")
    assert prefix == tmp_path / "state" / "pycache" and sys.pycache_prefix == str(prefix)
    assert list(prefix.rglob("release.cpython-*.pyc"))
    after = await _compiles_during_replay(monkeypatch)
    assert after == [], f"sandboxed instances still compiled {after}"


def test_sandbox_mode_default_override_and_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sandbox_mode() == "shared"
    monkeypatch.setenv("SIGNOFF_WORKFLOW_SANDBOX", "Strict")
    assert sandbox_mode() == "strict"
    monkeypatch.setenv("SIGNOFF_WORKFLOW_SANDBOX", "loose")
    with pytest.raises(ConfigError) as caught:
        sandbox_mode()
    assert "'loose'" in one_sentence(str(caught.value))


async def test_the_worker_command_refuses_a_bad_sandbox_mode_before_connecting() -> None:
    run = await signoff("worker", env={"SIGNOFF_WORKFLOW_SANDBOX": "loose", "SIGNOFF_TEMPORAL_ADDRESS": "127.0.0.1:1", "SIGNOFF_WORKER_METRICS": ""})
    assert run.code != 0
    assert "SIGNOFF_WORKFLOW_SANDBOX must be one of shared, strict" in one_sentence(run.error_line())


@pytest.mark.parametrize("value", ["many", "0", "-1"])
def test_a_bad_activity_slot_count_is_one_sentence(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.worker import DEFAULT_MAX_CONCURRENT_ACTIVITIES, activity_slots

    assert activity_slots() == DEFAULT_MAX_CONCURRENT_ACTIVITIES
    monkeypatch.setenv("SIGNOFF_MAX_CONCURRENT_ACTIVITIES", value)
    with pytest.raises(ConfigError) as caught:
        activity_slots()
    assert repr(value) in one_sentence(str(caught.value))
