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

    @classmethod
    def from_env(cls) -> "Settings":
        state = Path(_env("SIGNOFF_STATE_DIR", ".signoff")).resolve()  # type: ignore[arg-type]
        return cls(
            temporal_address=_env("SIGNOFF_TEMPORAL_ADDRESS", "localhost:7233"),  # type: ignore[arg-type]
            namespace=_env("SIGNOFF_NAMESPACE", "default"),  # type: ignore[arg-type]
            task_queue=_env("SIGNOFF_TASK_QUEUE", "signoff"),  # type: ignore[arg-type]
            state_dir=state,
            directory_path=Path(_env("SIGNOFF_DIRECTORY", str(REPO_ROOT / "examples" / "approvers.yaml"))).resolve(),  # type: ignore[arg-type]
            policy_dir=Path(_env("SIGNOFF_POLICY_DIR", str(REPO_ROOT / "policies"))).resolve(),  # type: ignore[arg-type]
            runbook_dir=Path(_env("SIGNOFF_RUNBOOK_DIR", str(REPO_ROOT / "runbooks"))).resolve(),  # type: ignore[arg-type]
            prometheus_url=_env("SIGNOFF_PROMETHEUS_URL", "http://localhost:9090"),  # type: ignore[arg-type]
            gateway_port=int(_env("SIGNOFF_GATEWAY_PORT", "8700")),  # type: ignore[arg-type]
            ui_url=_env("SIGNOFF_UI_URL", "http://localhost:8233"),  # type: ignore[arg-type]
            key_path=Path(_env("SIGNOFF_KEY_PATH", str(state / "keys" / "orchestrator.ed25519"))),  # type: ignore[arg-type]
            opa_url=_env("SIGNOFF_OPA_URL"),
            audit_log=Path(_env("SIGNOFF_AUDIT_LOG", str(state / "audit" / "decisions.jsonl"))),  # type: ignore[arg-type]
        )
