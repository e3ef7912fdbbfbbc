"""The one interface every deployment target implements, and the placement rules they share.

Targets are always driven by digest (DESIGN.md, decision 4): a deploy names the exact bytes that
were built, tested and verified, and rollback is "deploy that digest again". The rules for what
a call means are the same for every target, so they live here as pure functions over a
`Placement` (stable digest, canary digest, canary weight, previous stable):

* ``deploy(d, w < 100)`` — run ``d`` as the canary at weight ``w`` next to the stable;
* ``deploy(d, 100)`` — ``d`` becomes the stable, the canary is removed, the old stable is kept
  as ``previous``;
* ``rollback(to)`` — the canary is removed (weight 0) and ``to`` is the stable.

Every target is idempotent: asking for the placement that is already in force does nothing
(no restart, no commit, no command), and every action that *is* taken is appended to a
per-service log so tests and operators can prove it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from signoff.errors import SignoffError
from signoff.models import DIGEST_RE, DeploymentState


class DeployError(SignoffError):
    """A deployment target could not do what was asked; `kind` becomes the ApplicationError type."""

    def __init__(self, message: str, *, kind: str = "DeployFailed", retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


@runtime_checkable
class DeploymentTarget(Protocol):
    """Where a service runs. All three methods return the placement in force afterwards."""

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState: ...

    def current(self, service: str) -> DeploymentState: ...

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState: ...


@dataclass(frozen=True)
class Placement:
    """What should serve a service. `weight` is the canary's share of traffic (0 without canary)."""

    stable: str | None = None
    canary: str | None = None
    weight: int = 0
    previous: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Placement":
        data = data or {}
        return cls(
            stable=data.get("stable") or None,
            canary=data.get("canary") or None,
            weight=int(data.get("weight") or 0),
            previous=data.get("previous") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest or ""):
        raise DeployError(
            f"{digest!r} is not an artifact digest; deployments name artifacts as sha256:<64 hex characters>",
            kind="BadDigest",
        )
    return digest


def check_weight(weight: int) -> int:
    if not 0 <= weight <= 100:
        raise DeployError(f"canary weight {weight} is outside 0..100; use a percentage", kind="BadWeight")
    return weight


def plan_deploy(now: Placement, digest: str, weight: int) -> tuple[Placement, str]:
    """The placement after ``deploy(digest, weight)``, and a note when the request was adjusted."""
    check_digest(digest)
    check_weight(weight)
    if weight >= 100:
        if now.stable == digest and now.canary is None:
            return now, ""
        previous = now.stable if now.stable not in (None, digest) else now.previous
        return Placement(stable=digest, canary=None, weight=0, previous=previous), ""
    if now.stable is None:
        return (
            Placement(stable=digest, canary=None, weight=0, previous=now.previous),
            "nothing was running, so there is no stable to run a canary next to; deployed as the stable",
        )
    if now.stable == digest:
        return replace(now, canary=None, weight=0), "this digest is already the stable; no canary needed"
    return replace(now, canary=digest, weight=weight), ""


def plan_rollback(now: Placement, to_digest: str) -> Placement:
    """The placement after ``rollback(to_digest)``."""
    check_digest(to_digest)
    previous = now.stable if now.stable not in (None, to_digest) else now.previous
    return Placement(stable=to_digest, canary=None, weight=0, previous=previous)


def state_of(service: str, placement: Placement, **detail: Any) -> DeploymentState:
    return DeploymentState(
        service=service,
        stable=placement.stable,
        canary=placement.canary,
        weight=placement.weight,
        detail={"previous": placement.previous, **detail},
    )


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ActionLog:
    """Append-only JSON lines, one per action taken (never rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, action: str, **fields: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": utc_now(), "action": action, **fields}, sort_keys=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def count(self) -> int:
        return len(self.entries())


def write_json_atomically(path: Path, document: Any) -> None:
    """Readers (the traffic generator, Prometheus) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float = 60.0) -> Iterator[None]:
    """Serialise changes to one service across activities, threads and worker processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"another deployment of this service held {path} for {timeout:.0f} seconds; try again when it finishes",
                        kind="Busy",
                        retryable=True,
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
