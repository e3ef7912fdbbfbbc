"""OIDC ID tokens as proofs, against a local issuer (discovery + JWKS) and the real workflow.

The issuer stub is the only stand-in: the worker fetches its discovery document and JWKS over
HTTP exactly as it would from the organisation's SSO, and PyJWT checks every token.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client

from signoff.models import ApprovalAttempt
from signoff.trust.credentials import Credential
from signoff.trust.proofs import oidc_proof, request_digest
from tests.helpers import DIGEST_A, dev_directory, gated_spec, running_worker, wait_phase
from tests.stubs.oidc_issuer import OidcIssuerStub

pytestmark = pytest.mark.asyncio
ALICE = "alice@example.com"


class MintedToken(Credential):
    """A credential that asks the issuer for a token bound to each request (nonce = digest)."""

    def __init__(self, principal: str, mint: Callable[[dict[str, Any]], str]) -> None:
        super().__init__(principal, "test issuer")
        self.mint = mint

    def prove(self, request: dict[str, Any]) -> Any:
        return oidc_proof(request, self.mint(request))


@pytest.fixture
def issuer() -> Any:
    with OidcIssuerStub() as stub:
        yield stub


async def test_oidc_tokens_prove_approvals_and_every_bad_token_is_refused(
    client: Client, task_queue: str, issuer: OidcIssuerStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = dev_directory(tmp_path, monkeypatch)
    doc = yaml.safe_load(directory.read_text())
    for person in doc["people"]:
        if person["email"] == ALICE:
            person["oidc"] = [{"issuer": issuer.issuer, "subject": "alice-sub"}]
        if person["email"] == "bob@example.com":
            person["oidc"] = [{"issuer": issuer.issuer, "subject": "bob-sub"}]
    directory.write_text(yaml.safe_dump(doc))
    rogue_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = time.time()
    bad_tokens: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
        "expired": (lambda r: issuer.mint("alice-sub", nonce=request_digest(r), issued_at=now - 1000, lifetime=300), "has expired"),
        "wrong audience": (lambda r: issuer.mint("alice-sub", nonce=request_digest(r), audience="another-app"), "audience is 'another-app', not 'signoff'"),
        "wrong issuer": (lambda r: issuer.mint("alice-sub", nonce=request_digest(r), issuer="https://evil.example"), "issuer 'https://evil.example' is not one any registered principal uses"),
        "unknown key": (lambda r: issuer.mint("alice-sub", nonce=request_digest(r), key=rogue_key, kid="rogue"), "signed by a key that"),
        "not for this request": (lambda r: issuer.mint("alice-sub", nonce="0" * 64), "not minted for this request"),
        "someone else's subject": (lambda r: issuer.mint("bob-sub", nonce=request_digest(r)), "subject 'bob-sub'"),
        "too long-lived": (lambda r: issuer.mint("alice-sub", nonce=request_digest(r), lifetime=7200), "longer than the 3600 s"),
    }
    async with running_worker(client, task_queue) as sc:
        r = f"rel-oidc-{uuid.uuid4().hex[:8]}"
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval")
        for name, (mint, why) in bad_tokens.items():
            sc.credentials = lambda kind, ident, mint=mint: MintedToken(f"{kind}:{ident}", mint)
            result = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))
            assert not result.accepted and why in result.reason, (name, result.reason)
        status = await sc.status(r)
        assert status.gates[0].approvals == [] and len(status.gates[0].refusals) == len(bad_tokens)

        sc.credentials = lambda kind, ident: MintedToken(f"{kind}:{ident}", lambda req: issuer.mint("alice-sub", nonce=request_digest(req)))
        good = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))
        assert good.accepted, good.reason
        assert good.gate is not None and good.gate.approvals[0].method == f"oidc:{issuer.issuer}"
    assert "/.well-known/openid-configuration" in issuer.requests and "/jwks.json" in issuer.requests
