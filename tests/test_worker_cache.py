"""The worker's workflow cache size: the measured default, an override, and a bad value refused
in one sentence before the worker connects anywhere (the real `signoff worker` entry point)."""

from __future__ import annotations

import pytest

from signoff.errors import ConfigError
from tests.test_cli import one_sentence, signoff
from workers.worker import DEFAULT_MAX_CACHED_WORKFLOWS, cache_size


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
