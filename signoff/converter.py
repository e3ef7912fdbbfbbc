"""The Temporal data converter of every signoff client and worker: the SDK's pydantic converter,
with one pydantic `TypeAdapter` per type for the whole process.

Why: `temporalio.contrib.pydantic` caches its type adapters in each converter instance, and the
worker builds a fresh data converter (so fresh payload converters, with empty caches) for each
workflow activation and each command it encodes. Every payload a workflow read (its input, each
activity result, each Update's argument) then built a new `TypeAdapter`: 10 % of the worker's
Python time with 10,000 releases waiting (py-spy, bench/bench_capacity.py), most of it on a
release's replay after a cache miss. `bench/bench_replay.py` measures it (`sdk_converter`).

The wire format is the SDK's, byte for byte: the same `json/plain` encoding, the same JSON, so a
client or worker on `temporalio.contrib.pydantic.pydantic_data_converter` reads and writes the
same payloads. Type adapters are thread-safe and the cache (`functools.lru_cache`) is too.
"""

from __future__ import annotations

from typing import Any

from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import CompositePayloadConverter, DataConverter, DefaultPayloadConverter, JSONPlainPayloadConverter, WithSerializationContext

#: One JSON converter for the process; its bounded type-adapter cache (the SDK's default size,
#: 1,024 types) outlives the per-activation data converters built around it.
SHARED_JSON_CONVERTER = PydanticJSONPlainPayloadConverter()


#: The encoding converters by encoding, built once. The SDK builds a payload converter for every
#: workflow activation (`DataConverter.__post_init__`), so building this map and the base class's
#: "does any converter take a serialization context" answer (ABC checks, a cached property per
#: instance) on each was about 5 % of a replayed release's Python time (py-spy over offline
#: replays). The SDK replaces the map when it needs another (`_set_converters`), never edits it.
_CONVERTERS = {
    c.encoding.encode(): c
    for c in (
        SHARED_JSON_CONVERTER if isinstance(c, JSONPlainPayloadConverter) else c
        for c in DefaultPayloadConverter.default_encoding_payload_converters
    )
}
_TAKES_CONTEXT = any(isinstance(c, WithSerializationContext) for c in _CONVERTERS.values())


class SharedPydanticPayloadConverter(CompositePayloadConverter):
    """The SDK's `PydanticPayloadConverter`, on the process-wide JSON converter."""

    def __init__(self) -> None:
        self.converters = _CONVERTERS
        self.__dict__["_any_converter_takes_context"] = _TAKES_CONTEXT  # the base class's cached property, precomputed


data_converter: Any = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
"""Pass as `data_converter` to `Client.connect` (and to a `Replayer`)."""
