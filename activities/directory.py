"""Reading the approver directory from a workflow: run as a local activity (cheap, no history
round trip of its own) when a gate opens and on every approval attempt."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.directory import load_directory as _load
from signoff.errors import ConfigError
from signoff.models import DirectorySnapshot


class DirectoryActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="load_directory")
    async def load_directory(self, path: str) -> DirectorySnapshot:
        try:
            return _load(path or self.settings.directory_path)
        except ConfigError as e:
            raise ApplicationError(str(e), type="DirectoryError") from e


def activities_from_settings(settings: Settings) -> list:
    return [DirectoryActivities(settings).load_directory]
