"""Runbook definitions, their certification lock, and parameter handling.

A runbook is a YAML file in ``runbooks/`` that an on-call engineer runs from chat at 3 a.m.
Nothing in it is free-form: parameters are typed by a JSON Schema, steps are drawn from a
fixed registry of actions (`ACTIONS`), checks are PromQL with structured conditions, and the
only way to run a script is to pin its sha256. A runbook runs only if the sha256 of its bytes
matches an entry in ``runbooks/certified.lock`` whose ed25519 signature verifies with a trusted
certifier key — so an edit of one byte after certification is refused.

Trust: each certifier signs their lock entry with their *own* key, and an entry counts only if
its signature verifies with a key the approver directory registers for the person it names.
The two-person rule counts distinct registered people with distinct keys, so one key cannot
certify as two people. Private keys never live in the repository.

Workflows import this module through the sandbox: it has no side effects at import time and
loads jsonschema/cryptography lazily.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from signoff.errors import Refused, SignoffError
from signoff.models import AnalysisSpec, Condition, DeploySpec, GateSpec, Open, Strict, check_email

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SERVICE_PATTERN = NAME_PATTERN
FLAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
LOCK_FORMAT = 1
SIGNATURE_DOMAIN = b"signoff/runbook-certification/v1\n"

ActionName = Literal["scale", "restart", "rollback", "set_weight", "toggle_flag", "wait", "notify", "run_script"]

# `{{ params.NAME }}` and nothing else: no filters, no expressions, nothing evaluated.
TEMPLATE_TOKEN = re.compile(r"\{\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class RunbookError(SignoffError):
    """A runbook file is missing, not YAML, or does not match the schema."""


class RunbookParameterError(Refused):
    """A parameter given to `runbook run` is unknown, missing or has a bad value."""


class UnknownRunbook(Refused):
    """No runbook with that name exists in the runbook directory."""


class NotCertified(Refused):
    """The runbook's bytes match no trusted certification entry (edited, uncertified, forged)."""


# --------------------------------------------------------------------------- action arguments


class ScaleArgs(Strict):
    service: str = Field(pattern=SERVICE_PATTERN)
    replicas: int = Field(ge=1, le=10)


class RestartArgs(Strict):
    service: str = Field(pattern=SERVICE_PATTERN)


class RollbackArgs(Strict):
    service: str = Field(pattern=SERVICE_PATTERN)
    to: str = Field(
        default="previous",
        description='"previous" (the previous stable digest), "last-good" (the last release that succeeded with verified provenance, re-verified) or a sha256:… digest',
    )

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        if v not in ("previous", "last-good") and not re.match(r"^sha256:[0-9a-f]{64}$", v):
            raise ValueError('must be "previous", "last-good" or a digest sha256:<64 hex characters>')
        return v


class SetWeightArgs(Strict):
    service: str = Field(pattern=SERVICE_PATTERN)
    weight: int = Field(ge=0, le=100)


class ToggleFlagArgs(Strict):
    service: str = Field(pattern=SERVICE_PATTERN)
    flag: str = Field(pattern=FLAG_PATTERN)
    enabled: bool


class WaitArgs(Strict):
    seconds: float = Field(ge=0, le=3600)


class NotifyArgs(Strict):
    text: str = Field(min_length=1, max_length=3000)
    mention: list[str] = Field(default_factory=list)


class RunScriptArgs(Strict):
    path: str = Field(description="script path relative to the runbook's directory")
    sha256: str = Field(description="the pinned sha256 (hex) of the script's bytes")
    args: list[str] = Field(default_factory=list)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.removeprefix("sha256:")
        if not HEX64.match(v):
            raise ValueError("must be the script's sha256 as 64 lowercase hex characters")
        return v

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or not v:
            raise ValueError("must be a path inside the runbook directory (relative, without ..)")
        return v


ACTION_ARGS: dict[str, type[Strict]] = {
    "scale": ScaleArgs,
    "restart": RestartArgs,
    "rollback": RollbackArgs,
    "set_weight": SetWeightArgs,
    "toggle_flag": ToggleFlagArgs,
    "wait": WaitArgs,
    "notify": NotifyArgs,
    "run_script": RunScriptArgs,
}
ACTIONS: tuple[str, ...] = tuple(ACTION_ARGS)
# Values that must be literal in the file: the pin is the point of run_script.
LITERAL_ONLY: dict[str, set[str]] = {"run_script": {"path", "sha256"}}


