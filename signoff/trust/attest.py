"""The gateway's attestation: "the Slack (or Jira) user X, mapped to person P, did this".

The gateway authenticates the channel (Slack's request signature and team, Jira's HMAC and
timestamp), maps the account to a person through the directory, and signs that statement with
its own key. The workflow accepts `channel: slack|jira` only with a valid attestation from a
registered gateway, so nothing else — not a raw Temporal Update, not another process — can
speak for a chat click.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.config import Settings
from signoff.errors import ConfigError
from signoff.models import ApprovalAttempt, Proof
from signoff.trust.keys import load_private_key
from signoff.trust.proofs import new_request, sign_request

ATTESTATION_VALIDITY = timedelta(minutes=2)


class GatewaySigner:
    """The gateway's key (SIGNOFF_GATEWAY_KEY, only in the gateway process), loaded once."""

    def __init__(self, key_path: Path | None, gateway_id: str = "gateway", *, key: Ed25519PrivateKey | None = None) -> None:
        self.key_path = key_path
        self.gateway_id = gateway_id
        self._key = key
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "GatewaySigner":
        return cls(settings.gateway_key_path, settings.gateway_id)

    def key(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                if self.key_path is None or not Path(self.key_path).exists():
                    raise ConfigError(
                        f"the gateway has no attestation key at {self.key_path}; set SIGNOFF_GATEWAY_KEY "
                        "(`signoff keys init --gateway` makes one; register its public half in the agent registry's gateways)."
                    )
                self._key = load_private_key(self.key_path)
            return self._key

    def attest(self, *, action: str, subject: str, person: str, channel: str, external: dict[str, Any], gate: str | None = None,
               digest: str | None = None, body: dict[str, Any] | None = None, plan: str | None = None) -> Proof:
        request = new_request(
            principal=f"gateway:{self.gateway_id}",
            action=action,
            subject=subject,
            channel=channel,
            gate=gate,
            digest=digest,
            plan=plan,
            body=body,
            on_behalf_of=person,
            external=external,
            validity=ATTESTATION_VALIDITY,
        )
        return sign_request(request, self.key())

    def attest_attempt(self, attempt: ApprovalAttempt, external: dict[str, Any]) -> ApprovalAttempt:
        proof = self.attest(
            action=attempt.decision,
            subject=attempt.release_id,
            person=attempt.identity,
            channel=attempt.channel,
            external=external,
            gate=attempt.gate,
            digest=attempt.digest,
            plan=attempt.plan,
            body={"reason": attempt.reason},
        )
        return attempt.model_copy(update={"proof": proof})
