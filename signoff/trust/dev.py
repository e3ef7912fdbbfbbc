"""The dev stack's principals: a key for every example person and agent, and the gateway's.

`signoff dev` (and the test suite) call `provision_dev`: it writes dev keys under
``<state>/dev/keys/`` and copies of the approver directory and agent registry with those public
keys registered, and marks the state directory as a dev stack, so `Settings.from_env` there
uses the dev files and the CLI signs `--as EMAIL` with the person's dev key. Nothing here is
used where `signoff dev` did not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from signoff.trust.credentials import dev_key_path
from signoff.trust.keys import ensure_key, public_pem

MARKER = "stack.json"
GATEWAY_ID = "gateway"


@dataclass(frozen=True)
class DevTrust:
    directory: Path
    agents: Path
    gateway_key: Path


def dev_marker(state_dir: Path) -> Path:
    return Path(state_dir) / "dev" / MARKER


def read_dev_trust(state_dir: Path) -> DevTrust | None:
    marker = dev_marker(state_dir)
    try:
        doc = json.loads(marker.read_text())
        return DevTrust(Path(doc["directory"]), Path(doc["agents"]), Path(doc["gateway_key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _with_key(entry: dict[str, Any], pem: str) -> dict[str, Any]:
    keys = [k for k in entry.get("keys") or [] if k.strip() != pem.strip()]
    return {**entry, "keys": [*keys, pem]}


def with_dev_keys(directory: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    """A directory document whose people have their dev keys (made as needed) registered."""
    people = []
    for person in directory.get("people") or []:
        key = ensure_key(dev_key_path(Path(state_dir), "person", str(person["email"])))
        people.append(_with_key(person, public_pem(key.public_key())))
    return {**directory, "people": people}


def provision_dev(state_dir: Path, *, directory_src: Path, agents_src: Path | None) -> DevTrust:
    """Idempotent: existing dev keys are kept, the dev files are rewritten from the sources."""
    state_dir = Path(state_dir)
    dev = state_dir / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    directory = with_dev_keys(yaml.safe_load(Path(directory_src).read_text()) or {}, state_dir)
    registry: dict[str, Any] = yaml.safe_load(Path(agents_src).read_text()) or {} if agents_src and Path(agents_src).exists() else {}
    agents = []
    for agent in registry.get("agents") or []:
        key = ensure_key(dev_key_path(state_dir, "agent", str(agent["id"])))
        agents.append(_with_key(agent, public_pem(key.public_key())))
    registry["agents"] = agents
    gateway_key_path = dev / "keys" / "gateway.ed25519"
    gateway = ensure_key(gateway_key_path)
    others = [g for g in registry.get("gateways") or [] if g.get("id") != GATEWAY_ID]
    registry["gateways"] = [*others, {"id": GATEWAY_ID, "keys": [public_pem(gateway.public_key())]}]
    trust = DevTrust(dev / "approvers.yaml", dev / "agents.yaml", gateway_key_path)
    header = "# Written by `signoff dev` from {src}: the same principals, with their dev keys registered.\n"
    trust.directory.write_text(header.format(src=directory_src) + yaml.safe_dump(directory, sort_keys=False))
    trust.agents.write_text(header.format(src=agents_src) + yaml.safe_dump(registry, sort_keys=False))
    dev_marker(state_dir).write_text(
        json.dumps({"directory": str(trust.directory), "agents": str(trust.agents), "gateway_key": str(trust.gateway_key)}, indent=2) + "\n"
    )
    return trust
