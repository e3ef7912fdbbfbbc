"""`check_drift`: ask each service's target what it serves and compare with the signed log.

The expected digest and the target come from the signed records of the service's last release
(signoff/drift.py), the serving digest from the target itself, so neither a workflow's word nor
a release file's is trusted. A target that cannot be read is reported as such, not as drift.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity

from signoff.audit import store_from_settings
from signoff.config import Settings
from signoff.drift import expected_serving, judge, open_drifts
from signoff.errors import SignoffError
from signoff.models import DeploySpec
from signoff.trace import trails


class DriftActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self) -> list[dict[str, Any]]:
        from activities.deploy import target_for

        entries = store_from_settings(self.settings).entries()
        expected = expected_serving(trails(entries).values())
        reported = open_drifts(entries)
        findings: list[dict[str, Any]] = []
        for service, want in sorted(expected.items()):
            try:
                serving = target_for(self.settings, DeploySpec.model_validate(want["target"])).current(service).stable
            except (SignoffError, ValueError) as e:
                findings.append({"service": service, "status": "unreadable", "reason": str(e), "expected": want["digest"], "release_id": want["release_id"]})
                continue
            finding = judge(service, want, serving, reported.get(service))
            if finding is not None:
                findings.append(finding)
        return findings

    @activity.defn(name="check_drift")
    async def check_drift(self, _: str = "") -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.check)


def activities_from_settings(settings: Settings) -> list[Any]:
    return [DriftActivities(settings).check_drift]
