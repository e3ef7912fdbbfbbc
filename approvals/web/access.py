"""Who may read the view: a bearer token (setting) or a person's OIDC ID token.

The view shows who approved what with which signature, so it is never open by accident. A
deployment is production unless ``SIGNOFF_ENVIRONMENT`` says ``development``; in production,
with neither ``SIGNOFF_VIEW_TOKEN`` set nor any OIDC identity in the approver directory, the
view is off. Only on a development gateway with neither is it open to anyone who reaches it.

A token arrives as ``Authorization: Bearer …`` (scripts) or in the ``signoff_view`` cookie
that the login form sets (browsers). ID tokens are verified like any other OIDC proof
(signoff/trust/oidc.py) and must name a person registered in the approver directory.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from starlette.requests import Request

from signoff.config import Settings
from signoff.errors import Refused
from signoff.trust.oidc import OidcVerifier, TokenRefused
from signoff.trust.registry import TrustStore

COOKIE = "signoff_view"
ENVIRONMENT_ENV = "SIGNOFF_ENVIRONMENT"
TOKEN_ENV = "SIGNOFF_VIEW_TOKEN"
DEVELOPMENT = {"development", "dev"}


class ViewOff(Refused):
    """Production with no way to authenticate readers: the view does not exist."""


class LoginNeeded(Refused):
    """The request carries no token, or one that proves nothing."""


@dataclass
class ViewAccess:
    token: str | None
    production: bool
    trust: TrustStore
    oidc: OidcVerifier

    @classmethod
    def from_env(cls, settings: Settings) -> "ViewAccess":
        environment = (os.environ.get(ENVIRONMENT_ENV) or "production").strip().lower()
        return cls(
            token=os.environ.get(TOKEN_ENV) or None,
            production=environment not in DEVELOPMENT,
            trust=TrustStore(settings.directory_path, settings.agents_path),
            oidc=OidcVerifier(jwks_overrides=settings.oidc_jwks, max_lifetime=settings.oidc_max_lifetime),
        )

    def _issuers(self) -> set[str]:
        registry = self.trust.current()
        return {o.issuer for p in registry.directory.people.values() for o in p.oidc}

    def viewer(self, request: Request) -> str:
        """Who is reading: ``token``, a person's email, or ``anyone`` on an open development view.

        Raises:
            ViewOff: production, and neither a view token nor OIDC identities are configured.
            LoginNeeded: the request has no token, or its token proves nothing.
        """
        issuers = self._issuers()
        if self.token is None and not issuers:
            if self.production:
                raise ViewOff(
                    f"the read-only view is off in production until readers can authenticate; set {TOKEN_ENV} or register "
                    f"people's OIDC identities in the approver directory (or {ENVIRONMENT_ENV}=development for a local demo)."
                )
            return "anyone (development, no token configured)"
        presented = _presented_token(request)
        if not presented:
            raise LoginNeeded("this view needs a token: log in at /view/login with the view token or your OIDC ID token.")
        if self.token is not None and hmac.compare_digest(presented.encode(), self.token.encode()):
            return "token"
        if not issuers:
            raise LoginNeeded("the token is not this view's token; log in again at /view/login.")
        return self._person(presented, issuers)

    def _person(self, token: str, issuers: set[str]) -> str:
        try:
            claims = self.oidc.verify(token, trusted_issuers=issuers)
        except TokenRefused as e:
            raise LoginNeeded(f"{str(e).rstrip('.')}; log in again at /view/login.") from e
        for email, person in self.trust.current().directory.people.items():
            if any(o.issuer == claims["iss"] and o.subject == claims["sub"] for o in person.oidc):
                return email
        raise LoginNeeded(f"the OIDC subject {claims['sub']!r} at {claims['iss']} is not a person in the approver directory; ask to be added.")


def _presented_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE, "")