# --------------------------------------------------------------------------- the document


class RunbookCheck(Strict):
    """A pre- or post-check: PromQL whose value must satisfy `condition` (else the check fails).

    Empty results, NaN or an unreachable Prometheus are inconclusive, which fails the check too.
    """

    name: str = Field(pattern=NAME_PATTERN)
    query: str = Field(min_length=1)
    condition: Condition
    interval: timedelta = timedelta(seconds=5)
    count: int = Field(default=1, ge=1, le=60)
    initial_delay: timedelta = timedelta(0)

    def to_analysis(self, params: dict[str, Any]) -> AnalysisSpec:
        """The canary machinery's AnalysisSpec for this check, with parameters substituted."""
        return AnalysisSpec(
            query=str(render_value(self.query, params)),
            interval=self.interval,
            count=self.count,
            initial_delay=self.initial_delay,
            success=self.condition,
            failure_limit=0,
            inconclusive_limit=0,
        )


class RunbookStep(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    action: ActionName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: timedelta = Field(default=timedelta(minutes=2), description="per attempt")
    retries: int = Field(default=0, ge=0, le=10, description="extra attempts after a failure")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= v <= timedelta(hours=2):
            raise ValueError("must be between 1 second and 2 hours")
        return v


class Runbook(Strict):
    """What a certified runbook file contains (YAML)."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")
    description: str = Field(min_length=1)
    owners: list[str] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    allowed_groups: list[str] = Field(min_length=1, description="directory groups whose members may run it")
    gate: GateSpec | None = None
    deploy: DeploySpec = Field(default_factory=DeploySpec, description="the deployment target the steps act on")
    prechecks: list[RunbookCheck] = Field(default_factory=list)
    steps: list[RunbookStep] = Field(min_length=1)
    postchecks: list[RunbookCheck] = Field(default_factory=list)

    @field_validator("owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        return [check_email(x) for x in v]

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(v)
        except SchemaError as e:
            raise ValueError(f"is not a valid JSON Schema ({e.message})") from None
        if v.get("type") != "object":
            raise ValueError('must be a JSON Schema with "type": "object"')
        for pname, prop in (v.get("properties") or {}).items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", pname):
                raise ValueError(f"names a parameter {pname!r}; use letters, digits and _")
            if not isinstance(prop, dict) or prop.get("type") not in ("string", "integer", "number", "boolean"):
                raise ValueError(f"gives parameter {pname!r} no scalar type; use string, integer, number or boolean")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Runbook":
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique, but {', '.join(duplicates)} repeats")
        known = set(self.param_names)
        for where, value in self._templated_fields():
            for ref in template_refs(value):
                if ref not in known:
                    raise ValueError(f"{where} refers to parameter {ref!r}, which parameters.properties does not define")
        sample = self.sample_params()
        for i, step in enumerate(self.steps):
            for literal in LITERAL_ONLY.get(step.action, set()):
                if template_refs(step.with_.get(literal)):
                    raise ValueError(f"steps.{i}.with.{literal} must be written literally, not from a parameter")
            try:
                ACTION_ARGS[step.action].model_validate(render_value(step.with_, sample))
            except ValidationError as e:
                raise ValueError(f"steps.{i}.with: {describe_validation_error(e)}") from None
        return self

    @property
    def param_names(self) -> list[str]:
        return list((self.parameters.get("properties") or {}).keys())

    def _templated_fields(self) -> Iterator[tuple[str, Any]]:
        for i, step in enumerate(self.steps):
            yield f"steps.{i}.with", step.with_
        for kind in ("prechecks", "postchecks"):
            for i, check in enumerate(getattr(self, kind)):
                yield f"{kind}.{i}.query", check.query

    def sample_params(self) -> dict[str, Any]:
        """A valid-looking value per parameter, used to type-check step arguments at load time."""
        out: dict[str, Any] = {}
        for pname, prop in (self.parameters.get("properties") or {}).items():
            if "default" in prop:
                out[pname] = prop["default"]
            elif prop.get("enum"):
                out[pname] = prop["enum"][0]
            else:
                out[pname] = {"integer": max(1, int(prop.get("minimum", 1))), "number": float(prop.get("minimum", 1.0)), "boolean": True}.get(
                    prop["type"], "sample"
                )
        return out


class RunbookFile(Open):
    """A loaded runbook: its validated content and the sha256 of the exact bytes read."""

    path: str
    sha256: str
    spec: Runbook


class CertificationEntry(Open):
    """One line of the certification lock. `signature` covers every other field."""

    name: str
    version: str
    sha256: str
    certified_by: str
    certified_at: datetime
    keyid: str
    signature: str
    co_certified_by: list[str] = Field(default_factory=list, exclude=True, description="other certifiers of the same bytes (not stored)")

    def signed_fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "certified_by": self.certified_by,
            "certified_at": _iso(self.certified_at),
            "keyid": self.keyid,
        }


class RenderedStep(Open):
    """A step with its arguments rendered from the run's parameters and validated."""

    name: str
    action: ActionName
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: timedelta = timedelta(minutes=2)
    retries: int = 0


class StepRequest(Open):
    """Input of the `run_runbook_step` activity."""

    run_id: str
    runbook: str
    version: str = ""
    step: RenderedStep
    dry_run: bool = False
    runbook_dir: str = Field(default="", description="where run_script paths resolve")
    target: DeploySpec = Field(default_factory=DeploySpec)


class StepResult(Open):
    """What a step did (or, in a dry run, would do). `changed` is False for dry runs."""

    name: str
    action: str
    state: Literal["succeeded", "dry_run"]
    detail: str
    changed: bool = False
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(default=None, description="notify: the message the workflow posts")


class RunbookCheckSpec(Open):
    """A pre-/post-check ready for the `run_analysis` activity (parameters substituted)."""

    name: str
    spec: AnalysisSpec


class PrepareRunbook(Open):
    """Input of the `prepare_runbook` activity: what the person asked for."""

    run_id: str
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict, description="k=v strings from chat/CLI, or typed values from agents")


