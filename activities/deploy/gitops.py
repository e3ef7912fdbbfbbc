"""The `gitops` deployment target: the placement is a manifest committed to a Git repository.

This is the production path through Argo CD or Flux: signoff never talks to the cluster, it
commits the desired digest (and canary weight) and the GitOps controller applies it. Each
commit message names the release, so ``git log`` answers "which release put this digest
here?". Asking for the placement already committed makes no commit (idempotent retries).

Settings: ``repo`` (path of a working tree; relative paths resolve against ``base_dir`` when
given, else the worker's working directory), ``manifest`` (path inside the repo, default
``deploy/<service>.yaml``), optional ``branch`` (checked out, created when missing), optional
``push: true`` with ``remote`` (default ``origin``) and ``push_retries`` (default 5), and
``kind``, what the manifest is:

* ``argo-rollout`` — an Argo Rollouts ``Rollout``; canary weights become its ``setWeight``
  steps (activities/deploy/manifests.py says how and why);
* ``deployment`` — a Kubernetes ``Deployment`` for services without progressive delivery (any
  deploy rolls the whole Deployment to the digest), updated in place or, with
  ``via: kustomize``, through the ``images:`` entry of the kustomization ``manifest`` names;
* ``signoff`` (the default) — signoff's own summary format below, for tools that read it.

For the Kubernetes kinds, ``container`` names the container to pin (default: the one named
after the service, or the only one) and ``image`` its repository (default: the one already in
the manifest). Manifests are edited structurally (comments and other fields survive) and
validated against the Kubernetes and Argo Rollouts schemas before anything is committed.

With ``push``, the remote branch is the truth: before each change the clone is reset to it,
the change is planned on what it holds, and a push rejected because someone else pushed first
is retried on top of their commit (never forced). When the worker sets
``SIGNOFF_GITOPS_SIGNING_KEY`` (an SSH private key), every commit is signed with it.

The ``signoff`` format (other keys in the file are preserved)::

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
from typing import Any, Callable

from activities.deploy import manifests
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
KINDS = ("signoff", *manifests.MANIFEST_KINDS)
REJECTED_BY_REMOTE = ("[rejected]", "non-fast-forward", "fetch first", "cannot lock ref")

Planner = Callable[[Placement], tuple[Placement, str]]


class SummaryManifest:
    """signoff's own summary format: the placement itself, as top-level keys."""

    def __init__(self, doc: Any, *, service: str) -> None:
        self.doc = doc
        self.service = service

    def placement(self) -> Placement:
        return Placement.from_dict(self.doc) if self.doc.get("service") == self.service else Placement()

    def release(self) -> str | None:
        return self.doc.get("release")

    def apply(self, want: Placement, release_id: str) -> None:
        self.doc.update(service=self.service, **want.to_dict(), release=release_id or None)

    def validate(self) -> None:
        """Nothing reads this format but signoff; its shape is the placement itself."""


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
        self.kind = str(options.get("kind") or "signoff")
        if self.kind not in KINDS:
            raise DeployError(f"deploy.settings.kind {self.kind!r} is not one of {', '.join(KINDS)}; pick the kind of manifest the repository holds", kind="BadTargetSettings")
        self.container = str(options["container"]) if options.get("container") else None
        self.image = str(options["image"]) if options.get("image") else None
        self.via = str(options.get("via") or "in-place")
        if self.via not in ("in-place", "kustomize") or (self.via == "kustomize" and self.kind != "deployment"):
            raise DeployError(f"deploy.settings.via {self.via!r} is not supported with kind {self.kind}; use in-place, or kustomize with kind deployment", kind="BadTargetSettings")
        self.branch = options.get("branch")
        self.push = bool(options.get("push", False))
        self.remote = str(options.get("remote", "origin"))
        self.push_retries = int(options.get("push_retries", 5))
        self.signing_key = settings.gitops_signing_key
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
            raise DeployError(
                f"`git {args[0]}` failed in {self.repo} ({_last_line(out)}); fix the gitops repository and retry",
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

    def _sync(self) -> None:
        """With ``push``, start from what the remote holds (someone else may have pushed)."""
        self._checkout_branch()
        if not self.push:
            return
        branch = self.branch or self._current_branch()
        tracking = f"refs/remotes/{self.remote}/{branch}"
        fetched = self._git("fetch", "--quiet", self.remote, f"+refs/heads/{branch}:{tracking}", check=False)
        if fetched.returncode == 0:
            self._git("reset", "--quiet", "--hard", tracking)
        elif "couldn't find remote ref" not in fetched.stderr:
            raise DeployError(
                f"could not fetch {branch} from the gitops remote {self.remote!r} ({_last_line(fetched)}); check the remote and retry",
                kind="GitFailed",
                retryable=True,
            )

    def _commit(self, manifest: str, message: str) -> None:
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.signing_key}"] if self.signing_key else []
        self._git("add", "--", manifest)
        self._git(*signing, "commit", "--quiet", "--no-verify", *(["-S"] if signing else []), "-m", message, "--", manifest)

    def _pushed(self) -> bool:
        """True once the commit is on the remote; False when someone else pushed first."""
        out = self._git("push", "--quiet", "--porcelain", self.remote, f"HEAD:refs/heads/{self.branch or self._current_branch()}", check=False)
        if out.returncode == 0:
            return True
        if any(marker in out.stdout + out.stderr for marker in REJECTED_BY_REMOTE):
            return False
        raise DeployError(
            f"could not push to the gitops remote {self.remote!r} ({_last_line(out)}); check the remote and its credentials",
            kind="GitFailed",
            retryable=True,
        )

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

    def _read(self, service: str) -> manifests.Manifest:
        relative = self.manifest_path(service)
        path = self.repo / relative
        if self.kind == "signoff":
            return SummaryManifest(manifests.load(path.read_text(), relative) if path.exists() else {}, service=service)
        if not path.exists():
            raise DeployError(
                f"{relative} does not exist in {self.repo}; commit the {self.kind} manifest for {service} first, signoff only updates it",
                kind="BadManifest",
            )
        if self.via == "kustomize":
            return manifests.KustomizationImage(manifests.load(path.read_text(), relative), where=relative, path=path, image=self.image)
        editor = manifests.MANIFEST_KINDS[self.kind]
        return editor(manifests.load(path.read_text(), relative), where=relative, service=service, container=self.container, image=self.image)

    def _result(self, service: str, manifest: manifests.Manifest) -> DeploymentState:
        relative = self.manifest_path(service)
        head = self._git("rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip() or None
        commits = self._git("rev-list", "--count", "HEAD", "--", relative, check=False).stdout.strip() if head else "0"
        return state_of(
            service,
            manifest.placement(),
            commit=head,
            actions=int(commits or 0),
            manifest=str(self.repo / relative),
            release=manifest.release(),
        )

    def _change(self, service: str, plan: Planner, message: Callable[[Placement], str], release_id: str) -> DeploymentState:
        """Plan on the newest manifest, validate, commit, push; again on top of a concurrent push."""
        relative = self.manifest_path(service)
        for _attempt in range(self.push_retries + 1):
            self._sync()
            manifest = self._read(service)
            want, note = plan(manifest.placement())
            if want != manifest.placement():
                manifest.apply(want, release_id)
                manifest.validate()  # before anything is written: a refused manifest leaves no trace
                path = self.repo / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(manifests.dump(manifest.doc))
                self._commit(relative, message(want))
                if self.push and not self._pushed():
                    continue
            state = self._result(service, manifest)
            if note:
                state.detail["note"] = note
            return state
        raise DeployError(
            f"the gitops remote {self.remote!r} kept moving: {self.push_retries + 1} pushes were rejected because others pushed first; retry the deploy",
            kind="GitFailed",
            retryable=True,
        )

    def _lock_path(self, service: str) -> Path:
        git_dir = self._git("rev-parse", "--absolute-git-dir").stdout.strip()
        return Path(git_dir) / f"signoff-{service}.lock"

    def _current_branch(self) -> str:
        return self._git("symbolic-ref", "--short", "HEAD").stdout.strip()

    # the interface -----------------------------------------------------------

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState:
        def plan(now: Placement) -> tuple[Placement, str]:
            if self.kind == "deployment" and weight < 100:
                want, _ = plan_deploy(now, digest, 100)
                return want, "a Deployment has no canary; the whole Deployment rolls to this digest"
            return plan_deploy(now, digest, weight)

        def message(want: Placement) -> str:
            what = f"promote {digest}" if want.canary is None else f"canary {digest} at {want.weight}%"
            return (
                f"signoff: {service}: {what} (release {release_id or 'unknown'})\n\n"
                f"Signoff-Release: {release_id}\nSignoff-Digest: {digest}\nSignoff-Weight: {weight}\n"
            )

        self._check_repo()
        with file_lock(self._lock_path(service)):
            return self._change(service, plan, message, release_id)

    def current(self, service: str) -> DeploymentState:
        self._check_repo()
        with file_lock(self._lock_path(service)):
            self._checkout_branch()
            return self._result(service, self._read(service))

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState:
        def message(want: Placement) -> str:
            return (
                f"signoff: {service}: roll back to {to_digest} (release {release_id or 'unknown'})\n\n"
                f"Signoff-Release: {release_id}\nSignoff-Digest: {to_digest}\n"
            )

        self._check_repo()
        with file_lock(self._lock_path(service)):
            return self._change(service, lambda now: (plan_rollback(now, to_digest), ""), message, release_id)


def _last_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {out.returncode}"
