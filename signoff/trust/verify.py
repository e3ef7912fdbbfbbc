"""Verifying a proof: who sent this request, and is it the request they signed?

Pure apart from the OIDC issuer's JWKS: the caller hands in the registry and the time, and gets
`Verified` or a `ProofRefused` whose message is the one sentence recorded in the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from signoff.errors import Refused
from signoff.models import AgentEntry, AuthResult, Proof
from signoff.trust.dsse import envelope_signed_by
from signoff.trust.oidc import OidcVerifier, TokenRefused
from signoff.trust.proofs import MAX_VALIDITY, parse_time, request_digest, request_of, split_principal
from signoff.trust.registry import Registry

CHAT_CHANNELS = {"slack", "jira"}
SIGNED_CHANNELS = {"cli", "api", "mcp"}
CLOCK_SKEW = timedelta(seconds=60)


class ProofRefused(Refused):
    """The proof does not prove this request."""


@dataclass(frozen=True)
class Verified:
    principal: str
    kind: str
    id: str
    identity: str
    method: str
    channel: str
    nonce: str
    request: dict[str, Any]
    agent: AgentEntry | None = None


def _describe(kind: str, ident: str) -> str:
    return {"person": f"{ident} is not in the approver directory", "agent": f"agent {ident} is not in the agent registry"}.get(
        kind, f"gateway {ident} is not a registered gateway"
    )


def verify_proof(
    proof: Proof | None,
    *,
    expect: dict[str, Any],
    registry: Registry,
    now: datetime | None,
    oidc: OidcVerifier | None = None,
) -> Verified:
    """Check a proof against the registry and against what the request must say.

    `expect` maps request fields to the values this request must have (action, subject, gate,
    digest, channel, body, …). `now=None` skips the validity window: the actuator re-checks
    proofs long after they were accepted, when only their signature and binding still matter.
    """
    if proof is None or (proof.envelope is None and proof.oidc_token is None):
        raise ProofRefused(
            "the request carries no proof of who sent it; sign it with SIGNOFF_IDENTITY_KEY or SIGNOFF_OIDC_TOKEN (unsigned Temporal calls are refused)"
        )
    try:
        request = request_of(proof)
        kind, ident = split_principal(request.get("principal"))
    except ValueError as e:
        raise ProofRefused(f"the proof is malformed: {e}") from e
    for name, wanted in expect.items():
        if request.get(name) != wanted:
            raise ProofRefused(
                f"the proof was made for {name} {request.get(name)!r}, not {wanted!r}; a proof is valid only for the request it signs"
            )
    if now is not None:
        issued, expires = parse_time(request.get("issued_at")), parse_time(request.get("expires_at"))
        if issued is None or expires is None:
            raise ProofRefused("the proof has no readable issued_at / expires_at; sign a fresh request")
        if expires - issued > MAX_VALIDITY:
            raise ProofRefused(f"the proof is valid for {expires - issued}, longer than the {MAX_VALIDITY} signoff accepts; sign a fresh request")
        if now > expires:
            raise ProofRefused(f"the proof expired at {request['expires_at']}; sign a fresh request")
        if issued > now + CLOCK_SKEW:
            raise ProofRefused(f"the proof was issued in the future ({request['issued_at']}); check the signer's clock")
    if not registry.known(kind, ident):
        raise ProofRefused(_describe(kind, ident) + "; only registered principals can act")
    agent = registry.agents.get(ident) if kind == "agent" else None
    if agent is not None and agent.status != "active":
        raise ProofRefused(f"agent {ident} is {agent.status}; its requests are refused until someone resumes it")
    channel = str(request.get("channel") or "")
    if proof.envelope is not None:
        signed_by = envelope_signed_by(proof.envelope, registry.keys_of(kind, ident))
        if signed_by is None:
            raise ProofRefused(f"the proof's signature does not verify with any key registered for {kind} {ident}")
        method = f"{'gateway' if kind == 'gateway' else 'key'}:{signed_by}"
    else:
        if kind == "gateway":
            raise ProofRefused("a gateway attests with its key, never with an OIDC token")
        if oidc is None:
            raise ProofRefused("this worker does not accept OIDC tokens; sign with a registered key instead")
        try:
            claims = oidc.verify(str(proof.oidc_token), trusted_issuers=registry.issuers())
        except TokenRefused as e:
            raise ProofRefused(str(e).rstrip(".")) from e
        if not any(o.issuer == claims["iss"] and o.subject == claims["sub"] for o in registry.oidc_of(kind, ident)):
            raise ProofRefused(f"the OIDC token's subject {claims['sub']!r} at {claims['iss']} is not registered for {kind} {ident}")
        if claims.get("nonce") != request_digest(request):
            raise ProofRefused("the OIDC token was not minted for this request (its nonce is not the request's digest); get a token for this request")
        method = f"oidc:{claims['iss']}"
    identity = ident
    if kind == "gateway":
        if channel not in CHAT_CHANNELS:
            raise ProofRefused(f"a gateway attests only Slack and Jira actions, not channel {channel!r}")
        person = str(request.get("on_behalf_of") or "").lower()
        if person not in registry.directory.people:
            raise ProofRefused(f"the gateway attested an action by {person or 'nobody'}, who is not in the approver directory")
        identity = person
    elif channel not in SIGNED_CHANNELS:
        raise ProofRefused(f"channel {channel} is attested by the gateway only; a {kind}'s own signature speaks for channel cli or api")
    return Verified(
        principal=f"{kind}:{ident}",
        kind=kind,
        id=ident,
        identity=identity.lower() if kind != "agent" else identity,
        method=method,
        channel=channel,
        nonce=str(request.get("nonce") or ""),
        request=request,
        agent=agent,
    )


def authenticate(
    proof: Proof | None,
    *,
    expect: dict[str, Any],
    registry: Registry,
    now: datetime | None,
    oidc: OidcVerifier | None = None,
) -> AuthResult:
    """`verify_proof` as a result (never raises): what workflows and the worker record."""
    try:
        proven = verify_proof(proof, expect=expect, registry=registry, now=now, oidc=oidc)
    except ProofRefused as e:
        return AuthResult(ok=False, reason=str(e))
    return AuthResult(
        ok=True,
        principal=proven.principal,
        kind=proven.kind,
        id=proven.id,
        identity=proven.identity,
        method=proven.method,
        channel=proven.channel,
        nonce=proven.nonce,
        request=proven.request,
        agent=proven.agent,
    )
