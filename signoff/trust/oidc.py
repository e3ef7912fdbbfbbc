"""OIDC ID tokens as proofs: verified with PyJWT against the issuer's published JWKS.

Checked: the signature (a key the issuer publishes, found by `kid`), `iss` (an issuer some
registered principal names), `aud` = ``signoff``, `exp` / `nbf` / `iat`, and a maximum lifetime
(`exp - iat`), so a long-lived token cannot stand in for a short one.
"""

from __future__ import annotations

import threading
from typing import Any

import jwt

from signoff.errors import Refused

AUDIENCE = "signoff"
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "PS256"]


class TokenRefused(Refused):
    """An ID token that does not prove anything here."""


class OidcVerifier:
    def __init__(self, *, jwks_overrides: dict[str, str] | None = None, max_lifetime: int = 3600, leeway: int = 30) -> None:
        self.jwks_overrides = dict(jwks_overrides or {})
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self._clients: dict[str, jwt.PyJWKClient] = {}
        self._lock = threading.Lock()

    def _jwks_uri(self, issuer: str) -> str:
        if issuer in self.jwks_overrides:
            return self.jwks_overrides[issuer]
        import httpx

        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = httpx.get(url, timeout=5).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as e:
            raise TokenRefused(f"the OIDC issuer {issuer} did not publish its configuration ({type(e).__name__}); try again later.") from e
        uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str):
            raise TokenRefused(f"the OIDC issuer {issuer} publishes no jwks_uri; it cannot vouch for tokens.")
        return uri

    def _client(self, issuer: str) -> jwt.PyJWKClient:
        with self._lock:
            client = self._clients.get(issuer)
        if client is None:
            client = jwt.PyJWKClient(self._jwks_uri(issuer), cache_keys=True, lifespan=300, timeout=5)
            with self._lock:
                self._clients[issuer] = client
        return client

    def verify(self, token: str, *, trusted_issuers: set[str]) -> dict[str, Any]:
        """The token's claims, or TokenRefused saying in one sentence why it proves nothing."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise TokenRefused("the OIDC token is not a JWT; send the ID token itself.") from e
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in trusted_issuers:
            raise TokenRefused(f"the OIDC token's issuer {issuer!r} is not one any registered principal uses; use your organisation's issuer.")
        try:
            signing_key = self._client(issuer).get_signing_key_from_jwt(token)
        except jwt.PyJWKClientError as e:
            raise TokenRefused(f"the OIDC token is signed by a key that {issuer} does not publish ({e}); get a fresh token from the issuer.") from e
        try:
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenRefused("the OIDC token has expired; get a fresh one.") from e
        except jwt.InvalidAudienceError as e:
            raise TokenRefused(f"the OIDC token's audience is {unverified.get('aud')!r}, not {AUDIENCE!r}; request a token for signoff.") from e
        except jwt.ImmatureSignatureError as e:
            raise TokenRefused("the OIDC token is not valid yet (nbf/iat in the future); check the clock.") from e
        except jwt.InvalidSignatureError as e:
            raise TokenRefused("the OIDC token's signature does not verify; it was altered or forged.") from e
        except jwt.PyJWTError as e:
            raise TokenRefused(f"the OIDC token does not verify ({e}); get a fresh one from the issuer.") from e
        lifetime = int(claims["exp"]) - int(claims["iat"])
        if lifetime > self.max_lifetime:
            raise TokenRefused(f"the OIDC token lives {lifetime} s, longer than the {self.max_lifetime} s signoff accepts; use a short-lived token.")
        return claims
