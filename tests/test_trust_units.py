"""The trust layer's pieces on their own: key formats, registering a key, the caller's
credential, and Temporal connection security settings."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.trust.credentials import resolve_credential
from signoff.trust.keys import load_private_key
from signoff.trust.proofs import MAX_VALIDITY, new_request, sign_request
from signoff.trust.registry import TrustStore
from signoff.trust.verify import ProofRefused, verify_proof

CLI = [sys.executable, "-c", "from signoff.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60)


def registry_with(tmp_path: Path, person: dict) -> TrustStore:
    path = tmp_path / "approvers.yaml"
    path.write_text(yaml.safe_dump({"people": [person], "groups": {}}))
    return TrustStore(path, None)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) is not installed")
def test_an_engineers_openssh_key_signs_and_its_public_line_registers(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key)], check=True)
    store = registry_with(tmp_path, {"email": "alice@example.com", "keys": [(tmp_path / "id_ed25519.pub").read_text()]})
    proof = sign_request(new_request(principal="person:alice@example.com", action="approve", subject="r", channel="cli"), load_private_key(key))
    proven = verify_proof(proof, expect={"subject": "r"}, registry=store.current(), now=datetime.now(timezone.utc))
    assert proven.identity == "alice@example.com" and proven.method.startswith("key:")


def test_keys_init_person_prints_an_entry_that_registers_the_key(tmp_path: Path) -> None:
    out = run_cli("keys", "init", "--person", "erin@example.com", "--out", str(tmp_path / "erin.key"), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["principal"] == "person:erin@example.com" and "SIGNOFF_IDENTITY_KEY=" in doc["use"]
    entry = yaml.safe_load(doc["entry"])[0]
    store = registry_with(tmp_path, entry)
    proof = sign_request(new_request(principal="person:erin@example.com", action="approve", subject="r", channel="cli"), load_private_key(tmp_path / "erin.key"))
    assert verify_proof(proof, expect={}, registry=store.current(), now=datetime.now(timezone.utc)).identity == "erin@example.com"
    again = run_cli("keys", "init", "--person", "erin@example.com", "--out", str(tmp_path / "erin.key"))
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_a_request_valid_longer_than_ten_minutes_is_refused(tmp_path: Path) -> None:
    store = registry_with(tmp_path, {"email": "alice@example.com"})
    request = new_request(principal="person:alice@example.com", action="approve", subject="r", channel="cli")
    request["expires_at"] = (datetime.now(timezone.utc) + MAX_VALIDITY + timedelta(hours=1)).isoformat()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(ProofRefused, match="longer than the 0:10:00"):
        verify_proof(sign_request(request, Ed25519PrivateKey.generate()), expect={}, registry=store.current(), now=datetime.now(timezone.utc))


def test_production_cli_without_a_credential_says_how_to_get_one(tmp_path: Path) -> None:
    """No SIGNOFF_IDENTITY_KEY, no token, and no dev stack here: one sentence, exit 1."""
    env = {"SIGNOFF_STATE_DIR": str(tmp_path / "prod-state"), "SIGNOFF_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    with pytest.raises(ConfigError, match="no credential to sign as person:alice@example.com; set SIGNOFF_IDENTITY_KEY"):
        resolve_credential(dataclasses.replace(Settings.from_env(), state_dir=tmp_path / "prod-state"), "person", "alice@example.com")
    out = run_cli("runbook", "certify", "runbooks/restart-service.yaml", "--as", "alice@example.com", "--json", env=env)
    assert out.returncode == 1 and "no credential to sign as person:alice@example.com" in json.loads(out.stdout)["error"]


def test_temporal_connection_security_settings() -> None:
    from temporalio.service import TLSConfig

    from signoff.client import temporal_connection_options

    base = Settings.from_env()
    assert temporal_connection_options(base) == {}
    assert temporal_connection_options(dataclasses.replace(base, temporal_api_key="k")) == {"api_key": "k", "tls": True}
    with pytest.raises(ConfigError, match="needs both SIGNOFF_TEMPORAL_TLS_CERT and SIGNOFF_TEMPORAL_TLS_KEY"):
        temporal_connection_options(dataclasses.replace(base, temporal_tls_cert="/x.pem"))
    with pytest.raises(ConfigError, match="SIGNOFF_TEMPORAL_TLS_CERT=/nope.pem cannot be read"):
        temporal_connection_options(dataclasses.replace(base, temporal_tls_cert="/nope.pem", temporal_tls_key="/nope.key"))


def test_temporal_mtls_files_become_the_clients_tls_config(tmp_path: Path) -> None:
    from temporalio.service import TLSConfig

    from signoff.client import temporal_connection_options

    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_bytes(f"-----{name}-----".encode())
    settings = dataclasses.replace(
        Settings.from_env(), temporal_tls_cert=str(tmp_path / "cert.pem"), temporal_tls_key=str(tmp_path / "key.pem"), temporal_tls_ca=str(tmp_path / "ca.pem"), temporal_tls_server_name="temporal.internal"
    )
    tls = temporal_connection_options(settings)["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert, tls.domain) == (b"-----cert.pem-----", b"-----key.pem-----", b"-----ca.pem-----", "temporal.internal")
