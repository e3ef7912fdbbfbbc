"""The worker's registry of principals: people (the approver directory), agents, gateways.

Trust configuration is the worker's (DESIGN.md, "Trust model"): both files are worker settings
(`SIGNOFF_DIRECTORY`, `SIGNOFF_AGENTS`), re-read when they change on disk, and no workflow
input or release file can choose or widen them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signoff.directory import ApproverDirectory
from signoff.errors import ConfigError
from signoff.models import AgentEntry, DirectorySnapshot, GatewayEntry, OidcIdentity, TrustSnapshot
from signoff.trust.keys import keyid, parse_public_key


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: list[AgentEntry] = Field(default_factory=list)
    gateways: list[GatewayEntry] = Field(default_factory=list)


def load_registry_file(path: Path) -> tuple[RegistryFile, str]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"agent registry {path} cannot be read; set SIGNOFF_AGENTS to the agents YAML file.") from e
    try:
        parsed = RegistryFile.model_validate(yaml.safe_load(raw) or {})
    except (yaml.YAMLError, ValidationError) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else None
        where = ".".join(str(x) for x in first["loc"]) if first else ""
        raise ConfigError(f"agent registry {path} is not valid{f' at {where}' if where else ''}; fix it against examples/agents.yaml.") from e
    return parsed, hashlib.sha256(raw).hexdigest()


def _keys(texts: list[str]) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for text in texts:
        try:
            key = parse_public_key(text)
        except ValueError:
            continue  # an unusable entry proves nothing; `signoff` never guesses
        out[keyid(key)] = key
    return out


@dataclass
class Registry:
    """Principals as they are now: what verification asks about."""

    directory: DirectorySnapshot
    agents: dict[str, AgentEntry] = field(default_factory=dict)
    gateways: dict[str, GatewayEntry] = field(default_factory=dict)
    sha256: str = ""

    @classmethod
    def from_snapshot(cls, snapshot: TrustSnapshot) -> "Registry":
        """The registry as a workflow holds it (people, groups, gateways; no agents: they never
        approve, and starts are verified by the worker)."""
        return cls(directory=snapshot.directory, gateways={g.id: g for g in snapshot.gateways}, sha256=snapshot.registry_sha256)

    def snapshot(self) -> TrustSnapshot:
        return TrustSnapshot(directory=self.directory, gateways=list(self.gateways.values()), registry_sha256=self.sha256)

    def keys_of(self, kind: str, ident: str) -> dict[str, Ed25519PublicKey]:
        if kind == "person":
            person = self.directory.people.get(ident.lower())
            return _keys(person.keys) if person else {}
        if kind == "agent":
            agent = self.agents.get(ident)
            return _keys(agent.keys) if agent else {}
        if kind == "gateway":
            gateway = self.gateways.get(ident)
            return _keys(gateway.keys) if gateway else {}
        return {}

    def oidc_of(self, kind: str, ident: str) -> list[OidcIdentity]:
        if kind == "person":
            person = self.directory.people.get(ident.lower())
            return list(person.oidc) if person else []
        if kind == "agent":
            agent = self.agents.get(ident)
            return list(agent.oidc) if agent else []
        return []

    def known(self, kind: str, ident: str) -> bool:
        if kind == "person":
            return ident.lower() in self.directory.people
        if kind == "agent":
            return ident in self.agents
        return kind == "gateway" and ident in self.gateways

    def issuers(self) -> set[str]:
        found = {o.issuer for p in self.directory.people.values() for o in p.oidc}
        return found | {o.issuer for a in self.agents.values() for o in a.oidc}


def read_agent_standings(path: Path | None) -> dict[str, dict[str, Any]]:
    """The worker's suspensions (`signoff agent suspend`/`resume`): agent id → the latest change.

    They override the registry file's `status`, which stays the operator's; every change is also a
    signed decision in the audit log. A missing or unreadable file suspends nobody."""
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


def write_agent_standing(path: Path, agent_id: str, standing: dict[str, Any]) -> dict[str, Any] | None:
    """Record an agent's new standing (atomically: a reader never sees half a file); returns the
    one it replaces. The ids of the requests carried out are kept, so a replayed request is seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _STANDINGS_LOCK:
        current = read_agent_standings(path)
        previous = current.get(agent_id)
        if previous and standing.get("control_id") in previous.get("applied", []):
            return previous  # this very request again (an activity retry): nothing changes
        applied = [*(previous or {}).get("applied", []), standing.get("control_id")][-MAX_APPLIED:]
        current[agent_id] = {**standing, "applied": applied}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(tmp, path)
    return previous


_STANDINGS_LOCK = threading.Lock()
MAX_APPLIED = 1000


class TrustStore:
    """The directory and agent registry files of this worker, parsed again only when they change."""

    def __init__(self, directory_path: Path, agents_path: Path | None, standings_path: Path | None = None) -> None:
        self.directory = ApproverDirectory(Path(directory_path))
        self.agents_path = Path(agents_path) if agents_path else None
        self.standings_path = standings_path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._parsed: tuple[RegistryFile, str] | None = None

    def _registry_file(self) -> tuple[RegistryFile, str]:
        if self.agents_path is None or not self.agents_path.exists():
            return RegistryFile(), ""
        st = self.agents_path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._parsed is None or stamp != self._stamp:
                self._parsed = load_registry_file(self.agents_path)
                self._stamp = stamp
            return self._parsed

    def current(self) -> Registry:
        snapshot = self.directory.snapshot()
        parsed, sha = self._registry_file()
        standings = read_agent_standings(self.standings_path)
        agents = {a.id: _with_standing(a, standings.get(a.id)) for a in parsed.agents}
        return Registry(
            directory=snapshot,
            agents=agents,
            gateways={g.id: g for g in parsed.gateways},
            sha256=sha,
        )


def _with_standing(agent: AgentEntry, standing: dict[str, str] | None) -> AgentEntry:
    if not standing or standing.get("status") not in ("active", "suspended"):
        return agent
    return agent.model_copy(update={"status": standing["status"]})
