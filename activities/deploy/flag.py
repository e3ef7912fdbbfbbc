"""The `flag` deployment target: the new code path is exposed by a feature flag, not by traffic.

The flag is written in flagd's flag-definition format (validated against flagd's published JSON
schema, vendored in ``schemas/``), so flagd, the flagd file provider of any OpenFeature SDK, or
the flagd operator can serve it unchanged::

    {"$schema": "https://flagd.dev/schema/v0/flags.json",
     "flags": {"checkout-new-path": {
        "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"fractional": [{"var": "targetingKey"}, ["on", 25], ["off", 75]]},
        "metadata": {"signoffCanary": "sha256:…", "signoffStable": "sha256:…", …}}}}

A canary weight ``w`` becomes the fractional split (``w`` % of targeting keys get ``on``);
promotion is ``defaultVariant: on`` without targeting (100 %) and rollback is
``defaultVariant: off`` (0 %), written first and at once, before anything slower happens. The
placement (stable, canary, previous, release) is kept in the flag's own metadata, so the file
alone says what serves. Other flags in the file are left as they are.

Settings: ``flag`` (key, default ``<service>-new-path``), ``file`` (a ``.json`` file inside the
worker's flags directory, ``SIGNOFF_FLAGS_DIR``, default ``<state_dir>/flags``; default name
``<service>.flagd.json``) and ``runs_on: local`` to keep the build itself
running through the local target with the flag file handed to it (``--flags FILE --flag KEY``):
a new build starts dark (the flag at 0 %) and then the flag exposes it. One flag serves a
service's successive releases, so each build gates its change on that flag.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from activities.deploy.base import (
    ActionLog,
    DeployError,
    Placement,
    file_lock,
    plan_deploy,
    plan_rollback,
    state_of,
    write_json_atomically,
)
from activities.deploy.local import LocalTarget
from signoff.config import Settings
from signoff.models import DeploymentState

SCHEMAS = Path(__file__).resolve().parent / "schemas"
FLAGS_SCHEMA_ID = "https://flagd.dev/schema/v0/flags.json"
TARGETING_SCHEMA_ID = "https://flagd.dev/schema/v0/targeting.json"
METADATA = {"stable": "signoffStable", "canary": "signoffCanary", "previous": "signoffPrevious", "release": "signoffRelease"}


@cache
def flags_validator() -> jsonschema.protocols.Validator:
    """flagd's schema; its ``./targeting.json`` reference resolves to the vendored copy."""
    flags, targeting = (Resource.from_contents(json.loads((SCHEMAS / f"flagd-{name}.json").read_text())) for name in ("flags", "targeting"))
    # Draft 7 ignores a root `$id` beside `$ref`, so the relative reference is registered as written too.
    registry: Registry = Registry().with_resources([(FLAGS_SCHEMA_ID, flags), (TARGETING_SCHEMA_ID, targeting), ("./targeting.json", targeting)])
    return jsonschema.Draft7Validator(flags.contents, registry=registry)


