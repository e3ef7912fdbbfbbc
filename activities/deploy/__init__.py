"""Deployment activities: one interface (`DeploymentTarget`), four targets.

The workflow only ever says "deploy this digest at this weight", "what is running" and "roll
back to this digest"; which system does it is the release file's ``deploy.target``:

* ``local``  — processes on this machine with a traffic generator (activities/deploy/local.py)
* ``gitops`` — a manifest committed to a Git repository (activities/deploy/gitops.py)
* ``command``— user shell commands with placeholders (activities/deploy/command.py)
* ``flag``   — a flagd feature flag exposes the new code path (activities/deploy/flag.py)

Target code raises `DeployError` (usable outside Temporal, e.g. by `signoff dev`); the
activities below turn it into an ``ApplicationError`` whose type is the error's kind and which
is non-retryable unless the problem is transient (a busy lock, a slow start).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deploy.base import DeployError, DeploymentTarget, Placement, check_digest, plan_deploy, plan_rollback
from activities.deploy.command import CommandTarget
from activities.deploy.flag import FlagTarget
from activities.deploy.gitops import GitopsTarget
from activities.deploy.local import LocalTarget, stop_all
from activities.policy import PolicyActivities
from signoff.config import Settings
from signoff.errors import SignoffError
from signoff.models import DeploymentState, DeployRequest, DeploySpec, PolicyRequest, RollbackRequest, TargetRequest
from signoff.trust.evidence import EvidenceRefused, check_evidence
from signoff.trust.registry import TrustStore

__all__ = [
    "CommandTarget",
    "DeployActivities",
    "DeployError",
    "DeploymentTarget",
    "FlagTarget",
    "GitopsTarget",
    "LocalTarget",
    "Placement",
    "activities_from_settings",
    "plan_deploy",
    "plan_rollback",
    "stop_all",
    "target_for",
]

T = TypeVar("T")


def target_for(settings: Settings, spec: DeploySpec) -> DeploymentTarget:
    """The target named by the release file's ``deploy`` block."""
    options: dict[str, Any] = dict(spec.settings)
    if spec.target == "local":
        return LocalTarget(settings, options)
    if spec.target == "gitops":
        return GitopsTarget(settings, options)
    if spec.target == "command":
        return CommandTarget(settings, options)
    if spec.target == "flag":
        return FlagTarget(settings, options)
    raise DeployError(f"unknown deployment target {spec.target!r}; use local, gitops, command or flag", kind="BadTarget")


