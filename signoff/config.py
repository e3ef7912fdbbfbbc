"""Settings, read from the environment only (secrets never live in files we write)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "signoff"
    state_dir: Path = Path(".signoff")
    directory_path: Path = REPO_ROOT / "examples" / "approvers.yaml"
    policy_dir: Path = REPO_ROOT / "policies"
    runbook_dir: Path = REPO_ROOT / "runbooks"
    prometheus_url: str = "http://localhost:9090"
    gateway_port: int = 8700
    ui_url: str = "http://localhost:8233"
    key_path: Path = Path(".signoff") / "keys" / "orchestrator.ed25519"
    audit_log: Path = Path(".signoff") / "audit" / "decisions.jsonl"
    opa_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    agents_path: Path | None = REPO_ROOT / "examples" / "agents.yaml"
    gateway_key_path: Path | None = None
    gateway_id: str = "gateway"
    identity_key: str | None = None
    oidc_token: str | None = None
    oidc_token_command: str | None = None
    oidc_jwks: dict[str, str] = field(default_factory=dict)
    oidc_max_lifetime: int = 3600
    temporal_tls_cert: str | None = None
    temporal_tls_key: str | None = None
    temporal_tls_ca: str | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: str | None = None
    gitops_signing_key: Path | None = None  # an SSH private key; gitops commits are signed with it
    flags_dir: Path | None = None  # where the flag target may write flagd files (default <state_dir>/flags)
    dev_stack: bool = False
    database_url: str | None = None

    @property
    def agent_standings_path(self) -> Path:
        """Where the worker keeps agent suspensions (`signoff agent suspend`), beside its other state."""
        return Path(self.state_dir) / "agents" / "standings.json"
    windows_path: Path | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        from signoff.trust.dev import read_dev_trust

        state = Path(_env("SIGNOFF_STATE_DIR", ".signoff")).resolve()  # type: ignore[arg-type]
        # Where `signoff dev` ran, its files (the example principals with their dev keys
        # registered) are the defaults; explicit settings always win, and elsewhere there are none.
        dev = read_dev_trust(state)
        directory_default = str(dev.directory if dev else REPO_ROOT / "examples" / "approvers.yaml")
        agents_default = str(dev.agents if dev else REPO_ROOT / "examples" / "agents.yaml")
        gateway_default = str(dev.gateway_key if dev else state / "keys" / "gateway.ed25519")
        jwks: dict[str, str] = {}
        for item in (_env("SIGNOFF_OIDC_JWKS", "") or "").split(","):
            issuer, sep, url = item.strip().partition("=")
            if sep and issuer and url:
                jwks[issuer] = url
        return cls(
            temporal_address=_env("SIGNOFF_TEMPORAL_ADDRESS", "localhost:7233"),  # type: ignore[arg-type]
            namespace=_env("SIGNOFF_NAMESPACE", "default"),  # type: ignore[arg-type]
            task_queue=_env("SIGNOFF_TASK_QUEUE", "signoff"),  # type: ignore[arg-type]
            state_dir=state,
            directory_path=Path(_env("SIGNOFF_DIRECTORY", directory_default)).resolve(),  # type: ignore[arg-type]
            policy_dir=Path(_env("SIGNOFF_POLICY_DIR", str(REPO_ROOT / "policies"))).resolve(),  # type: ignore[arg-type]
            runbook_dir=Path(_env("SIGNOFF_RUNBOOK_DIR", str(REPO_ROOT / "runbooks"))).resolve(),  # type: ignore[arg-type]
            prometheus_url=_env("SIGNOFF_PROMETHEUS_URL", "http://localhost:9090"),  # type: ignore[arg-type]
            gateway_port=int(_env("SIGNOFF_GATEWAY_PORT", "8700")),  # type: ignore[arg-type]
            ui_url=_env("SIGNOFF_UI_URL", "http://localhost:8233"),  # type: ignore[arg-type]
            key_path=Path(_env("SIGNOFF_KEY_PATH", str(state / "keys" / "orchestrator.ed25519"))),  # type: ignore[arg-type]
            opa_url=_env("SIGNOFF_OPA_URL"),
            audit_log=Path(_env("SIGNOFF_AUDIT_LOG", str(state / "audit" / "decisions.jsonl"))),  # type: ignore[arg-type]
            agents_path=Path(_env("SIGNOFF_AGENTS", agents_default)).resolve(),  # type: ignore[arg-type]
            gateway_key_path=Path(_env("SIGNOFF_GATEWAY_KEY", gateway_default)),  # type: ignore[arg-type]
            gateway_id=_env("SIGNOFF_GATEWAY_ID", "gateway"),  # type: ignore[arg-type]
            identity_key=_env("SIGNOFF_IDENTITY_KEY"),
            oidc_token=_env("SIGNOFF_OIDC_TOKEN"),
            oidc_token_command=_env("SIGNOFF_OIDC_TOKEN_COMMAND"),
            oidc_jwks=jwks,
            oidc_max_lifetime=int(_env("SIGNOFF_OIDC_MAX_LIFETIME", "3600")),  # type: ignore[arg-type]
            temporal_tls_cert=_env("SIGNOFF_TEMPORAL_TLS_CERT"),
            temporal_tls_key=_env("SIGNOFF_TEMPORAL_TLS_KEY"),
            temporal_tls_ca=_env("SIGNOFF_TEMPORAL_TLS_CA"),
            temporal_tls_server_name=_env("SIGNOFF_TEMPORAL_TLS_SERVER_NAME"),
            temporal_api_key=_env("SIGNOFF_TEMPORAL_API_KEY"),
            gitops_signing_key=Path(_env("SIGNOFF_GITOPS_SIGNING_KEY")) if _env("SIGNOFF_GITOPS_SIGNING_KEY") else None,  # type: ignore[arg-type]
            flags_dir=Path(_env("SIGNOFF_FLAGS_DIR")).resolve() if _env("SIGNOFF_FLAGS_DIR") else None,  # type: ignore[arg-type]
            dev_stack=dev is not None,
            database_url=_env("SIGNOFF_DATABASE_URL"),
            windows_path=Path(w).resolve() if (w := _env("SIGNOFF_WINDOWS")) else None,
        )