def validate_flags(document: dict[str, Any], where: str) -> None:
    errors = sorted(flags_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        at = ".".join(str(p) for p in errors[0].absolute_path) or "the document"
        raise DeployError(
            f"{where} is not a valid flagd flag definition ({at}: {errors[0].message[:200]}); fix the flag file",
            kind="InvalidFlag",
        )


def targeting_for(weight: int) -> dict[str, Any]:
    """``defaultVariant`` and ``targeting`` for ``weight`` % on (flagd's fractional operator
    hashes the targeting key, so one user keeps one answer while the weight holds)."""
    if weight <= 0:
        return {"defaultVariant": "off"}
    if weight >= 100:
        return {"defaultVariant": "on"}
    return {"defaultVariant": "off", "targeting": {"fractional": [{"var": "targetingKey"}, ["on", weight], ["off", 100 - weight]]}}


def weight_of(flag: dict[str, Any]) -> int:
    """The share of evaluations that get ``on`` (what signoff wrote; other targeting is 0 or 100)."""
    fractional = (flag.get("targeting") or {}).get("fractional")
    if isinstance(fractional, list):
        for bucket in fractional:
            if isinstance(bucket, list) and bucket and bucket[0] == "on":
                return int(bucket[1]) if len(bucket) > 1 else 0
    return 100 if flag.get("defaultVariant") == "on" and flag.get("state", "ENABLED") == "ENABLED" else 0


class FlagTarget:
    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.settings = settings
        self.flag_template = str(options.get("flag") or "{service}-new-path")
        self.flags_dir = (settings.flags_dir or Path(settings.state_dir) / "flags").resolve()
        self.file_template = str(options.get("file") or "{service}.flagd.json")
        self.root = Path(settings.state_dir) / "deploy" / "flag"
        runs_on = options.get("runs_on")
        if runs_on not in (None, "local"):
            raise DeployError(f"deploy.settings.runs_on {runs_on!r} is not supported by the flag target; use local or leave it out", kind="BadTargetSettings")
        self.runs_on = runs_on

    def flag_key(self, service: str) -> str:
        return self.flag_template.replace("{service}", service)

    def flag_file(self, service: str) -> Path:
        """The flag file, inside the worker's flags directory: a release file names a file
        there, never a path elsewhere on the worker (which the target would then write)."""
        path = (self.flags_dir / self.file_template.replace("{service}", service)).resolve()
        if not path.is_relative_to(self.flags_dir) or path.suffix not in (".json",):
            raise DeployError(
                f"deploy.settings.file {self.file_template!r} is not a .json file inside the worker's flags directory {self.flags_dir}; "
                "name a file there (an operator sets the directory with SIGNOFF_FLAGS_DIR)",
                kind="BadTargetSettings",
            )
        return path

    def actions(self, service: str) -> ActionLog:
        return ActionLog(self.root / f"{service}.actions.jsonl")

    def _local(self, service: str) -> LocalTarget:
        return LocalTarget(self.settings, {"flags": str(self.flag_file(service)), "flag": self.flag_key(service)})

    # the flag file -------------------------------------------------------------

    def _read(self, service: str) -> dict[str, Any]:
        path = self.flag_file(service)
        if not path.exists():
            return {"$schema": FLAGS_SCHEMA_ID, "flags": {}}
        try:
            document = json.loads(path.read_text())
        except ValueError as e:
            raise DeployError(f"{path} is not JSON ({e}); fix the flag file", kind="InvalidFlag") from e
        if not isinstance(document, dict):
            raise DeployError(f"{path} is not a flagd flag definition (a JSON object); fix the flag file", kind="InvalidFlag")
        validate_flags(document, str(path))
        return document

    def _flag(self, service: str, document: dict[str, Any]) -> dict[str, Any]:
        return (document.get("flags") or {}).get(self.flag_key(service)) or {}

    def _placement(self, flag: dict[str, Any]) -> Placement:
        meta = flag.get("metadata") or {}
        weight = weight_of(flag)
        canary = meta.get(METADATA["canary"]) if 0 < weight < 100 else None
        return Placement(stable=meta.get(METADATA["stable"]), canary=canary, weight=weight if canary else 0, previous=meta.get(METADATA["previous"]))

    def _write(self, service: str, document: dict[str, Any], want: Placement, weight: int, release_id: str) -> None:
        """The flag at ``weight`` % on, with ``want`` recorded in its metadata."""
        old = self._flag(service, document)
        meta = {k: v for k, v in (old.get("metadata") or {}).items() if k not in METADATA.values()}
        values = {**want.to_dict(), "release": release_id or None}
        meta.update({METADATA[k]: values[k] for k in METADATA if values[k]})
        flag = {k: v for k, v in old.items() if k not in ("targeting", "defaultVariant")}
        flag.update(state="ENABLED", variants={"on": True, "off": False}, metadata=meta, **targeting_for(weight))
        document.setdefault("flags", {})[self.flag_key(service)] = flag
        validate_flags(document, str(self.flag_file(service)))  # never write what flagd would refuse
        write_json_atomically(self.flag_file(service), document)
        self.actions(service).append("flag", flag=self.flag_key(service), weight=weight, release_id=release_id)

    def _result(self, service: str, placement: Placement, **detail: Any) -> DeploymentState:
        return state_of(service, placement, flag=self.flag_key(service), file=str(self.flag_file(service)), actions=self.actions(service).count(), **detail)

    # the interface -----------------------------------------------------------

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            document = self._read(service)
            now = self._placement(self._flag(service, document))
            want, note = plan_deploy(now, digest, weight)
            if want != now:
                if self.runs_on and now.canary != digest:
                    # The new build starts dark: the flag is off before the build replaces the old one.
                    self._write(service, document, replace(now, canary=None, weight=0), 0, release_id)
                    self._local(service).deploy(service, digest, 100, release_id=release_id)
                self._write(service, document, want, want.weight if want.canary else 100, release_id)
            return self._result(service, want, **({"note": note} if note else {}))

    def current(self, service: str) -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            if self.runs_on:
                self._local(service).current(service)  # restarts the build if its process died
            return self._result(service, self._placement(self._flag(service, self._read(service))))

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            document = self._read(service)
            now = self._placement(self._flag(service, document))
            want = plan_rollback(now, to_digest)
            if want != now or weight_of(self._flag(service, document)) > 0:
                self._write(service, document, want, 0, release_id)  # 0 % first, at once
                if self.runs_on:
                    self._local(service).rollback(service, to_digest, release_id=release_id)
            return self._result(service, want)
