"""What a signoff worker runs: every workflow and every activity, built from settings."""

from __future__ import annotations

from typing import Any, Callable

from signoff.config import Settings


def all_workflows() -> list[type]:
    from workflows.release import ReleaseWorkflow

    from workflows.agent import AgentControlWorkflow
    from workflows.analysis import AnalysisWorkflow
    from workflows.drift import DriftWorkflow
    from workflows.freeze import FreezeWorkflow
    from workflows.reaper import ReaperWorkflow
    from workflows.runbook import RunbookWorkflow

    return [ReleaseWorkflow, RunbookWorkflow, AgentControlWorkflow, DriftWorkflow, ReaperWorkflow, FreezeWorkflow, AnalysisWorkflow]


def all_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Each activity module exposes `activities_from_settings(settings)`; its clients are built there."""
    from activities import agents, audit, deploy, directory, drift, forensics, git, jira, policy, prometheus, provenance, reaper, runbook_actions, runner, slack, trust, windows

    modules: list[Any] = [agents, drift, reaper, forensics, runner, git, deploy, provenance, policy, prometheus, directory, trust, audit, slack, jira, runbook_actions, windows]
    acts: list[Callable[..., Any]] = []
    for module in modules:
        acts.extend(module.activities_from_settings(settings))
    return acts