class PreparedRunbook(Open):
    """A certified runbook with validated parameters and rendered steps — or why it is refused.

    Refusal is a normal outcome (phase `refused`), not an exception, so the workflow records
    the reason and alerts.
    """

    refused: str | None = Field(default=None, description="one sentence; None when the runbook may run")
    refusal_kind: Literal["unknown", "invalid", "not_certified", "bad_parameters"] | None = None
    name: str = ""
    version: str = ""
    sha256: str = ""
    certified_by: str | None = None
    certified_at: datetime | None = None
    allowed_groups: list[str] = Field(default_factory=list)
    gate: GateSpec | None = None
    target: DeploySpec = Field(default_factory=DeploySpec)
    runbook_dir: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    prechecks: list[RunbookCheckSpec] = Field(default_factory=list)
    steps: list[RenderedStep] = Field(default_factory=list)
    postchecks: list[RunbookCheckSpec] = Field(default_factory=list)


def prepare(request: PrepareRunbook, settings: Any) -> PreparedRunbook:
    """Everything the workflow needs before the first step, or the refusal (never raises Refused)."""
    try:
        loaded, entry = certified_runbook(request.runbook, settings)
    except UnknownRunbook as e:
        return PreparedRunbook(refused=str(e), refusal_kind="unknown", name=request.runbook)
    except NotCertified as e:
        return PreparedRunbook(refused=str(e), refusal_kind="not_certified", name=request.runbook)
    except RunbookError as e:
        return PreparedRunbook(refused=str(e), refusal_kind="invalid", name=request.runbook)
    spec = loaded.spec
    base = PreparedRunbook(
        name=spec.name,
        version=spec.version,
        sha256=loaded.sha256,
        certified_by=entry.certified_by,
        certified_at=entry.certified_at,
        allowed_groups=spec.allowed_groups,
        gate=spec.gate,
        target=spec.deploy,
        runbook_dir=str(Path(loaded.path).parent),
    )
    try:
        params = validate_params(spec, request.params)
        steps = render_steps(spec, params)
        prechecks = [RunbookCheckSpec(name=c.name, spec=c.to_analysis(params)) for c in spec.prechecks]
        postchecks = [RunbookCheckSpec(name=c.name, spec=c.to_analysis(params)) for c in spec.postchecks]
    except RunbookParameterError as e:
        return base.model_copy(update={"refused": str(e), "refusal_kind": "bad_parameters"})
    return base.model_copy(update={"params": params, "steps": steps, "prechecks": prechecks, "postchecks": postchecks})


