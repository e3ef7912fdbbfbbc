"""Skip the SDK's payload walks over workflow activations when they cannot change a payload.

temporalio 1.35 walks every workflow activation three times on its way in (`decode_activation`:
external-storage references, external storage, the payload codec) and every completion three
times on its way out (`encode_completion`), with a generated visitor, whether or not a codec or
external storage is configured. Without either, each walk hands every payload to a function that
returns it unchanged. signoff configures neither (`signoff/converter.py`), and those six walks
were a quarter of the worker's interpreter time with 3,000 releases draining (py-spy `--gil`,
bench/bench_capacity.py): a release evicted from the workflow cache is rebuilt through one
activation per workflow task of its history, and each paid the walks again.

`install()` wraps the two bridge functions the SDK's workflow worker calls (by module attribute,
on every activation) so that they return at once when the data converter of that activation
has no payload codec and no external storage, by the SDK's own test for whether
decoding has any effect (`DataConverter._decode_payload_has_effect`, "temporary shortcircuit
detection" in 1.35, which the SDK itself does not call yet). Without either, every step of
both walks (read in 1.35's `converter/_data_converter.py`) returns its payloads unchanged, or raises
for an external-storage reference payload, which nothing writes without external storage; payload
size limits are checked by the SDK core, not in the walks.
With a codec or external storage, the SDK's walks run exactly as before
(tests/test_payload_walks.py runs a real worker with a codec and sees every payload through it).

Only the SDK versions this was checked against are wrapped (`CHECKED_VERSIONS`); on any other
version `install()` leaves the SDK alone and says so, so an upgrade can cost speed, never
correctness.
"""

from __future__ import annotations

import logging
from typing import Any

import temporalio
import temporalio.bridge.worker as _bridge
from temporalio.converter._extstore import StorageOperationMetrics

log = logging.getLogger("signoff.worker")

#: temporalio versions whose `decode_activation` / `encode_completion` do nothing but the walks
#: above, so that skipping them without a codec or external storage changes no payload.
CHECKED_VERSIONS = ("1.35.0",)


def _skipping(walk: Any) -> Any:
    """`walk` (the SDK's decode_activation or encode_completion), run only when the activation's
    data converter has a payload codec or external storage: the SDK's own test for that,
    `_decode_payload_has_effect`."""

    async def wrapper(message: Any, data_converter: Any, *args: Any, **kwargs: Any) -> StorageOperationMetrics:
        if data_converter._decode_payload_has_effect:
            return await walk(message, data_converter, *args, **kwargs)
        return StorageOperationMetrics()

    wrapper.signoff_skips_idle_walks = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = walk  # type: ignore[attr-defined]
    wrapper.__doc__ = walk.__doc__
    return wrapper


def install() -> bool:
    """Wrap the SDK's activation decode and completion encode (once per process). Returns whether
    the wrappers are in place."""
    if getattr(_bridge.decode_activation, "signoff_skips_idle_walks", False):
        return True
    version = getattr(temporalio, "__version__", "")
    if version not in CHECKED_VERSIONS:
        log.info("temporalio %s is not one signoff's payload-walk shortcut was checked against; the SDK walks every activation", version)
        return False
    _bridge.decode_activation = _skipping(_bridge.decode_activation)  # type: ignore[assignment]
    _bridge.encode_completion = _skipping(_bridge.encode_completion)  # type: ignore[assignment]
    return True
