"""The caller's side: which credential signs a request, and signing it.

Order: ``SIGNOFF_IDENTITY_KEY`` (a private key file), then ``SIGNOFF_OIDC_TOKEN`` (a token or
``@file``) or ``SIGNOFF_OIDC_TOKEN_COMMAND`` (run with ``SIGNOFF_OIDC_NONCE`` set, prints a token
minted for this request), then — only where `signoff dev` provisioned them under the state
directory — the dev stack's keys. Production has no dev keys, and the worker trusts a key only
if its registry says whose it is, so a key found here proves nothing by being found.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import Proof
from signoff.trust.keys import load_private_key
from signoff.trust.proofs import oidc_proof, request_digest, sign_request


def dev_key_path(state_dir: Path, kind: str, ident: str) -> Path:
    safe = ident.lower().replace("/", "_") if kind == "person" else ident.replace("/", "_")
    return Path(state_dir) / "dev" / "keys" / f"{kind}-{safe}.ed25519"


@dataclass
class Credential:
    principal: str
    source: str
    notice: str = ""
    key_path: Path | None = None
    token: str | None = None
    token_command: str | None = None

    def prove(self, request: dict[str, Any]) -> Proof:
        if self.key_path is not None:
            return sign_request(request, _cached_key(self.key_path))
        if self.token_command:
            env = {**os.environ, "SIGNOFF_OIDC_NONCE": request_digest(request)}
            try:
                out = subprocess.run(self.token_command, shell=True, env=env, capture_output=True, text=True, timeout=30, check=True)
            except (subprocess.SubprocessError, OSError) as e:
                raise ConfigError(f"SIGNOFF_OIDC_TOKEN_COMMAND failed ({e}); check that it prints an ID token.") from e
            return oidc_proof(request, out.stdout.strip())
        return oidc_proof(request, self.token or "")


_KEYS: dict[tuple[str, int, int], Any] = {}


def _cached_key(path: Path) -> Any:
    """The private key at `path`, parsed again only when the file changes (a stat per request)."""
    try:
        st = Path(path).expanduser().stat()
        stamp = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return load_private_key(path)  # says in one sentence what is wrong with the path
    key = _KEYS.get(stamp)
    if key is None:
        key = _KEYS[stamp] = load_private_key(path)
    return key


def _token(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"SIGNOFF_OIDC_TOKEN names {path}, which cannot be read; give the token or @FILE.") from e
    return value.strip()


def resolve_credential(settings: Settings, kind: str, ident: str) -> Credential:
    """The credential that signs as `kind:ident`, or ConfigError saying how to provide one."""
    principal = f"{kind}:{ident.lower() if kind == 'person' else ident}"
    if settings.identity_key:
        return Credential(principal, f"SIGNOFF_IDENTITY_KEY {settings.identity_key}", key_path=Path(settings.identity_key).expanduser())
    if settings.oidc_token_command:
        return Credential(principal, "SIGNOFF_OIDC_TOKEN_COMMAND", token_command=settings.oidc_token_command)
    if settings.oidc_token:
        return Credential(principal, "SIGNOFF_OIDC_TOKEN", token=_token(settings.oidc_token))
    dev = dev_key_path(settings.state_dir, kind, ident)
    if dev.exists():
        return Credential(
            principal,
            f"dev key {dev}",
            notice=f"note: signing as {principal} with the dev stack's key ({dev}); production needs SIGNOFF_IDENTITY_KEY or SIGNOFF_OIDC_TOKEN",
            key_path=dev,
        )
    raise ConfigError(
        f"no credential to sign as {principal}; set SIGNOFF_IDENTITY_KEY to your private key "
        f"(`signoff keys init --{'agent' if kind == 'agent' else 'person'} {ident}` makes one to register) or SIGNOFF_OIDC_TOKEN."
    )