class DeployActivities:
    """The deploy / current_deployment / rollback activities for every target.

    `deploy` at any weight above 0 is the actuator: it ships only what the release's evidence
    allows (signoff/trust/evidence.py), whoever scheduled it. Rollback to a previous digest
    needs no evidence: it only ever puts back what was approved before.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trust = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path)
        self.policy = PolicyActivities(settings)

    def check_evidence(self, req: DeployRequest) -> str:
        if req.evidence is None:
            raise EvidenceRefused(
                f"refused to ship {req.digest[:19]}… at weight {req.weight}: the request carries no evidence "
                "(signed start, policy decision, signed approvals); only a release that passed its gates can ship"
            )
        if req.evidence.release_id != req.release_id or req.evidence.spec.service != req.service:
            raise EvidenceRefused(f"refused to ship {req.digest[:19]}…: the evidence is for another release or service")
        sandbox: dict[str, str] = {}
        if req.evidence.spec.build is not None:
            sandbox["build"] = self.verified_build_profile(req.digest)
        if req.evidence.tests is not None and req.evidence.tests.profile:
            sandbox["test"] = req.evidence.tests.profile
        change = None
        spec_change = req.evidence.spec.change
        if spec_change.repository and spec_change.commit:
            # The facts the policy decides on are read from Git again here, not taken from the workflow.
            from activities.git import ChangeError, derive_change, repository_path

            try:
                change = derive_change(repository_path(req.evidence.base_dir or ".", spec_change.repository), spec_change.commit, spec_change.base)
            except ChangeError as e:
                raise EvidenceRefused(f"refused to ship {req.digest[:19]}…: the change cannot be read from Git again ({e})") from e
        return check_evidence(
            req.evidence,
            digest=req.digest,
            registry=self.trust.current(),
            decide=lambda facts: self.policy.decide(PolicyRequest(input=facts)),
            sandbox=sandbox,
            change=change,
        )

    def verified_build_profile(self, digest: str) -> str:
        """The sandbox profile from the build's *signed* provenance (verified with the
        orchestrator key), not from what the workflow says; no valid provenance, no ship."""
        import json

        from activities.artifacts import store_for
        from signoff.audit import keyid_for, load_public_key, statement_of
        from signoff.trust.dsse import envelope_signed_by

        path = store_for(self.settings.state_dir).signed_provenance_path_for(digest)
        try:
            envelope = json.loads(path.read_text())
            key = load_public_key(self.settings.key_path)
            statement = statement_of(envelope)
        except (OSError, ValueError, SignoffError) as e:
            raise EvidenceRefused(f"refused to ship {digest[:19]}…: signoff built it but its signed provenance cannot be read ({e})") from e
        if envelope_signed_by(envelope, {keyid_for(key): key}) is None:
            raise EvidenceRefused(f"refused to ship {digest[:19]}…: its build provenance is not signed by the orchestrator key")
        subjects = [s.get("digest", {}).get("sha256") for s in statement.get("subject", []) if isinstance(s, dict)]
        if digest.split(":", 1)[1] not in subjects:
            raise EvidenceRefused(f"refused to ship {digest[:19]}…: its signed build provenance is about another artifact")
        internal = statement.get("predicate", {}).get("buildDefinition", {}).get("internalParameters", {})
        return str((internal.get("sandbox") or {}).get("profile") or "unconfined")

    async def _call(self, spec: DeploySpec, fn: Callable[[DeploymentTarget], T]) -> T:
        def run() -> T:
            return fn(target_for(self.settings, spec))

        try:
            # Targets block (process start-up, git, shell commands); keep the event loop free.
            return await asyncio.to_thread(run)
        except DeployError as e:
            raise ApplicationError(str(e), type=e.kind, non_retryable=not e.retryable) from e

    @activity.defn(name="deploy")
    async def deploy(self, req: DeployRequest) -> DeploymentState:
        """Run ``req.digest`` at ``req.weight`` (100 = make it the stable)."""
        try:
            check_digest(req.digest)
        except DeployError as e:
            raise ApplicationError(str(e), type=e.kind, non_retryable=True) from e
        if req.weight > 0:
            try:
                verdict = self.check_evidence(req)
            except SignoffError as e:  # EvidenceRefused, or a policy / directory that cannot be read
                activity.logger.warning("deploy refused: %s", e)
                raise ApplicationError(str(e), type="DeployRefused", non_retryable=True) from e
            activity.logger.info("%s: %s", req.release_id, verdict)
        state = await self._call(req.target, lambda t: t.deploy(req.service, req.digest, req.weight, release_id=req.release_id))
        activity.logger.info("deployed %s %s at %s: %s", req.service, req.digest, req.weight, state.model_dump())
        return state

    @activity.defn(name="current_deployment")
    async def current_deployment(self, req: TargetRequest) -> DeploymentState:
        """What serves ``req.service`` now (and restarts local processes that died)."""
        return await self._call(req.target, lambda t: t.current(req.service))

    @activity.defn(name="rollback")
    async def rollback(self, req: RollbackRequest) -> DeploymentState:
        """Remove the canary and make ``req.to_digest`` the stable."""
        state = await self._call(req.target, lambda t: t.rollback(req.service, req.to_digest, release_id=req.release_id))
        activity.logger.info("rolled back %s to %s", req.service, req.to_digest)
        return state


def activities_from_settings(settings: Settings) -> list:
    """The bound deployment activities for the worker."""
    acts = DeployActivities(settings)
    return [acts.deploy, acts.current_deployment, acts.rollback]
