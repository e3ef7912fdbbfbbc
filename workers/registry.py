"""What a signoff worker runs: every workflow and every activity, built from settings."""

from __future__ import annotations

from typing import Any, Callable

from signoff.config import Settings


def all_workflows() -> list[type]:
    from workflows.release import ReleaseWorkflow

    try:  # DEV-ONLY guard while the runbook workflow lands; removed when it does
        from workflows.runbook import RunbookWorkflow
    except ModuleNotFoundError:
        return [ReleaseWorkflow]
    return [ReleaseWorkflow, RunbookWorkflow]


def all_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Each activity module exposes `activities_from_settings(settings)`; its clients are built there."""
    from activities import audit, deploy, directory, jira, policy, prometheus, provenance, runner, slack

    modules: list[Any] = [runner, deploy, provenance, policy, prometheus, directory, audit, slack, jira]
    try:  # DEV-ONLY guard while runbook actions land; removed when they do
        from activities import runbook_actions

        modules.append(runbook_actions)
    except ImportError:
        pass
    acts: list[Callable[..., Any]] = []
    for module in modules:
        acts.extend(module.activities_from_settings(settings))
    return acts
