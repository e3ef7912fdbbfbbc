"""The `gitops` deployment target: the placement is a YAML manifest committed to a Git repository.

This is the production path through Argo CD or Flux: signoff never talks to the cluster, it
commits the desired digest (and canary weight) and the GitOps controller applies it. Each
commit message names the release, so ``git log`` answers "which release put this digest
here?". Asking for the placement already committed makes no commit (idempotent retries).

Settings: ``repo`` (path of a working tree; relative paths resolve against ``base_dir`` when
given, else the worker's working directory), ``manifest`` (path inside the repo, default
``deploy/<service>.yaml``), optional ``branch`` (checked out, created when missing), optional
``push: true`` with ``remote`` (default ``origin``).

Manifest keys written (other keys in the file are preserved)::

    service: checkout
    stable: sha256:…        # the digest serving production
    canary: sha256:… | null # the digest under canary
    weight: 20              # the canary's share of traffic, 0 without canary
    previous: sha256:…      # the stable before the last change (rollback target)
    release: rel-…          # the release that made the last change
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from activities.deploy.base import DeployError, Placement, file_lock, plan_deploy, plan_rollback, state_of
from activities.runner import command_env
from signoff.config import Settings
from signoff.models import DeploymentState

GIT_TIMEOUT_SECONDS = 60
IDENTITY = {
    "GIT_AUTHOR_NAME": "signoff",
    "GIT_AUTHOR_EMAIL": "signoff@localhost",
    "GIT_COMMITTER_NAME": "signoff",
    "GIT_COMMITTER_EMAIL": "signoff@localhost",
}


class GitopsTarget:
    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        if not options.get("repo"):
            raise DeployError(
                "the gitops target needs deploy.settings.repo, the path of the Git repository holding the manifests",
                kind="BadTargetSettings",
            )
        repo = Path(str(options["repo"])).expanduser()
        if not repo.is_absolute() and options.get("base_dir"):
            repo = Path(str(options["base_dir"])) / repo
        self.repo = repo.resolve()
        self.manifest_template = str(options.get("manifest") or "deploy/{service}.yaml")
        self.branch = options.get("branch")
        self.push = bool(options.get("push", False))
        self.remote = str(options.get("remote", "origin"))
        self.identity = {
            "GIT_AUTHOR_NAME": str(options.get("author_name", IDENTITY["GIT_AUTHOR_NAME"])),
            "GIT_AUTHOR_EMAIL": str(options.get("author_email", IDENTITY["GIT_AUTHOR_EMAIL"])),
            "GIT_COMMITTER_NAME": str(options.get("author_name", IDENTITY["GIT_COMMITTER_NAME"])),
            "GIT_COMMITTER_EMAIL": str(options.get("author_email", IDENTITY["GIT_COMMITTER_EMAIL"])),
        }

    # git ---------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            out = subprocess.run(
                ["git", "-C", str(self.repo), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_SECONDS,
                env=command_env(self.identity),
            )
        except subprocess.TimeoutExpired as e:
            raise DeployError(
                f"`git {args[0]}` in {self.repo} did not finish within {GIT_TIMEOUT_SECONDS} seconds; check the repository and its remote",
                kind="GitFailed",
                retryable=True,
            ) from e
        if check and out.returncode != 0:
            reason = (out.stderr or out.stdout).strip().splitlines()
            raise DeployError(
                f"`git {args[0]}` failed in {self.repo} ({reason[-1] if reason else 'exit ' + str(out.returncode)}); fix the gitops repository and retry",
                kind="GitFailed",
            )
        return out

    def _check_repo(self) -> None:
        if not self.repo.is_dir() or self._git("rev-parse", "--is-inside-work-tree", check=False).returncode != 0:
            raise DeployError(
                f"{self.repo} is not a Git working tree; set deploy.settings.repo to a clone of the gitops repository",
                kind="NotARepo",
            )

    def _checkout_branch(self) -> None:
        if not self.branch:
            return
        head = self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
        if head == self.branch:
            return
        exists = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}", check=False).returncode == 0
        self._git("checkout", "--quiet", *([self.branch] if exists else ["-b", self.branch]))

    def manifest_path(self, service: str) -> str:
        """The manifest's path inside the repository; one that resolves outside it is refused."""
        relative = self.manifest_template.replace("{service}", service)
        resolved = (self.repo / relative).resolve()
        if Path(relative).is_absolute() or not resolved.is_relative_to(self.repo):
            raise DeployError(
                f"deploy.settings.manifest {self.manifest_template!r} points outside the repository {self.repo}; give a path inside it",
                kind="BadTargetSettings",
            )
        return relative

    def _read(self, service: str) -> dict[str, Any]:
        path = self.repo / self.manifest_path(service)
        if not path.exists():
            return {}
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise DeployError(f"{path} is not valid YAML ({e.__class__.__name__}); fix the manifest", kind="BadManifest") from e
        if not isinstance(doc, dict):
            raise DeployError(f"{path} is not a YAML mapping; fix the manifest", kind="BadManifest")
        return doc

    def _result(self, service: str, doc: dict[str, Any]) -> DeploymentState:
        manifest = self.manifest_path(service)
        head = self._git("rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip() or None
        commits = self._git("rev-list", "--count", "HEAD", "--", manifest, check=False).stdout.strip() if head else "0"
        return state_of(
            service,
            Placement.from_dict(doc),
            commit=head,
            actions=int(commits or 0),
            manifest=str(self.repo / manifest),
            release=doc.get("release"),
        )

    def _apply(self, service: str, want: Placement, message: str, release_id: str) -> DeploymentState:
        doc = self._read(service)
        if Placement.from_dict(doc) == want and doc.get("service") == service:
            return self._result(service, doc)
        doc.update(service=service, **want.to_dict(), release=release_id or None)
        path = self.repo / self.manifest_path(service)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        manifest = self.manifest_path(service)
        self._git("add", "--", manifest)
        self._git("commit", "--quiet", "--no-verify", "-m", message, "--", manifest)
        if self.push:
            self._git("push", "--quiet", self.remote, f"HEAD:refs/heads/{self.branch or self._current_branch()}")
        return self._result(service, doc)

    def _lock_path(self, service: str) -> Path:
        git_dir = self._git("rev-parse", "--absolute-git-dir").stdout.strip()
        return Path(git_dir) / f"signoff-{service}.lock"

    def _current_branch(self) -> str:
        return self._git("symbolic-ref", "--short", "HEAD").stdout.strip()

    # the interface -----------------------------------------------------------

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState:
        self._check_repo()
        with file_lock(self._lock_path(service)):
            self._checkout_branch()
            want, note = plan_deploy(Placement.from_dict(self._read(service)), digest, weight)
            what = f"promote {digest}" if want.canary is None else f"canary {digest} at {want.weight}%"
            message = (
                f"signoff: {service}: {what} (release {release_id or 'unknown'})\n\n"
                f"Signoff-Release: {release_id}\nSignoff-Digest: {digest}\nSignoff-Weight: {weight}\n"
            )
            state = self._apply(service, want, message, release_id)
            if note:
                state.detail["note"] = note
            return state

    def current(self, service: str) -> DeploymentState:
        self._check_repo()
        with file_lock(self._lock_path(service)):
            self._checkout_branch()
            return self._result(service, self._read(service))

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState:
        self._check_repo()
        with file_lock(self._lock_path(service)):
            self._checkout_branch()
            want = plan_rollback(Placement.from_dict(self._read(service)), to_digest)
            message = (
                f"signoff: {service}: roll back to {to_digest} (release {release_id or 'unknown'})\n\n"
                f"Signoff-Release: {release_id}\nSignoff-Digest: {to_digest}\n"
            )
            return self._apply(service, want, message, release_id)
