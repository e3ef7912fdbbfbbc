"""DSSE v1 primitives shared by decision records and request proofs."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signoff.trust.keys import keyid


def canonical_json(value: Any) -> bytes:
    """The one byte encoding used for payloads and hashes: sorted keys, no spaces, UTF-8.

    Hashes and signatures are over bytes, so the same document must always give the same bytes,
    in this process, in a retried activity and in the CLI months later.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: what is actually signed (type and payload bound)."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Standard or URL-safe base64, as the DSSE spec allows either.

    Raises:
        binascii.Error: not base64 (also for a non-string or non-ASCII value).
    """
    if not isinstance(text, str) or not text.isascii():
        raise binascii.Error("not a base64 string")
    text = text.strip()
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return base64.b64decode(text, validate=True)


def sign_envelope(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    return {
        "payloadType": payload_type,
        "payload": b64(payload),
        "signatures": [{"keyid": keyid(key.public_key()), "sig": b64(key.sign(pae(payload_type, payload)))}],
    }


def envelope_signed_by(envelope: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> str | None:
    """The keyid of the first signature that verifies with one of `keys` (keyid → key), or None."""
    try:
        payload = unb64(str(envelope["payload"]))
    except (KeyError, ValueError, TypeError):
        return None
    message = pae(str(envelope.get("payloadType", "")), payload)
    for signature in envelope.get("signatures") or []:
        if not isinstance(signature, dict):
            continue
        candidates = [signature.get("keyid")] if signature.get("keyid") in keys else list(keys)
        for kid in candidates:
            try:
                keys[kid].verify(unb64(str(signature.get("sig", ""))), message)
                return str(kid)
            except (InvalidSignature, ValueError, TypeError):
                continue
    return None
