"""Runner snapshots: what a stopped release's workspace held, kept as signed forensic records.

When the runner kills a command (the release was cancelled, or the command ran past its time
limit) it snapshots the workspace listing, the output tail, the sandbox profile and how the
command ended into `<state>/forensics/<release>/`, as an in-toto statement signed with the
orchestrator key. `keep_forensics` then hands the workflow a summary of each (with the envelope's
hash) to put in the signed log; a release stopped while nothing ran gets a snapshot taken then.
Workspaces are deleted or reused later; the snapshot is what an investigation has left.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from temporalio import activity

from signoff.config import Settings

FORENSICS_PREDICATE = "https://signoff.dev/forensics/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_FILES = 2000
RUNNING_PHASES = ("building", "testing")
RUNNER_GRACE_SECONDS = 15.0
HASH_LIMIT_BYTES = 1 << 20


def workspace_of(settings: Settings, release_id: str) -> Path:
    return Path(settings.state_dir).resolve() / "workspaces" / release_id


def forensics_dir(settings: Settings, release_id: str) -> Path:
    return Path(settings.state_dir).resolve() / "forensics" / release_id


def listing(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` (path, size, sha256 of files up to 1 MiB), symlinks not followed."""
    files: list[dict[str, Any]] = []
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        if len(files) >= MAX_FILES:
            files.append({"path": "…", "note": f"listing stopped at {MAX_FILES} files"})
            break
        if path.is_symlink() or not path.is_file():
            continue
        item: dict[str, Any] = {"path": str(path.relative_to(root)), "size": path.stat().st_size}
        if item["size"] <= HASH_LIMIT_BYTES:
            item["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        files.append(item)
    return files


def snapshot(
    settings: Settings,
    sign: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    release_id: str,
    what: str,
    command: str,
    profile: str,
    ended: str,
    output_tail: str,
) -> Path:
    """Write one signed snapshot of the release's workspace; returns its path."""
    files = listing(workspace_of(settings, release_id))
    taken = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"workspace:{release_id}", "digest": {"sha256": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()}}],
        "predicateType": FORENSICS_PREDICATE,
        "predicate": {"release_id": release_id, "what": what, "command": command, "profile": profile, "ended": ended, "output_tail": output_tail, "files": files, "taken_at": taken},
    }
    out = forensics_dir(settings, release_id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{what}-{time.time_ns()}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(sign(statement), indent=1))
    os.replace(partial, path)  # a reader never sees half a snapshot
    return path


def summary(path: Path) -> dict[str, Any]:
    """What the signed log keeps about a snapshot: where, its hash, and the facts that matter."""
    from signoff.audit import statement_of

    envelope = json.loads(path.read_text())
    predicate = statement_of(envelope)["predicate"]
    return {
        "path": str(path),
        "envelope_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "what": predicate["what"],
        "profile": predicate["profile"],
        "ended": predicate["ended"],
        "files": len(predicate["files"]),
        "output_tail": predicate["output_tail"][-500:],
    }


class ForensicActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        from activities.runner import CommandActivities

        return CommandActivities(self.settings).sign_provenance(statement)

    @activity.defn(name="keep_forensics")
    async def keep_forensics(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The snapshots the runner took of this release; one taken now when it took none.

        A command being killed learns of it at its next heartbeat and gets a grace period to
        exit, so for a release stopped while a command ran, wait that long for the runner's."""
        release_id = str(request["release_id"])
        patience = RUNNER_GRACE_SECONDS if request.get("phase") in RUNNING_PHASES else 0.0
        deadline = time.monotonic() + patience
        found = sorted(forensics_dir(self.settings, release_id).glob("*.json"))
        while not found and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            activity.heartbeat()
            found = sorted(forensics_dir(self.settings, release_id).glob("*.json"))
        if not found:
            found = [
                snapshot(self.settings, self.sign, release_id=release_id, what=str(request.get("phase", "release")), command="",
                         profile="", ended=str(request.get("why", "stopped")), output_tail="")
            ]
        return [summary(p) for p in found]


def activities_from_settings(settings: Settings) -> list[Any]:
    return [ForensicActivities(settings).keep_forensics]
