"""`authenticate_request`: verify a request's proof against the worker's registry.

Run by workflows as a local activity (no history round trip of its own) for every start,
approval attempt, promote, abort and runbook run. It returns the directory as it is now, so the
gate's membership check and the proof check read the same, current files — never a snapshot
or hash the caller chose.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import AuthRequest, AuthResult, TrustSnapshot
from signoff.trust.oidc import OidcVerifier
from signoff.trust.registry import TrustStore
from signoff.trust.verify import authenticate


class TrustActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path)
        self.oidc = OidcVerifier(jwks_overrides=settings.oidc_jwks, max_lifetime=settings.oidc_max_lifetime)

    def authenticate(self, request: AuthRequest) -> AuthResult:
        try:
            registry = self.store.current()
        except ConfigError as e:
            raise ApplicationError(str(e), type="DirectoryError") from e
        wall = datetime.now(timezone.utc)
        # A start is judged at the workflow's start time (so a worker that was down for a while
        # does not turn a valid start stale), never later than now (a test server's clock may run
        # ahead of the wall clock).
        now = min(request.at, wall) if request.at is not None else wall
        result = authenticate(request.proof, expect=request.expect, registry=registry, now=now, oidc=self.oidc)
        return result.model_copy(update={"snapshot": registry.directory})

    @activity.defn(name="authenticate_request")
    async def authenticate_request(self, request: AuthRequest) -> AuthResult:
        # A key proof costs a stat() and a signature check: on the loop. A token may need the
        # issuer's JWKS fetched: in a thread, so a slow issuer never stalls other workflows.
        if request.proof is not None and request.proof.oidc_token:
            return await asyncio.to_thread(self.authenticate, request)
        return self.authenticate(request)


    @activity.defn(name="load_trust")
    async def load_trust(self, _: str = "") -> TrustSnapshot:
        """The principals as they are now, for a workflow to verify chat and signed approvals
        against between refreshes (gates refresh it at most every few seconds, and again before
        a gate closes)."""
        try:
            return self.store.current().snapshot()
        except ConfigError as e:
            raise ApplicationError(str(e), type="DirectoryError") from e


def activities_from_settings(settings: Settings) -> list:
    acts = TrustActivities(settings)
    return [acts.authenticate_request, acts.load_trust]
