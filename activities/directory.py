"""Reading the approver directory from a workflow: run as a local activity (cheap, no history
round trip of its own) when a gate opens and on every approval attempt.

The file is parsed again only when its mtime or size changed, so the per-attempt membership
re-check costs a stat() — and someone removed from a group is still refused at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.config import Settings
from signoff.directory import ApproverDirectory
from signoff.errors import ConfigError
from signoff.models import DirectorySnapshot


class DirectoryActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._views: dict[Path, ApproverDirectory] = {}
        self._lock = threading.Lock()

    def _view(self, path: Path) -> ApproverDirectory:
        with self._lock:
            view = self._views.get(path)
            if view is None:
                view = self._views[path] = ApproverDirectory(path)
            return view

    @activity.defn(name="load_directory")
    async def load_directory(self, path: str) -> DirectorySnapshot:
        """The worker's directory. `path` is ignored: older workflow inputs carried one, and no
        caller may choose which directory decides (DESIGN.md, "Trust model")."""
        try:
            return self._view(Path(self.settings.directory_path)).snapshot()
        except ConfigError as e:
            raise ApplicationError(str(e), type="DirectoryError") from e


def activities_from_settings(settings: Settings) -> list:
    return [DirectoryActivities(settings).load_directory]
