"""Deployment activities: one interface (`DeploymentTarget`), three targets.

The workflow only ever says "deploy this digest at this weight", "what is running" and "roll
back to this digest"; which system does it is the release file's ``deploy.target``:

* ``local``  — processes on this machine with a traffic generator (activities/deploy/local.py)
* ``gitops`` — a manifest committed to a Git repository (activities/deploy/gitops.py)
* ``command``— user shell commands with placeholders (activities/deploy/command.py)

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
from activities.deploy.gitops import GitopsTarget
from activities.deploy.local import LocalTarget, stop_all
from signoff.config import Settings
from signoff.models import DeploymentState, DeployRequest, DeploySpec, RollbackRequest, TargetRequest

__all__ = [
    "CommandTarget",
    "DeployActivities",
    "DeployError",
    "DeploymentTarget",
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
    raise DeployError(f"unknown deployment target {spec.target!r}; use local, gitops or command", kind="BadTarget")


class DeployActivities:
    """The deploy / current_deployment / rollback activities for every target."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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
