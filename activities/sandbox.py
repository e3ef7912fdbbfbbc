"""The confined runner: every command a release supplies runs inside `bubblewrap`.

A release's build, test, scanner, runbook-script and deploy commands are written by whoever asks
for the release — possibly a hostile agent — and run before any person has looked. So each runs:

* in new user, pid, ipc, uts and cgroup namespaces, and a new network namespace unless the
  policy chose the `fetch` profile (no network at all by default, not even the host's loopback:
  the gateway and Temporal on 127.0.0.1 are out of reach);
* as an unprivileged user (`nobody` when the worker is root), with rlimits on CPU seconds,
  address space, file size and processes (a fork bomb hits the process limit), next to the
  wall-clock timeout;
* with `--die-with-parent` and `--new-session`, in its own pid namespace: when the command ends,
  everything it started (a `setsid` daemon included) is killed with the namespace;
* seeing the system read-only (/usr, /etc, the Python installation), the release's source tree
  read-only, one writable workspace holding a copy of it, a private /tmp and its own /proc — and
  nothing of the worker's state directory (keys, audit log, artifact store, Temporal database,
  the gateway's files), which is masked even when it lies inside the source tree;
* with an environment built from the allow-list only.

Profiles (`PROFILES`) are chosen by the worker's policy (`data.signoff.release.sandbox_profile`),
never by the release file, which may only ask for the network. Without `bwrap` or user
namespaces nothing runs, unless `SIGNOFF_UNSAFE_UNCONFINED=1` (development only) — and then the
profile is `unconfined`, which the policy sees and the default policy denies in production.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from signoff.errors import ConfigError

HERMETIC = "hermetic"
FETCH = "fetch"
UNCONFINED = "unconfined"
PROFILES = {HERMETIC: {"network": False}, FETCH: {"network": True}}
UNSAFE_ENV = "SIGNOFF_UNSAFE_UNCONFINED"
BWRAP_ENV = "SIGNOFF_BWRAP"
NOBODY = 65534
SOURCE_MOUNT = "/source"
WORKSPACE_MOUNT = "/workspace"


class SandboxUnavailable(ConfigError):
    """bwrap is missing or cannot create namespaces here, and unconfined runs are not allowed."""


@dataclass(frozen=True)
class Limits:
    """rlimits for a sandboxed command (next to the activity's wall-clock timeout)."""

    cpu_seconds: int = 600
    address_space: int = 4 << 30
    file_size: int = 2 << 30
    processes: int = 512

    @classmethod
    def from_env(cls, *, cpu_seconds: int) -> "Limits":
        def get(name: str, default: int) -> int:
            raw = os.environ.get(name)
            try:
                return int(raw) if raw else default
            except ValueError as e:
                raise ConfigError(f"{name}={raw!r} is not a whole number; unset it or give a number.") from e

        base = cls()
        return cls(
            cpu_seconds=get("SIGNOFF_SANDBOX_CPU_SECONDS", cpu_seconds),
            address_space=get("SIGNOFF_SANDBOX_MEMORY_BYTES", base.address_space),
            file_size=get("SIGNOFF_SANDBOX_FILE_BYTES", base.file_size),
            processes=get("SIGNOFF_SANDBOX_PROCESSES", base.processes),
        )


def hidden_paths(settings: Any) -> list[Path]:
    """What no release command may see, even when it lies inside the tree it runs on: the
    worker's state, its key and audit directories, the gateway's key directory."""
    paths = {Path(settings.state_dir).resolve(), Path(settings.key_path).resolve().parent, Path(settings.audit_log).resolve().parent}
    if settings.gateway_key_path:
        paths.add(Path(settings.gateway_key_path).resolve().parent)
    return sorted(paths)


def bwrap_path() -> str | None:
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured if Path(configured).is_file() and os.access(configured, os.X_OK) else None
    return shutil.which("bwrap")


@lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """None when bwrap can make the namespaces we need here, else why not."""
    try:
        out = subprocess.run(
            [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--die-with-parent", "--", "/bin/true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap} could not be run ({e})"
    if out.returncode != 0:
        return f"{bwrap} cannot create namespaces here ({out.stderr.strip()[:200] or out.returncode}); enable unprivileged user namespaces"
    return None


def unavailable_reason() -> str | None:
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed" if not os.environ.get(BWRAP_ENV) else f"{BWRAP_ENV}={os.environ[BWRAP_ENV]} is not an executable"
    return _probe(bwrap)


def unconfined_allowed() -> bool:
    return os.environ.get(UNSAFE_ENV, "") == "1"


def choose_profile(requested: str) -> str:
    """The profile a command actually runs with: `requested` (from policy), or `unconfined` when
    the sandbox cannot run here and the development override allows it; otherwise refuse."""
    why = unavailable_reason()
    if why is None:
        return requested
    if unconfined_allowed():
        return UNCONFINED
    raise SandboxUnavailable(
        f"release commands run only in the bubblewrap sandbox and {why}; install bubblewrap "
        f"(apt-get install bubblewrap), or for development only set {UNSAFE_ENV}=1 to run unconfined."
    )


def _drop_privileges() -> None:
    """For commands that run without bwrap (the probe, unconfined runs): never as root."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def preexec(limits: Limits, *, drop: bool = False) -> Callable[[], None]:
    """rlimits set in the child before exec; inherited by bwrap and everything inside."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop:
            _drop_privileges()

    return apply


def python_roots() -> list[Path]:
    """The Python installation release commands may use (`python3` on the sandbox's PATH)."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    return sorted(r for r in roots if r.is_dir() and not str(r).startswith(("/usr", "/bin", "/lib")))


def sandbox_path() -> str:
    return ":".join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])


class Mounts:
    """bwrap mount arguments. Every directory bwrap must create on the way to a mount point is
    created 0755 first (bwrap would otherwise make it 0700, and the sandbox user could not walk
    to the Python under /root or a workspace under a private temporary directory)."""

    SYSTEM = ("/usr", "/etc", "/proc", "/dev")

    def __init__(self) -> None:
        self.args: list[str] = []
        self.made: set[str] = {"/", "/tmp", *self.SYSTEM}

    def parents(self, path: Path) -> None:
        for parent in reversed(path.parents):
            text = str(parent)
            if text in self.made or any(text == s or text.startswith(s + "/") for s in self.SYSTEM):
                continue
            self.args += ["--perms", "0755", "--dir", text]
            self.made.add(text)

    def bind(self, path: Path, *, writable: bool = False) -> None:
        self.parents(path)
        self.args += ["--bind" if writable else "--ro-bind", str(path), str(path)]
        self.made.add(str(path))

    def tmpfs(self, path: Path) -> None:
        self.parents(path)
        self.args += ["--tmpfs", str(path)]
        self.made.add(str(path))


def _system_mounts(mounts: Mounts) -> None:
    mounts.args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            mounts.args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            mounts.args += ["--ro-bind", str(top), str(top)]
            mounts.made.add(str(top))
    mounts.args += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for root in python_roots():
        mounts.bind(root)


@dataclass
class SandboxSpec:
    """One confined command: where it runs and what it may see."""

    command: str
    source: Path
    workspace: Path
    cwd: Path
    env: dict[str, str]
    profile: str = HERMETIC
    hidden: list[Path] = field(default_factory=list)

    def inside(self, path: Path) -> Path:
        """Where a path of the workspace is, seen from inside the sandbox."""
        return Path(WORKSPACE_MOUNT) / path.relative_to(self.workspace)

    def argv(self) -> list[str]:
        """The command line that runs the command confined (or plainly, when unconfined).

        A root worker runs bwrap with its own privileges to build the namespaces and mounts,
        keeping only CAP_SETUID/CAP_SETGID, and `setpriv` drops the command to `nobody` with no
        capabilities left — a real, unprivileged uid on the host, so the process limit binds. A
        non-root worker runs bwrap unprivileged inside a new user namespace.
        """
        if self.profile == UNCONFINED:
            return ["/bin/sh", "-c", self.command]
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown sandbox profile {self.profile!r}; the policy must choose one of {', '.join(PROFILES)}.")
        bwrap = bwrap_path() or "bwrap"
        as_root = os.geteuid() == 0
        args = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not as_root:
            args.append("--unshare-user")
        if not PROFILES[self.profile]["network"]:
            args.append("--unshare-net")
        args += ["--die-with-parent", "--new-session", "--clearenv"]
        mounts = Mounts()
        _system_mounts(mounts)
        args += mounts.args
        # The checkout and the workspace appear at fixed places, not at their host paths: the
        # host's layout (and whatever else lies beside them) stays out of view.
        args += ["--ro-bind", str(self.source), SOURCE_MOUNT]
        for hidden in self.hidden:
            # the worker's state, when it lies inside the source tree: an empty tmpfs over it
            if hidden == self.source or hidden.is_relative_to(self.source):
                args += ["--tmpfs", str(Path(SOURCE_MOUNT) / hidden.relative_to(self.source))]
        args += ["--bind", str(self.workspace), WORKSPACE_MOUNT]
        for key, value in sorted(self.env.items()):
            args += ["--setenv", key, value]
        args += ["--chdir", str(self.inside(self.cwd))]
        if as_root:
            args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
            args += [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
        return [*args, "--", "/bin/sh", "-c", self.command]


def prepare_workspace(source: Path, workspace: Path, *, hidden: list[Path], fresh: bool) -> None:
    """A writable copy of the source tree the command may change; owned by the sandbox user."""
    if fresh and workspace.exists():
        shutil.rmtree(workspace)
    if not workspace.exists():
        workspace.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        masked = {h.resolve() for h in hidden}

        def ignore(directory: str, names: list[str]) -> list[str]:
            return [n for n in names if (Path(directory) / n).resolve() in masked]

        shutil.copytree(source, workspace, symlinks=True, ignore=ignore)
    if os.geteuid() == 0:
        # The command runs as nobody and writes here; bwrap (root, without DAC override) must be
        # able to enter the directories to set them up.
        for root, dirs, files in os.walk(workspace):
            os.lchown(root, NOBODY, NOBODY)
            os.chmod(root, 0o755)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), NOBODY, NOBODY)