def catalogue(settings: Any) -> list[dict[str, Any]]:
    """`runbook list`: every runbook file with its parameters and whether it may run, and why not."""
    lock = Path(settings.runbook_dir) / "certified.lock"
    out: list[dict[str, Any]] = []
    for path in list_runbook_files(settings.runbook_dir):
        try:
            loaded = load_runbook(path)
        except SignoffError as e:
            out.append({"name": path.stem, "file": str(path), "certified": False, "reason": str(e)})
            continue
        item: dict[str, Any] = {
            "name": loaded.spec.name,
            "version": loaded.spec.version,
            "description": loaded.spec.description,
            "allowed_groups": loaded.spec.allowed_groups,
            "parameters": {
                k: {key: v for key, v in prop.items() if key in ("type", "enum", "default", "description", "minimum", "maximum")}
                for k, prop in (loaded.spec.parameters.get("properties") or {}).items()
            },
            "required": list(loaded.spec.parameters.get("required") or []),
            "gated": loaded.spec.gate is not None,
            "sha256": loaded.sha256,
            "file": str(path),
        }
        try:
            from signoff.directory import load_directory

            entry = check_loaded(loaded, lock, directory=load_directory(settings.directory_path), policy_dir=settings.policy_dir)
            item.update(certified=True, certified_by=entry.certified_by, certified_at=_iso(entry.certified_at))
        except Refused as e:
            item.update(certified=False, reason=str(e))
        out.append(item)
    return out


# --------------------------------------------------------------------------- helpers


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def describe_validation_error(error: ValidationError) -> str:
    """The first pydantic error as "field.path: message" (one clause, for one sentence)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "is not a known field"
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"


def template_refs(value: Any) -> list[str]:
    """Parameter names referenced by `{{ params.NAME }}` tokens anywhere inside `value`."""
    if isinstance(value, str):
        return TEMPLATE_TOKEN.findall(value)
    if isinstance(value, dict):
        return [r for v in value.values() for r in template_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in template_refs(v)]
    return []


def render_value(value: Any, params: dict[str, Any]) -> Any:
    """Substitute `{{ params.NAME }}` tokens; nothing is evaluated.

    A string that is exactly one token becomes the parameter's typed value (an integer stays an
    integer); tokens inside a longer string are replaced by the value's text. Any other use of
    ``{{``/``}}`` is an error, so a typo never passes through as literal text.
    """
    if isinstance(value, str):
        whole = TEMPLATE_TOKEN.fullmatch(value.strip())
        if whole:
            return params[whole.group(1)]
        rendered = TEMPLATE_TOKEN.sub(lambda m: _text(params[m.group(1)]), value)
        leftover = TEMPLATE_TOKEN.sub("", value)
        if "{{" in leftover or "}}" in leftover:
            raise ValueError(f"{value!r} uses a template other than {{{{ params.NAME }}}}")
        return rendered
    if isinstance(value, dict):
        return {k: render_value(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, params) for v in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def content_sha256(path: Path | str) -> str:
    """sha256 (hex) of the file's exact bytes: what certification pins."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- loading


def load_runbook(path: Path | str) -> RunbookFile:
    """Read and validate one runbook file; errors name the file and the field in one sentence."""
    import yaml

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise UnknownRunbook(f"there is no runbook file at {path}; check the path or run `signoff runbook list`.") from e
    except OSError as e:
        raise RunbookError(f"cannot read runbook {path} ({e.strerror}); check its permissions.") from e
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunbookError(f"{path} is not valid YAML{where}; fix the syntax and try again.") from e
    if not isinstance(document, dict):
        raise RunbookError(f"{path} must be a YAML mapping with name, version, steps, …; see runbooks/restart-service.yaml.")
    try:
        spec = Runbook.model_validate(document)
    except ValidationError as e:
        raise RunbookError(f"{path}: {describe_validation_error(e)}; fix that field and try again.") from e
    if spec.name != path.stem:
        raise RunbookError(f"{path}: name is {spec.name!r} but the file is {path.name}; name the file {spec.name}.yaml.")
    return RunbookFile(path=str(path.resolve()), sha256=hashlib.sha256(data).hexdigest(), spec=spec)


def runbook_path(name: str, runbook_dir: Path | str) -> Path:
    """The file of runbook `name` in `runbook_dir`; `UnknownRunbook` if there is none."""
    if not re.match(NAME_PATTERN, name or ""):
        raise UnknownRunbook(f"{name!r} is not a runbook name; run `signoff runbook list` to see the runbooks.")
    directory = Path(runbook_dir)
    for suffix in (".yaml", ".yml"):
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in list_runbook_files(directory))) or "none"
    raise UnknownRunbook(f"there is no runbook named {name!r} in {directory} (known: {known}); check the name.")


