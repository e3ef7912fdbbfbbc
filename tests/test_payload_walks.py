"""The worker skips the SDK's payload walks only when they cannot change a payload
(workers/payload_walks.py): with signoff's converter (no codec, no external storage) no walk runs,
and with a payload codec every payload still goes through it, on a real worker and dev server."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any, Sequence

import pytest
import temporalio
import temporalio.bridge.worker as bridge
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import PayloadCodec
from temporalio.worker import Worker
from temporalio.worker._command_aware_visitor import CommandAwarePayloadVisitor

from signoff.converter import data_converter
from workers import payload_walks
from workers.worker import workflow_runner

ENCODING = b"binary/signoff-test-codec"


class TaggingCodec(PayloadCodec):
    """Wraps each payload in one of its own encoding, and refuses to decode anything else: a
    payload that skipped the codec on either side fails the workflow."""

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.encoded += len(payloads)
        return [Payload(metadata={"encoding": ENCODING}, data=p.SerializeToString()) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                raise ValueError(f"a payload reached the codec without its encoding ({p.metadata.get('encoding')!r})")
            self.decoded += 1
            out.append(Payload.FromString(p.data))
        return out


@activity.defn(name="walks_shout")
async def shout(name: str) -> str:
    return name.upper()


@workflow.defn(name="WalksWorkflow")
class WalksWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        loud = await workflow.execute_activity("walks_shout", name, start_to_close_timeout=timedelta(seconds=30), result_type=str)
        return f"{loud}!"


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the SDK's payload walks (each `visit` of an activation or a completion)."""
    counted = [0]
    visit = CommandAwarePayloadVisitor.visit

    async def counting(self: Any, fs: Any, root: Any) -> None:
        counted[0] += 1
        await visit(self, fs, root)

    monkeypatch.setattr(CommandAwarePayloadVisitor, "visit", counting)
    return counted


async def run_once(client: Client, task_queue: str) -> tuple[str, list[Any]]:
    async with Worker(client, task_queue=task_queue, workflows=[WalksWorkflow], activities=[shout], workflow_runner=workflow_runner()):
        handle = await client.start_workflow(WalksWorkflow.run, "release", id=f"walks-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        result = await handle.result()
        events = [e async for e in handle.fetch_history_events()]
    return result, events


def test_the_worker_has_the_shortcut_on_this_sdk() -> None:
    assert temporalio.__version__ in payload_walks.CHECKED_VERSIONS, "a new temporalio: check workers/payload_walks.py against it"
    assert bridge.decode_activation.signoff_skips_idle_walks and bridge.encode_completion.signoff_skips_idle_walks
    assert payload_walks.install(), "installing twice must keep the one wrapper"
    assert not getattr(bridge.decode_activation.__wrapped__, "signoff_skips_idle_walks", False), "the wrapper wrapped itself"


def test_another_sdk_version_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge, "decode_activation", bridge.decode_activation.__wrapped__)
    monkeypatch.setattr(bridge, "encode_completion", bridge.encode_completion.__wrapped__)
    monkeypatch.setattr(temporalio, "__version__", "9.0.0")
    assert payload_walks.install() is False
    assert not hasattr(bridge.decode_activation, "signoff_skips_idle_walks")


async def test_without_a_codec_no_walk_runs(client: Client, task_queue: str, walks: list[int]) -> None:
    assert client.data_converter.payload_codec is None
    result, events = await run_once(client, task_queue)
    assert result == "RELEASE!"
    assert walks[0] == 0, f"the SDK walked {walks[0]} activation(s) or completion(s) with nothing to do"
    scheduled = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert scheduled.activity_task_scheduled_event_attributes.input.payloads[0].metadata["encoding"] == b"json/plain"


async def test_with_a_codec_every_payload_still_goes_through_it(client: Client, task_queue: str, walks: list[int]) -> None:
    codec = TaggingCodec()
    coded = Client(**{**client.config(), "data_converter": dataclasses.replace(data_converter, payload_codec=codec)})
    result, events = await run_once(coded, task_queue)
    assert result == "RELEASE!"  # the workflow read its input and the activity's result through the codec
    assert walks[0] >= 6, f"only {walks[0]} walk(s) with a codec: the worker skipped the SDK's decode or encode"
    # what the workflow worker wrote into history went out through the codec
    scheduled = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    completed = next(e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    assert scheduled.activity_task_scheduled_event_attributes.input.payloads[0].metadata["encoding"] == ENCODING
    assert completed.workflow_execution_completed_event_attributes.result.payloads[0].metadata["encoding"] == ENCODING
    assert codec.decoded >= 3 and codec.encoded >= 3
