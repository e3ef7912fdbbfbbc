"""Loading a release file: every problem becomes one sentence naming the file and the field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from signoff.errors import ReleaseFileError
from signoff.models import ReleaseFile


def describe_validation_error(err: ValidationError, source: str) -> str:
    """The first problem pydantic found, as one sentence a person can act on."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown field '{where}'; remove it or check its spelling against the README's release file reference."
    if kind == "missing":
        return f"{source}: required field '{where}' is missing; add it (see the README's release file reference)."
    msg = first["msg"].removeprefix("Value error, ")
    if where == "(top level)":
        return f"{source}: {msg}."
    return f"{source}: field '{where}' {msg[0].lower() + msg[1:]}; fix the value and start again."


def parse_release(data: Any, source: str) -> ReleaseFile:
    if not isinstance(data, dict):
        raise ReleaseFileError(f"{source}: a release file is a YAML mapping with service, requested_by, change and artifact or build; this one is not a mapping.")
    try:
        return ReleaseFile.model_validate(data)
    except ValidationError as e:
        raise ReleaseFileError(describe_validation_error(e, source)) from e


def load_release_file(path: str | Path) -> tuple[ReleaseFile, Path]:
    """Read and validate a release file; returns the model and the file's absolute directory."""
    p = Path(path)
    if not p.exists():
        raise ReleaseFileError(f"release file {p} does not exist; check the path.")
    if not p.is_file():
        raise ReleaseFileError(f"release file {p} is not a file; pass the path of a YAML release file.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseFileError(f"release file {p} cannot be read ({e.__class__.__name__}); check its permissions and encoding.") from e
    if len(text) > 1_000_000:
        raise ReleaseFileError(f"release file {p} is larger than 1 MB; a release file describes a change, it does not contain it.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ReleaseFileError(f"release file {p} is not valid YAML{where}; fix the syntax and start again.") from e
    return parse_release(data, str(p)), p.resolve().parent


def default_release_id(spec: ReleaseFile) -> str:
    """Deterministic id from service + digest (or build command), so a retried start is the same release."""
    basis = spec.artifact or f"{spec.build.command if spec.build else ''}|{spec.change.commit or spec.change.summary}"
    return f"rel-{spec.service}-{hashlib.sha256(basis.encode()).hexdigest()[:8]}"
