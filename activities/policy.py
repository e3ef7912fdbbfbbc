"""The `evaluate_policy` activity: the Rego policy decides tier, gates and denials.

Evaluation reads the policy files (their hash goes into the decision), so it is a side effect
and lives in an activity; the workflow only builds the input document (signoff.policy_input).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.errors import PolicyError
from signoff.models import PolicyDecision, PolicyRequest
from signoff.policy import OPA_URL_ENV, PolicyBackendUnavailable, evaluate


class PolicyActivities:
    """Evaluates the release policy in-process (regorus) or, with an OPA URL, over OPA's REST API."""

    def __init__(self, settings: Settings, *, opa_url: str | None = None) -> None:
        self.settings = settings
        self.opa_url = opa_url if opa_url is not None else (settings.extra.get("opa_url") or os.environ.get(OPA_URL_ENV) or "")

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Always the worker's policy: `request.policy_dir` (set by older clients) is ignored, so
        no caller can pick a permissive policy for its own release."""
        return evaluate(request.input, policy_dir=self.settings.policy_dir, opa_url=self.opa_url)

    @activity.defn(name="evaluate_policy")
    async def evaluate_policy(self, request: PolicyRequest) -> PolicyDecision:
        """A broken policy is permanent (non-retryable, the release fails with the sentence);
        an unreachable OPA server is transient and retried.

        Runs on the worker's event loop thread on purpose: regorus engines must stay on the thread
        that made them, and a decision takes well under a millisecond (bench/bench_policy.py).
        """
        try:
            if self.opa_url:  # a network call: keep it off the event loop (no regorus engine involved)
                return await asyncio.to_thread(self.decide, request)
            return self.decide(request)
        except PolicyBackendUnavailable as e:
            raise ApplicationError(str(e), type="PolicyBackendUnavailable", non_retryable=False) from e
        except PolicyError as e:
            raise ApplicationError(str(e), type="PolicyError", non_retryable=True) from e


def activities_from_settings(settings: Settings) -> list[Any]:
    return [PolicyActivities(settings).evaluate_policy]
