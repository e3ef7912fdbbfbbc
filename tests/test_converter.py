"""signoff's data converter (signoff/converter.py): the SDK's pydantic wire format byte for byte,
with one type adapter per type for the process instead of one per converter instance (the
worker builds a converter per activation, so the SDK's own cache was always empty)."""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import WorkflowSerializationContext

from signoff.converter import SHARED_JSON_CONVERTER, data_converter
from signoff.models import ApprovalAttempt, StartRelease
from tests.helpers import DIGEST_A, gated_spec


def values() -> list[Any]:
    spec = gated_spec()
    return [
        StartRelease(release_id="conv-1", spec=spec, base_dir="/srv/app"),
        ApprovalAttempt(release_id="conv-1", identity="alice@example.com", channel="cli", digest=DIGEST_A, plan="sha256:" + "a" * 64),
        {"phase": "awaiting_approval", "n": 3, "nested": [1, 2.5, None, True]},
        ["x", "y"],
        None,
        b"\x00\x01raw",
    ]


def test_payloads_are_the_sdk_pydantic_converters_byte_for_byte() -> None:
    ours = data_converter.payload_converter.to_payloads(values())
    sdk = pydantic_data_converter.payload_converter.to_payloads(values())
    assert [(p.metadata, p.data) for p in ours] == [(p.metadata, p.data) for p in sdk]


def test_each_side_reads_what_the_other_wrote() -> None:
    hints = [StartRelease, ApprovalAttempt, dict, list, type(None), bytes]
    from_sdk = data_converter.payload_converter.from_payloads(pydantic_data_converter.payload_converter.to_payloads(values()), hints)
    from_ours = pydantic_data_converter.payload_converter.from_payloads(data_converter.payload_converter.to_payloads(values()), hints)
    assert from_sdk == values() == from_ours


def test_a_fresh_converter_per_activation_reuses_the_type_adapters() -> None:
    """What the worker does per activation: a new data converter (dataclasses.replace, then
    with_context). Decoding through a fresh one must hit the process-wide cache, not build a
    new adapter."""
    payload = data_converter.payload_converter.to_payloads([values()[0]])
    data_converter.payload_converter.from_payloads(payload, [StartRelease])  # the adapter exists now
    before = SHARED_JSON_CONVERTER._type_adapter.cache_info()
    for i in range(5):
        fresh = dataclasses.replace(data_converter).with_context(
            WorkflowSerializationContext(namespace="default", workflow_id=f"conv-{i}")
        )
        [decoded] = fresh.payload_converter.from_payloads(payload, [StartRelease])
        assert decoded.release_id == "conv-1"
    after = SHARED_JSON_CONVERTER._type_adapter.cache_info()
    assert after.misses == before.misses, "a fresh converter built a new type adapter"
    assert after.hits >= before.hits + 5, "a fresh converter decoded through a cache of its own"


def test_a_fresh_payload_converter_shares_the_sdks_encodings_built_once() -> None:
    """The worker builds a payload converter for every activation: ours shares one encoding map
    (the SDK's encodings, in the SDK's order) and knows without asking that none takes a
    serialization context, so a new one costs an attribute or two."""
    from temporalio.contrib.pydantic import PydanticPayloadConverter

    from signoff.converter import SharedPydanticPayloadConverter

    first, second, sdk = SharedPydanticPayloadConverter(), SharedPydanticPayloadConverter(), PydanticPayloadConverter()
    assert first.converters is second.converters
    assert list(first.converters) == list(sdk.converters)
    assert [type(c) for c in first.converters.values()] == [type(c) for c in sdk.converters.values()]
    assert first._any_converter_takes_context is sdk._any_converter_takes_context is False
    assert first.with_context(WorkflowSerializationContext(namespace="default", workflow_id="conv-ctx")) is first
