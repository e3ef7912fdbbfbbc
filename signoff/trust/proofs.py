"""Proof-carrying requests: the canonical request, signed by its principal.

Every request that changes something (start a release, approve / reject / revoke, promote,
abort, run a runbook, suspend an agent, …) is a small JSON document naming who asks, what,
about which release / gate / digest, with a nonce and a short validity. It travels as a DSSE
envelope signed by the principal's registered key, or next to an OIDC ID token whose `nonce`
claim is the request's digest. Either way the proof is bound to exactly that request: it
cannot be used for another release, gate, decision or digest, and the workflow refuses a nonce
it has seen.

Principals are written ``person:<email>``, ``agent:<id>`` and ``gateway:<id>``. A gateway
attests a Slack or Jira action: its request names the person it mapped (``on_behalf_of``) and
the channel's own ids (``external``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.models import Proof
from signoff.trust.dsse import canonical_json, sign_envelope, unb64

REQUEST_TYPE = "https://signoff.dev/request/v1"
REQUEST_PAYLOAD_TYPE = "application/vnd.signoff.request+json"
MAX_VALIDITY = timedelta(minutes=10)
DEFAULT_VALIDITY = timedelta(minutes=5)


def iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def body_digest(body: Any) -> str:
    """sha256 of a request's subject matter (a release spec, runbook parameters)."""
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def new_request(
    *,
    principal: str,
    action: str,
    subject: str,
    channel: str,
    gate: str | None = None,
    digest: str | None = None,
    plan: str | None = None,
    body: dict[str, Any] | None = None,
    on_behalf_of: str | None = None,
    external: dict[str, Any] | None = None,
    validity: timedelta = DEFAULT_VALIDITY,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The canonical request document (every field present, so the digest is unambiguous)."""
    at = now or datetime.now(timezone.utc)
    return {
        "_type": REQUEST_TYPE,
        "principal": principal,
        "action": action,
        "subject": subject,
        "channel": channel,
        "gate": gate,
        "digest": digest,
        "plan": plan,
        "body": body or {},
        "on_behalf_of": on_behalf_of,
        "external": external or {},
        "nonce": secrets.token_hex(16),
        "issued_at": iso(at),
        "expires_at": iso(at + min(validity, MAX_VALIDITY)),
    }


def request_digest(request: dict[str, Any]) -> str:
    """What an OIDC token's `nonce` must be for the token to prove this request."""
    return hashlib.sha256(canonical_json(request)).hexdigest()


def sign_request(request: dict[str, Any], key: Ed25519PrivateKey) -> Proof:
    return Proof(envelope=sign_envelope(REQUEST_PAYLOAD_TYPE, canonical_json(request), key))


def oidc_proof(request: dict[str, Any], token: str) -> Proof:
    return Proof(oidc_token=token, request=request)


def request_of(proof: Proof) -> dict[str, Any]:
    """The request a proof carries, without checking anything. Raises ValueError if unreadable."""
    import json

    if proof.envelope is not None:
        if proof.envelope.get("payloadType") != REQUEST_PAYLOAD_TYPE:
            raise ValueError(f"the envelope's payload type is {proof.envelope.get('payloadType')!r}, not a signoff request")
        try:
            request = json.loads(unb64(str(proof.envelope.get("payload", ""))))
        except (ValueError, TypeError) as e:
            raise ValueError("the envelope's payload is not base64 JSON") from e
    elif proof.request is not None:
        request = proof.request
    else:
        raise ValueError("the proof carries neither a signed envelope nor a request")
    if not isinstance(request, dict) or request.get("_type") != REQUEST_TYPE:
        raise ValueError("the proof does not carry a signoff request")
    return request


def principal(kind: str, ident: str) -> str:
    return f"{kind}:{ident}"


def split_principal(text: Any) -> tuple[str, str]:
    kind, sep, ident = str(text or "").partition(":")
    if not sep or kind not in ("person", "agent", "gateway") or not ident:
        raise ValueError(f"{text!r} is not a principal (person:<email>, agent:<id> or gateway:<id>)")
    return kind, ident
