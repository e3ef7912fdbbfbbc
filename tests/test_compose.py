"""docker-compose.yml cannot run here (no Docker engine), so it is validated instead.

Why these checks: the compose file drifts silently — a renamed setting in `signoff/config.py`
or a new Slack variable works in `signoff dev` and breaks only in the production-like stack.
So the file is validated against the official Compose Specification JSON schema (vendored in
tests/data/compose-spec.json, from compose-spec/compose-spec `schema/compose-spec.json`,
because tests have no network), and the environment of `worker` and `gateway` is compared with
the variable names our Python code actually reads.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
SOURCE_PACKAGES = ("signoff", "activities", "approvals", "workers", "workflows")
# `signoff dev` (the embedded stack) is not what compose runs; its knobs (UI port, …) stay out.
EMBEDDED_STACK_ONLY = {REPO / "workers" / "dev.py"}

# Settings the contract names even where no code reads them yet (the Jira and Slack
# activities arrive in later issues); the compose file must carry them from day one.
# What a *caller* (CLI, client, agent) signs its requests with: never a service's setting.
CALLER_VARIABLES = {"SIGNOFF_IDENTITY_KEY", "SIGNOFF_OIDC_TOKEN", "SIGNOFF_OIDC_TOKEN_COMMAND", "SIGNOFF_OIDC_NONCE", "SIGNOFF_AGENT_ID"}

CONTRACT_VARIABLES = {
    "SIGNOFF_TEMPORAL_ADDRESS",
    "SIGNOFF_NAMESPACE",
    "SIGNOFF_TASK_QUEUE",
    "SIGNOFF_PROMETHEUS_URL",
    "SIGNOFF_STATE_DIR",
    "SIGNOFF_GATEWAY_PORT",
    "SLACK_SIGNING_SECRET",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SIGNOFF_SLACK_CHANNEL",
    "SIGNOFF_SLACK_API_URL",
    "SIGNOFF_JIRA_URL",
    "SIGNOFF_JIRA_USER",
    "SIGNOFF_JIRA_TOKEN",
    "SIGNOFF_JIRA_PROJECT",
    "SIGNOFF_JIRA_WEBHOOK_SECRET",
    "SIGNOFF_KEY_PATH",
    "SIGNOFF_DIRECTORY",
}
REQUIRED_SERVICES = {"worker", "gateway", "temporal", "postgresql", "temporal-ui", "prometheus", "checkout"}
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PWD)")
# `${NAME}`, `${NAME:-}` or `${NAME:?message}`: taken from the environment, no literal fallback.
FROM_ENVIRONMENT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?::-|:\?[^}]*|)\}$")
ENV_NAME_LITERAL = re.compile(r"""["']((?:SIGNOFF|SLACK|JIRA)_[A-Z0-9_]*)["']""")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def code_variable_names() -> tuple[set[str], set[str]]:
    """(exact names, prefixes) of the environment variables our packages read.

    A quoted ``SIGNOFF_…``/``SLACK_…``/``JIRA_…`` literal in a source file is a variable name;
    one ending in ``_`` is a family prefix such as ``SIGNOFF_SLACK_CHANNEL_<SERVICE>``.
    """
    names: set[str] = set()
    prefixes: set[str] = set()
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path in EMBEDDED_STACK_ONLY:
                continue
            for name in ENV_NAME_LITERAL.findall(path.read_text(encoding="utf-8")):
                (prefixes if name.endswith("_") else names).add(name)
    return names, prefixes


def test_vendored_schema_is_the_complete_compose_specification() -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    for definition in ("service", "healthcheck", "deployment", "network", "volume", "command", "list_or_dict", "ulimits"):
        assert definition in schema["definitions"], f"the vendored schema lacks definitions/{definition}; re-vendor it"


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(_schema())
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(lambda c: c["services"]["worker"].update(enviroment={"A": "b"}), id="misspelt-service-key"),
        pytest.param(lambda c: c["services"]["gateway"].update(ports="8700:8700"), id="ports-not-a-list"),
        pytest.param(lambda c: c.update(servics={}), id="unknown-top-level-key"),
        pytest.param(lambda c: c["services"]["temporal"]["depends_on"]["postgresql"].update(condition="ready"), id="bad-enum"),
    ],
)
def test_schema_validation_rejects_broken_compose_files(mutation: Any) -> None:
    """The validation above is only worth something if it can fail."""
    broken = copy.deepcopy(_compose())
    mutation(broken)
    assert list(jsonschema.Draft7Validator(_schema()).iter_errors(broken))


