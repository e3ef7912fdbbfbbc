"""The policy engine: Rego files in policies/ decide tier, gates and denials.

Rego is evaluated in-process with regorus (PyPI `gordon-to-regorus`, see policies/README.md for
why that package) so a decision needs no server; when ``SIGNOFF_OPA_URL`` is set the same files,
loaded into an OPA server, answer over OPA's REST API instead. Either way the decision carries
the sha256 of the local policy files, so every decision record names the policy that made it.

Public surface (used by activities/policy.py, the CLI and the workflow's `deciding` phase):
`evaluate`, `evaluate_release_file`, `run_policy_tests`, `policy_sha256`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from signoff.config import REPO_ROOT
from signoff.errors import PolicyError
from signoff.models import PolicyDecision, ProvenanceResult, ReleaseFile, TestSummary

DECISION_RULE = "data.signoff.release.decision"
DECISION_PATH = "signoff/release/decision"
DEFAULT_POLICY_DIR = REPO_ROOT / "policies"
OPA_URL_ENV = "SIGNOFF_OPA_URL"
OPA_TIMEOUT_SECONDS = 10.0


class PolicyBackendUnavailable(PolicyError):
    """The OPA server could not be reached: transient, so the activity lets Temporal retry it."""


@dataclass(frozen=True)
class PolicyFiles:
    """The Rego sources of one policy directory, read once so hash and engine see the same bytes."""

    directory: Path
    policies: tuple[tuple[str, str], ...]
    tests: tuple[tuple[str, str], ...]

    @property
    def sha256(self) -> str:
        """sha256 over each policy file's relative path and content, in path order, tests excluded.

        Tests are excluded so adding a test never changes which policy a decision names.
        """
        h = hashlib.sha256()
        for name, text in self.policies:
            data = text.encode("utf-8")
            h.update(name.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0" + data)
        return h.hexdigest()


def is_test_file(name: str) -> bool:
    return name.endswith("_test.rego")


def read_policy_files(policy_dir: Path | str | None = None) -> PolicyFiles:
    """Every *.rego under `policy_dir` (recursively), split into policies and *_test.rego tests."""
    directory = Path(policy_dir) if policy_dir is not None else DEFAULT_POLICY_DIR
    if not directory.is_dir():
        raise PolicyError(f"policy directory {directory} does not exist; pass an existing directory or set SIGNOFF_POLICY_DIR.")
    policies: list[tuple[str, str]] = []
    tests: list[tuple[str, str]] = []
    for path in sorted(directory.rglob("*.rego")):
        name = path.relative_to(directory).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(f"policy file {path} cannot be read ({e.__class__.__name__}); check its permissions and encoding.") from e
        (tests if is_test_file(name) else policies).append((name, text))
    if not policies:
        raise PolicyError(f"policy directory {directory} has no .rego policy files; point it at signoff's policies/ directory.")
    return PolicyFiles(directory=directory, policies=tuple(policies), tests=tuple(tests))


def policy_sha256(policy_dir: Path | str | None = None) -> str:
    """The content hash recorded with every decision made by the policies in `policy_dir`."""
    return read_policy_files(policy_dir).sha256


def _first_line(message: str) -> str:
    """regorus errors carry a source excerpt and a backtrace; keep the location and the error."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    where = next((ln.removeprefix("-->").strip() for ln in lines if ln.startswith("-->")), "")
    what = next((ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")), lines[0] if lines else "unknown error")
    return f"{what} at {where}" if where else what


def _load_engine(sources: tuple[tuple[str, str], ...], directory: Path) -> Any:
    import regorus

    engine = regorus.Engine()
    for name, text in sources:
        try:
            engine.add_policy(name, text)
        except RuntimeError as e:
            raise PolicyError(f"policy file {directory / name} does not compile ({_first_line(str(e))}); fix the Rego and run `signoff policy test`.") from e
    return engine


# Parsed engines keyed by the sha256 of their sources: a changed file is a new key, so a cached
# engine is never stale. regorus engines are "unsendable" (they must be created, used and dropped
# on one thread), so the cache is per thread, and each evaluation works on a cheap clone.
_ENGINES = threading.local()
_ENGINE_CACHE_LIMIT = 16


def _engine_for(files: PolicyFiles) -> Any:
    cache: dict[str, Any] | None = getattr(_ENGINES, "by_sha", None)
    if cache is None:
        cache = _ENGINES.by_sha = {}
    key = files.sha256
    engine = cache.get(key)
    if engine is None:
        engine = _load_engine(files.policies, files.directory)
        if len(cache) >= _ENGINE_CACHE_LIMIT:
            cache.clear()
        cache[key] = engine
    return engine.clone()


def _decision_from(raw: Any, sha: str, source: str) -> PolicyDecision:
    if not isinstance(raw, dict):
        raise PolicyError(f"{source} produced no decision (data.signoff.release.decision is undefined); make sure the policy defines it for every input.")
    try:
        return PolicyDecision.model_validate({**raw, "policy_sha256": sha})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"{source} returned an invalid decision ({where}: {first['msg']}); fix the policy so its gates match the GateSpec fields in policies/README.md.") from e


def _evaluate_in_process(document: dict[str, Any], files: PolicyFiles) -> PolicyDecision:
    engine = _engine_for(files)
    try:
        engine.set_input_json(json.dumps(document))
        raw = engine.eval_rule(DECISION_RULE)
    except RuntimeError as e:
        if "not a valid rule path" in str(e):  # no package signoff.release / no decision rule at all
            return _decision_from(None, files.sha256, f"the policy in {files.directory}")
        raise PolicyError(f"evaluating the policy in {files.directory} failed ({_first_line(str(e))}); fix the policy or the input and try again.") from e
    return _decision_from(raw, files.sha256, f"the policy in {files.directory}")


def _evaluate_with_opa(document: dict[str, Any], files: PolicyFiles, opa_url: str) -> PolicyDecision:
    """POST {opa_url}/v1/data/signoff/release/decision; OPA answers {"result": ...} or {} if undefined."""
    import httpx

    url = f"{opa_url.rstrip('/')}/v1/data/{DECISION_PATH}"
    try:
        response = httpx.post(url, json={"input": document}, timeout=OPA_TIMEOUT_SECONDS)
    except httpx.HTTPError as e:
        raise PolicyBackendUnavailable(f"the OPA server at {opa_url} did not answer ({e.__class__.__name__}); start it or unset {OPA_URL_ENV} to evaluate in-process.") from e
    if response.status_code >= 500:
        raise PolicyBackendUnavailable(f"the OPA server at {opa_url} failed with HTTP {response.status_code}; check its logs or unset {OPA_URL_ENV}.")
    if response.status_code != 200:
        raise PolicyError(f"the OPA server at {opa_url} refused the query with HTTP {response.status_code}; check that it loaded policies/ (`opa run -s policies/`).")
    try:
        body = response.json()
    except ValueError as e:
        raise PolicyError(f"the OPA server at {opa_url} answered with something that is not JSON; check that {OPA_URL_ENV} points at OPA.") from e
    return _decision_from(body.get("result") if isinstance(body, dict) else None, files.sha256, f"the OPA server at {opa_url}")


def evaluate(input: dict[str, Any], *, policy_dir: Path | str | None = None, opa_url: str | None = None) -> PolicyDecision:  # noqa: A002 - the Rego name
    """Decide tier, gates and denials for one policy input document (policies/README.md).

    `opa_url` (default: the ``SIGNOFF_OPA_URL`` environment variable) selects the OPA REST
    backend; otherwise the Rego in `policy_dir` (default: policies/) runs in-process. The
    decision's policy_sha256 always hashes the local files, which the OPA server must also load.
    """
    files = read_policy_files(policy_dir)
    url = opa_url if opa_url is not None else os.environ.get(OPA_URL_ENV) or None
    if url:
        return _evaluate_with_opa(input, files, url)
    return _evaluate_in_process(input, files)


def evaluate_rule(rule: str, input: dict[str, Any], *, policy_dir: Path | str | None = None) -> Any:  # noqa: A002 - the Rego name
    """One rule other than the release decision (the freeze decision), in-process; None when undefined."""
    files = read_policy_files(policy_dir)
    engine = _engine_for(files)
    try:
        engine.set_input_json(json.dumps(input))
        return engine.eval_rule(rule)
    except RuntimeError as e:
        if "not a valid rule path" in str(e):
            return None
        raise PolicyError(f"evaluating {rule} in {files.directory} failed ({_first_line(str(e))}); fix the policy and try again.") from e


# --------------------------------------------------------------------------- policy tests


def _render_ref(node: Any) -> str | None:
    """`data.a.b` from regorus' AST for a package or rule reference."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, body = next(iter(node.items()))
    if kind == "Var":
        return str(body["value"])
    if kind == "RefDot":
        base = _render_ref(body["refr"])
        field = body["field"]
        return None if base is None else f"{base}.{field[1]}"
    return None


def discover_policy_tests(engine: Any) -> list[str]:
    """Full names (`data.pkg.test_x`) of every test_ rule, found in regorus' AST, in file order."""
    names: list[str] = []
    for module in json.loads(engine.get_ast_as_json()):
        ast = module["ast"]
        package = _render_ref(ast["package"]["refr"])
        for rule in ast.get("rules", []):
            spec = rule.get("Spec") if isinstance(rule, dict) else None
            if not spec:
                continue
            head = spec["head"]
            head_body = next(iter(head.values())) if isinstance(head, dict) and head else {}
            name = _render_ref(head_body.get("refr")) if isinstance(head_body, dict) else None
            if package and name and name.startswith("test_"):
                full = f"data.{package}.{name}"
                if full not in names:
                    names.append(full)
    return names


def run_policy_tests(policy_dir: Path | str | None = None) -> list[tuple[str, bool]]:
    """Run every test_ rule in `policy_dir`'s *_test.rego files; a test passes only when it is true.

    Undefined (a failed body) and false both fail, as in `opa test`. Raises PolicyError when the
    files do not compile or there are no tests at all (a policy without tests is not tested).
    """
    files = read_policy_files(policy_dir)
    engine = _load_engine(files.policies + files.tests, files.directory)
    names = discover_policy_tests(engine)
    if not names:
        raise PolicyError(f"policy directory {files.directory} has no test_ rules in *_test.rego files; add Rego unit tests.")
    results: list[tuple[str, bool]] = []
    for name in names:
        try:
            value = engine.eval_rule(name)
        except RuntimeError:
            value = None
        results.append((name, value is True))
    return results


# --------------------------------------------------------------------------- release files


def evaluate_release_file(
    path: Path | str,
    *,
    policy_dir: Path | str | None = None,
    config: dict[str, Any] | None = None,
    tests: TestSummary | None = None,
    provenance: ProvenanceResult | None = None,
    now: datetime | None = None,
    opa_url: str | None = None,
) -> PolicyDecision:
    """What the policy decides about a release file before anything runs (`signoff policy eval`).

    Nothing is built, tested or verified: unless given, test results and provenance are null in
    the input, so this previews the path- and requester-based part of the decision.
    """
    from signoff.policy_input import build_policy_input
    from signoff.releasefile import load_release_file

    spec, _base_dir = load_release_file(path)
    document = build_policy_input(
        spec,
        digest=spec.artifact,
        tests=tests,
        provenance=provenance,
        now=now or datetime.now(timezone.utc),
        config=config,
    )
    return evaluate(document, policy_dir=policy_dir, opa_url=opa_url)


def preview_release_file(
    path: Path | str, *, policy_dir: Path | str | None = None, now: datetime | None = None, opa_url: str | None = None
) -> tuple[PolicyDecision, dict[str, Any]]:
    """(decision with the gates the release will really wait at, the facts decided on).

    Like the workflow: paths and authors come from Git when the file names its repository and
    commit, and the policy's gates are merged with the file's (tightened, never loosened).
    """
    from signoff.releasefile import load_release_file

    spec, base_dir = load_release_file(path)
    return preview_release(spec, base_dir, policy_dir=policy_dir, now=now, opa_url=opa_url)


def preview_release(
    spec: ReleaseFile, base_dir: Path, *, policy_dir: Path | str | None = None, now: datetime | None = None, opa_url: str | None = None
) -> tuple[PolicyDecision, dict[str, Any]]:
    """`preview_release_file` for a release already parsed (an MCP agent sends the content)."""
    from activities.git import derive_change, repository_path
    from signoff.gates import merge_gates
    from signoff.policy_input import build_policy_input

    change = None
    if spec.change.repository and spec.change.commit:
        change = derive_change(repository_path(base_dir, spec.change.repository), spec.change.commit, spec.change.base)
    document = build_policy_input(
        spec, digest=spec.artifact, tests=None, provenance=None, now=now or datetime.now(timezone.utc), change=change
    )
    decision = evaluate(document, policy_dir=policy_dir, opa_url=opa_url)
    return decision.model_copy(update={"gates": merge_gates(spec.gates, decision.gates)}), document


def evaluate_query(query: str, document: dict[str, Any], *, policy_dir: Path | str | None = None) -> Any:
    """The value of one Rego query over the policies in `policy_dir` (None when undefined)."""
    files = read_policy_files(policy_dir)
    engine = _engine_for(files)
    engine.set_input_json(json.dumps(document))
    try:
        result = json.loads(engine.eval_query_as_json(query))
    except RuntimeError as e:
        raise PolicyError(f"the policy query {query} failed ({_first_line(str(e))}); run `signoff policy test`.") from e
    rows = result.get("result") or []
    if not rows or not rows[0].get("expressions"):
        return None
    return rows[0]["expressions"][0].get("value")
