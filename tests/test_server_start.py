"""Dev-server start survives one missed start window (the `run_all` "did not start within 5s").

The failure is produced by the real `temporal` binary: started with a flag it does not know, it
exits, and the SDK reports exactly the error benchmarks hit under load."""

from __future__ import annotations

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from tests.helpers import DEV_SERVER_ARGS, start_dev_server, start_retrying, temporal_binary


async def _failing_start() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary(), dev_server_extra_args=["--no-such-flag"])


async def test_a_server_that_misses_its_first_start_is_started_again(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    async def first_fails() -> WorkflowEnvironment:
        calls.append("start")
        if len(calls) == 1:
            return await _failing_start()
        return await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary(), dev_server_extra_args=DEV_SERVER_ARGS)

    env = await start_retrying(first_fails, "the Temporal dev server")
    try:
        info = await env.client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version  # the second server answers
    finally:
        await env.shutdown()
    assert calls == ["start", "start"]
    assert "did not start within 5s" in capsys.readouterr().out  # the first failure is reported, then retried


async def test_a_server_that_never_starts_fails_once_with_both_reasons() -> None:
    with pytest.raises(RuntimeError) as caught:
        await start_dev_server(extra_args=["--no-such-flag"])
    message = str(caught.value)
    assert message.startswith("the Temporal dev server did not start in 2 attempts: ")
    assert message.count("did not start within 5s") == 2
