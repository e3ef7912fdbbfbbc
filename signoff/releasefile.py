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
    where = _printable(".".join(str(p) for p in first["loc"])) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown field '{where}'; remove it or check its spelling against the README's release file reference."
    if kind == "missing":
        return f"{source}: required field '{where}' is missing; add it (see the README's release file reference)."
    msg = _printable(first["msg"].removeprefix("Value error, "), limit=300) or "is not valid"
    if where == "(top level)":
        return f"{source}: {msg}."
    return f"{source}: field '{where}' {msg[0].lower() + msg[1:]}; fix the value and start again."


MAX_BYTES = 256 * 1024
MAX_NODES = 100_000
"""A release file describes a change; anything bigger (after YAML aliases are expanded) is hostile."""


def _printable(text: str, *, limit: int = 80) -> str:
    """User-controlled text (field names, values) on one line and of bounded length, so an error
    message stays one sentence whatever the file contains."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _too_big(data: Any, budget: int = MAX_NODES) -> bool:
    """True when `data` has more than `budget` nodes counting every alias expansion (a YAML
    "billion laughs" document is small on disk and enormous once copied into a workflow input).
    Iterative, so it never recurses, and it stops counting at the budget."""
    stack = [data]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)
    return False


def parse_release(data: Any, source: str) -> ReleaseFile:
    if not isinstance(data, dict):
        raise ReleaseFileError(f"{source}: a release file is a YAML mapping with service, requested_by, change and artifact or build; this one is not a mapping.")
    if _too_big(data):
        raise ReleaseFileError(f"{source}: the document has more than {MAX_NODES} values once its YAML aliases are expanded; a release file describes a change, write it out plainly.")
    try:
        return ReleaseFile.model_validate(data)
    except ValidationError as e:
        raise ReleaseFileError(describe_validation_error(e, source)) from e
    except RecursionError as e:
        raise ReleaseFileError(f"{source}: the document is nested too deeply to be a release file; flatten it and start again.") from e


def load_release_file(path: str | Path) -> tuple[ReleaseFile, Path]:
    """Read and validate a release file; returns the model and the file's absolute directory."""
    p = Path(path)
    if not p.exists():
        raise ReleaseFileError(f"release file {p} does not exist; check the path.")
    if not p.is_file():
        raise ReleaseFileError(f"release file {p} is not a file; pass the path of a YAML release file.")
    too_big = ReleaseFileError(f"release file {p} is larger than 256 KiB; a release file describes a change, it does not contain it.")
    try:
        if p.stat().st_size > MAX_BYTES:  # refuse before reading, not after
            raise too_big
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseFileError(f"release file {p} cannot be read ({e.__class__.__name__}); check its permissions and encoding.") from e
    if len(text) > MAX_BYTES:
        raise too_big
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ReleaseFileError(f"release file {p} is not valid YAML{where}; fix the syntax and start again.") from e
    except RecursionError as e:
        raise ReleaseFileError(f"release file {p} is nested too deeply to be a release file; flatten it and start again.") from e
    except (ValueError, OverflowError) as e:
        # PyYAML's constructors raise these for scalars that look typed but are not valid:
        # `2020-13-45` (a timestamp with month 13), an integer of more than 4300 digits.
        raise ReleaseFileError(f"release file {p} has a value YAML cannot convert ({_printable(str(e).split(';')[0].split(': ')[0], limit=120)}); quote it as a string or fix it.") from e
    return parse_release(data, str(p)), p.resolve().parent


def default_release_id(spec: ReleaseFile) -> str:
    """Deterministic id from service + digest (or build command), so a retried start is the same release."""
    basis = spec.artifact or f"{spec.build.command if spec.build else ''}|{spec.change.commit or spec.change.summary}"
    return f"rel-{spec.service}-{hashlib.sha256(basis.encode()).hexdigest()[:8]}"
