"""`derive_change`: what a commit really changes, read from Git — the policy's facts, not claims.

A release names `change.repository` (a local checkout, relative to the release file) and
`change.commit`; signoff asks Git for the touched paths with their status
(`git diff --name-status -M`), the diff size, the commits' authors and committers and whether
they are signed (`%G?`, reported as is: the policy decides what it means). The base is
`change.base`, else the commit's first parent. The policy then decides on these, and declared
`change.paths` that leave out a touched path are a denial (policies/release.rego).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runner import command_env
from signoff.config import Settings
from signoff.errors import SignoffError
from signoff.models import ChangeFacts, ChangeRequest, PathChange

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class ChangeError(SignoffError):
    """The repository or commit a release names cannot be read."""


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, env=command_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ChangeError(f"git could not read {repo} ({e}); check change.repository") from e
    if out.returncode != 0:
        raise ChangeError(f"git {args[0]} failed in {repo}: {(out.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    return out.stdout


def derive_change(repository: Path, commit: str, base: str | None = None) -> ChangeFacts:
    """The facts of `base..commit` in `repository` (raises ChangeError with one sentence)."""
    repo = repository.resolve()
    if not (repo / ".git").exists() and not repo.joinpath("HEAD").exists():
        raise ChangeError(f"change.repository {repository} is not a Git checkout; point it at the release's source repository")
    try:
        full = _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").strip()
    except ChangeError as e:
        raise ChangeError(f"change.commit {commit} is not a commit in {repo}; push it or fix the id") from e
    if base:
        try:
            base_full = _git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").strip()
        except ChangeError as e:
            raise ChangeError(f"change.base {base} is not a commit in {repo}; fix the id") from e
    else:
        parents = _git(repo, "rev-list", "--parents", "-n", "1", full).split()
        base_full = parents[1] if len(parents) > 1 else EMPTY_TREE
    paths: list[PathChange] = []
    for line in _git(repo, "diff", "--name-status", "-M", "--no-color", base_full, full).splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            status = fields[0][:1]
            # a rename touches both names
            paths.extend(PathChange(path=p, status=status) for p in (fields[1:] if status in ("R", "C") else fields[1:2]))
    insertions = deletions = 0
    for line in _git(repo, "diff", "--numstat", "--no-color", base_full, full).splitlines():
        added, removed, *_ = (line.split("\t") + ["", ""])[:3]
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    span = full if base_full == EMPTY_TREE else f"{base_full}..{full}"
    log = _git(repo, "log", "--format=%ae%x09%ce%x09%G?", span).splitlines()
    rows = [r.split("\t") for r in log if r.strip()]
    authors = sorted({r[0].strip().lower() for r in rows if r and r[0].strip()})
    committers = sorted({r[1].strip().lower() for r in rows if len(r) > 1 and r[1].strip()})
    signatures = [r[2].strip() if len(r) > 2 else "N" for r in rows]
    return ChangeFacts(
        repository=str(repo),
        commit=full,
        base=base_full,
        paths=paths,
        insertions=insertions,
        deletions=deletions,
        commits=len(rows),
        authors=authors,
        committers=committers,
        signatures=signatures,
        signed=bool(signatures) and all(s not in ("N", "B", "") for s in signatures),
    )


def repository_path(base_dir: str | Path, repository: str) -> Path:
    path = Path(repository).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


class GitActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="derive_change")
    async def derive_change(self, req: ChangeRequest) -> ChangeFacts:
        try:
            return await asyncio.to_thread(derive_change, repository_path(req.base_dir, req.repository), req.commit, req.base)
        except ChangeError as e:
            raise ApplicationError(str(e), type="ChangeUnreadable", non_retryable=True) from e


def activities_from_settings(settings: Settings) -> list:
    return [GitActivities(settings).derive_change]