def list_runbook_files(runbook_dir: Path | str) -> list[Path]:
    directory = Path(runbook_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


# --------------------------------------------------------------------------- parameters


def validate_params(runbook: Runbook, params: dict[str, Any]) -> dict[str, Any]:
    """Turn ``key=value`` strings into the schema's types, apply defaults, validate.

    Raises `RunbookParameterError` naming the first bad parameter, with what it accepts.
    """
    from jsonschema import Draft202012Validator

    schema = dict(runbook.parameters)
    schema.setdefault("additionalProperties", False)
    props: dict[str, Any] = schema.get("properties") or {}
    typed: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in props:
            if schema.get("additionalProperties") is False:
                known = ", ".join(sorted(props)) or "none"
                raise RunbookParameterError(f"runbook {runbook.name} has no parameter {key!r} (it takes: {known}); remove it or fix the name.")
            typed[key] = raw
            continue
        typed[key] = _convert(runbook.name, key, raw, props[key])
    for key, prop in props.items():
        if key not in typed and "default" in prop:
            typed[key] = prop["default"]
    errors = sorted(Draft202012Validator(schema).iter_errors(typed), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        if error.absolute_path:
            key = str(error.absolute_path[0])
            prop = props.get(key, {})
            accepts = f"one of {', '.join(map(str, prop['enum']))}" if prop.get("enum") else f"a valid {prop.get('type', 'value')}"
            raise RunbookParameterError(
                f"parameter {key}={typed.get(key)!r} is not accepted by runbook {runbook.name} ({error.message}); give {accepts}."
            )
        if error.validator == "required":
            missing = [k for k in error.validator_value if k not in typed]
            raise RunbookParameterError(f"runbook {runbook.name} needs parameter {missing[0]}; add -p {missing[0]}=VALUE.")
        raise RunbookParameterError(f"the parameters for runbook {runbook.name} are invalid ({error.message}); check them.")
    return typed


def _convert(runbook: str, key: str, raw: Any, prop: dict[str, Any]) -> Any:
    if not isinstance(raw, str):
        return raw
    kind = prop.get("type")
    try:
        if kind == "integer":
            return int(raw.strip())
        if kind == "number":
            return float(raw.strip())
        if kind == "boolean":
            lowered = raw.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise RunbookParameterError(f"parameter {key}={raw!r} of runbook {runbook} is not a {kind}; give a {kind} value.") from None
    return raw


def render_steps(runbook: Runbook, params: dict[str, Any]) -> list[RenderedStep]:
    """Every step with its arguments rendered from validated `params` and type-checked."""
    out: list[RenderedStep] = []
    for i, step in enumerate(runbook.steps):
        try:
            args = ACTION_ARGS[step.action].model_validate(render_value(step.with_, params))
        except ValidationError as e:
            raise RunbookParameterError(
                f"step {step.name} of runbook {runbook.name} cannot use these parameters ({describe_validation_error(e)}); check the values."
            ) from e
        out.append(
            RenderedStep(name=step.name, action=step.action, args=args.model_dump(mode="json"), timeout=step.timeout, retries=step.retries)
        )
    return out


# --------------------------------------------------------------------------- keys


def public_key_pem(public_key: Any) -> str:
    from signoff.trust.keys import public_pem

    return public_pem(public_key)


def keyid(public_key: Any) -> str:
    """sha256 of the raw public key (the same keyid `signoff keys init` prints)."""
    from signoff.trust.keys import keyid as _keyid

    return _keyid(public_key)


def certifier_keys(directory: Any) -> dict[str, dict[str, Any]]:
    """email → {keyid → public key}: the keys the approver directory registers for each person."""
    from signoff.trust.registry import Registry

    registry = Registry(directory=directory)
    return {email: registry.keys_of("person", email) for email in directory.people}


# --------------------------------------------------------------------------- the lock


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def read_lock(lock_path: Path | str) -> list[CertificationEntry]:
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return []
    try:
        document = json.loads(lock_path.read_text())
        return [CertificationEntry.model_validate(e) for e in document.get("entries", [])]
    except (ValueError, AttributeError, ValidationError) as e:
        raise NotCertified(f"the certification lock {lock_path} is not readable JSON of signed entries; restore it from version control.") from e


def _write_lock(lock_path: Path, entries: list[CertificationEntry]) -> None:
    document = {
        "format": LOCK_FORMAT,
        "comment": "Written by `signoff runbook certify`; every entry is signed (ed25519) by its certifier's own key, registered in the approver directory. Do not edit by hand.",
        "entries": [
            {**e.signed_fields(), "signature": e.signature}
            for e in sorted(entries, key=lambda e: (e.name, e.certified_at, e.version))
        ],
    }
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=lock_path.parent, prefix=f".{lock_path.name}.")
    os.fchmod(fd, 0o644)  # committed and read by everyone; it holds no secret
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, lock_path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Two certifications at once must not lose one of them."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # The directory itself is the mutex (the lock file is replaced on write, and a guard file
    # would be one more file in runbooks/ to keep out of version control).
    fd = os.open(lock_path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def verify_entry(entry: CertificationEntry, trusted: dict[str, dict[str, Any]]) -> bool:
    """The entry's signature verifies with a key registered for the person it names."""
    from cryptography.exceptions import InvalidSignature

    key = trusted.get(entry.certified_by.lower(), {}).get(entry.keyid)
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(entry.signature), SIGNATURE_DOMAIN + _canonical(entry.signed_fields()))
    except (InvalidSignature, ValueError):
        return False
    return True


def certify(
    path: Path | str,
    by_email: str,
    lock_path: Path | str,
    *,
    key_path: Path | str,
    now: datetime | None = None,
) -> CertificationEntry:
    """Record the runbook's content hash, version, certifier and time in the lock, signed with
    the certifier's own key (`key_path`: theirs, registered for them in the approver directory).

    Certifying identical bytes again as the same person returns the existing entry; a second
    person certifying the same bytes adds their own signed entry (the two-person rule: the
    policy in policies/runbook.rego says how many distinct certifiers a runbook needs). A version
    number names one content forever: certifying different bytes under a version already
    certified is refused, so "v3 is certified" always means the same file.
    """
    try:
        email = check_email(by_email)
    except ValueError as e:
        raise Refused(f"{by_email!r} is not an email address; certify --as the certifier's canonical email.") from e
    from signoff.trust.keys import load_private_key

    loaded = load_runbook(path)
    lock = Path(lock_path)
    key = load_private_key(key_path)
    with _locked(lock):
        entries = read_lock(lock)
        for entry in entries:
            if entry.name == loaded.spec.name and entry.sha256 == loaded.sha256:
                if entry.certified_by == email:
                    return entry
                continue  # another person certified these bytes: this is a co-certification
            if entry.name == loaded.spec.name and entry.version == loaded.spec.version:
                raise Refused(
                    f"runbook {entry.name} version {entry.version} is already certified with different content "
                    f"(sha256 {entry.sha256[:12]}…); bump version in {path} and certify again."
                )
        at = (now or datetime.now(timezone.utc)).replace(microsecond=0)
        unsigned = CertificationEntry(
            name=loaded.spec.name,
            version=loaded.spec.version,
            sha256=loaded.sha256,
            certified_by=email,
            certified_at=at,
            keyid=keyid(key.public_key()),
            signature="",
        )
        signature = key.sign(SIGNATURE_DOMAIN + _canonical(unsigned.signed_fields()))
        entry = unsigned.model_copy(update={"signature": base64.b64encode(signature).decode("ascii")})
        _write_lock(lock, [*entries, entry])
        return entry


def check_certified(
    path: Path | str,
    lock_path: Path | str,
    *,
    directory: Any,
    policy_dir: Path | str | None = None,
) -> CertificationEntry:
    """The trusted lock entry matching the runbook's current bytes, or `Refused` saying why.

    Refusals: the file does not exist (unknown), its name was never certified (uncertified),
    its bytes differ from what was certified for its version (edited), or the matching entry's
    signature does not verify with a trusted certifier key (forged or untrusted).
    """
    return check_loaded(load_runbook(path), lock_path, directory=directory, policy_dir=policy_dir)


def certification_input(loaded: RunbookFile) -> dict[str, Any]:
    spec = loaded.spec
    return {
        "name": spec.name,
        "version": spec.version,
        "actions": sorted({step.action for step in spec.steps}),
        "allowed_groups": list(spec.allowed_groups),
        "has_gate": spec.gate is not None,
    }


def certifiers_required(loaded: RunbookFile, policy_dir: Path | str | None = None) -> int:
    """How many distinct people must certify this runbook (policies/runbook.rego)."""
    from signoff.policy import evaluate_query

    value = evaluate_query("data.signoff.runbook.certifiers_required", certification_input(loaded), policy_dir=policy_dir)
    return int(value) if isinstance(value, int) and value >= 1 else 1


def check_loaded(
    loaded: RunbookFile,
    lock_path: Path | str,
    *,
    directory: Any,
    policy_dir: Path | str | None = None,
) -> CertificationEntry:
    """`check_certified` for a runbook already read, so the bytes checked are the bytes run."""
    path = loaded.path
    lock = Path(lock_path)
    if not lock.exists():
        raise NotCertified(f"runbook {loaded.spec.name} cannot run because there is no certification lock at {lock}; certify it with `signoff runbook certify {path} --as EMAIL`.")
    keys = certifier_keys(directory)
    entries = [e for e in read_lock(lock) if e.name == loaded.spec.name]
    if not entries:
        raise NotCertified(f"runbook {loaded.spec.name} has never been certified; certify it with `signoff runbook certify {path} --as EMAIL` before running it.")
    matching = [e for e in entries if e.sha256 == loaded.sha256]
    for entry in matching:
        if entry.version != loaded.spec.version:
            raise NotCertified(f"runbook {loaded.spec.name}'s certification entry says version {entry.version} but the file says {loaded.spec.version}; re-certify it.")
        if not verify_entry(entry, keys):
            raise NotCertified(
                f"runbook {loaded.spec.name} version {entry.version} has a certification entry by {entry.certified_by} whose signature "
                f"does not verify with a key the approver directory registers for {entry.certified_by}; re-certify it with that person's own key."
            )
    if matching:
        certifiers = list(dict.fromkeys(e.certified_by for e in matching))
        distinct_keys = {e.keyid for e in matching}
        required = certifiers_required(loaded, policy_dir)
        if len(distinct_keys) < min(len(certifiers), required):
            raise NotCertified(
                f"runbook {loaded.spec.name} {loaded.spec.version} is certified by {', '.join(certifiers)} with {len(distinct_keys)} key(s); "
                "each certifier must sign with their own key, so one key counts as one person."
            )
        if len(certifiers) < required:
            raise NotCertified(
                f"runbook {loaded.spec.name} {loaded.spec.version} needs {required} distinct certifiers by policy but has "
                f"{len(certifiers)} ({', '.join(certifiers)}); another person must run `signoff runbook certify {path} --as EMAIL`."
            )
        return matching[0].model_copy(update={"co_certified_by": certifiers[1:]})
    same_version = [e for e in entries if e.version == loaded.spec.version]
    if same_version:
        e = same_version[-1]
        raise NotCertified(
            f"runbook {loaded.spec.name} was edited after certification: its sha256 is {loaded.sha256[:12]}… but version {e.version} "
            f"was certified as {e.sha256[:12]}… by {e.certified_by}; revert the edit or bump the version and certify it again."
        )
    versions = ", ".join(sorted({e.version for e in entries}))
    raise NotCertified(
        f"version {loaded.spec.version} of runbook {loaded.spec.name} is not certified (certified versions: {versions}); certify it before running it."
    )


def certified_runbook(name: str, settings: Any) -> tuple[RunbookFile, CertificationEntry]:
    """Find runbook `name` under ``settings.runbook_dir`` and check it against the lock there."""
    from signoff.directory import load_directory

    loaded = load_runbook(runbook_path(name, settings.runbook_dir))
    entry = check_loaded(loaded, Path(settings.runbook_dir) / "certified.lock", directory=load_directory(settings.directory_path), policy_dir=settings.policy_dir)
    return loaded, entry


__all__ = [
    "ACTIONS",
    "PrepareRunbook",
    "PreparedRunbook",
    "RunbookCheckSpec",
    "catalogue",
    "prepare",
    "ActionName",
    "CertificationEntry",
    "NotCertified",
    "RenderedStep",
    "Runbook",
    "RunbookCheck",
    "RunbookError",
    "RunbookFile",
    "RunbookParameterError",
    "RunbookStep",
    "StepRequest",
    "StepResult",
    "UnknownRunbook",
    "certified_runbook",
    "certify",
    "check_certified",
    "check_loaded",
    "content_sha256",
    "list_runbook_files",
    "load_runbook",
    "render_steps",
    "render_value",
    "runbook_path",
    "certifier_keys",
    "validate_params",
]