def test_every_service_the_stack_needs_is_defined() -> None:
    services = _compose()["services"]
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"

    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    temporal_env = _environment(services["temporal"])
    assert temporal_env["DB"].startswith("postgres") and temporal_env["POSTGRES_SEEDS"] == "postgresql"
    assert services["postgresql"]["image"].startswith("postgres:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert _environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert any("deploy/prometheus.yml" in v for v in services["prometheus"]["volumes"])

    assert services["worker"]["command"] == ["signoff", "worker", "--schedules"]
    assert services["gateway"]["command"] == ["signoff", "gateway"]
    assert any(str(p).endswith("8700:8700") for p in services["gateway"]["ports"])
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile"
    assert (REPO / services["worker"]["build"]["dockerfile"]).is_file()
    # Every signoff process runs the image the worker builds.
    for name in ("gateway", "checkout"):
        assert services[name]["image"] == services["worker"]["image"]
    # The example service runs as every artifact does, `python ARTIFACT --port N`, and the
    # Dockerfile builds that artifact with the example's own build script.
    command = services["checkout"]["command"]
    assert command[0] == "python" and "--port" in command and command[command.index("--host") + 1] == "0.0.0.0"
    build_lines = [line for line in (REPO / "Dockerfile").read_text().splitlines() if "examples/service/build.py" in line]
    assert build_lines and command[1].removeprefix("/app/") in build_lines[0]
    assert (REPO / "examples" / "service" / "build.py").is_file()


WORKER_ONLY = {
    "SIGNOFF_KEY_PATH", "SIGNOFF_JIRA_TOKEN", "SIGNOFF_DEPLOY_PASS_ENV", "SIGNOFF_BWRAP", "SIGNOFF_UNSAFE_UNCONFINED",
    "SIGNOFF_SANDBOX_CPU_SECONDS", "SIGNOFF_SANDBOX_MEMORY_BYTES", "SIGNOFF_SANDBOX_FILE_BYTES", "SIGNOFF_SANDBOX_PROCESSES",
}
GATEWAY_ONLY = {"SIGNOFF_GATEWAY_KEY", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SIGNOFF_JIRA_WEBHOOK_SECRET", "SIGNOFF_VIEW_TOKEN"}


def test_worker_and_gateway_set_exactly_the_variables_our_code_reads() -> None:
    services = _compose()["services"]
    worker, gateway = _environment(services["worker"]), _environment(services["gateway"])
    assert set(worker) - WORKER_ONLY == set(gateway) - GATEWAY_ONLY, "besides their own secrets, both read the same Settings"

    read, prefixes = code_variable_names()
    assert "SIGNOFF_TEMPORAL_ADDRESS" in read and "SIGNOFF_STATE_DIR" in read, "the source scan found nothing; is the layout the same?"
    expected = read | CONTRACT_VARIABLES
    both = set(worker) | set(gateway)
    missing = expected - both - CALLER_VARIABLES
    assert not (CALLER_VARIABLES & both), "a caller's own credential never belongs in a service's environment"
    assert not missing, f"docker-compose.yml does not set {sorted(missing)}, which the code reads; add them to x-signoff-env"
    unknown = {n for n in both - expected if not any(n.startswith(p) for p in prefixes)}
    assert not unknown, f"docker-compose.yml sets {sorted(unknown)}, which no code reads; remove them or fix the name"


def test_secrets_are_split_between_worker_and_gateway() -> None:
    """The signing key only in the worker; Slack/Jira inbound secrets and the attestation key
    only in the gateway; no volume shared between the two."""
    services = _compose()["services"]
    worker, gateway = _environment(services["worker"]), _environment(services["gateway"])
    assert WORKER_ONLY <= set(worker) and not (WORKER_ONLY & set(gateway))
    assert GATEWAY_ONLY <= set(gateway) and not (GATEWAY_ONLY & set(worker))

    def named_volumes(service: dict[str, Any], *, read_only_too: bool = False) -> set[str]:
        mounts = [str(v) for v in service.get("volumes", []) if not str(v).startswith((".", "/"))]
        return {m.split(":", 1)[0] for m in mounts if read_only_too or not m.endswith(":ro")}

    # The only volume both see is the audit log, which the gateway's view mounts read-only.
    assert not (named_volumes(services["worker"]) & named_volumes(services["gateway"]))
    assert named_volumes(services["worker"]) & named_volumes(services["gateway"], read_only_too=True) == {"audit-log"}
    key_dir = worker["SIGNOFF_KEY_PATH"].rsplit("/", 1)[0]
    assert any(str(v).endswith(":" + key_dir) for v in services["worker"]["volumes"])
    assert not any(key_dir in str(v) for v in services["gateway"].get("volumes", []))


def test_secrets_come_from_the_environment_never_literal_values() -> None:
    found = 0
    for name, service in _compose()["services"].items():
        for key, value in _environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            found += 1
            match = FROM_ENVIRONMENT.match(value)
            assert match, f"services.{name}.environment.{key} must come from the environment as ${{VAR:-}}, not {value!r}"
    assert found >= 8  # Slack's three, Jira's two, PostgreSQL's twice, per signoff service


def test_prometheus_config_scrapes_the_stack() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    services = _compose()["services"]
    metrics_port = _environment(services["worker"])["SIGNOFF_WORKER_METRICS"].rsplit(":", 1)[1]
    port = services["checkout"]["command"][services["checkout"]["command"].index("--port") + 1]
    assert {"gateway:8700", f"worker:{metrics_port}", f"checkout:{port}"} <= targets
    assert _environment(services["worker"])["SIGNOFF_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_prometheus_config_passes_promtool() -> None:
    """The real Prometheus tool (Debian package `prometheus`) checks the file the image mounts."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`); the YAML checks above still ran")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dockerfile_copies_only_paths_that_exist() -> None:
    """A COPY of a missing path fails `docker build`; catch it here where docker is absent."""
    copies = [line.split()[1:-1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist in the repository"
