"""A local OIDC issuer for identity tests: discovery document, JWKS and token minting.

A stand-in for the organisation's issuer (SSO, CI workload identity), which a test machine
cannot reach. It speaks the real wire format — `/.well-known/openid-configuration` naming
`jwks_uri`, a JWKS of RSA keys with `kid`s, RS256 ID tokens — and records every request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class OidcIssuerStub:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "stub-" + uuid.uuid4().hex[:8]
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                stub.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body: Any = {"issuer": stub.issuer, "jwks_uri": f"{stub.issuer}/jwks.json", "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == "/jwks.json":
                    jwk = json.loads(RSAAlgorithm.to_jwk(stub.key.public_key()))
                    body = {"keys": [{**jwk, "kid": stub.kid, "use": "sig", "alg": "RS256"}]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "OidcIssuerStub":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mint(
        self,
        subject: str,
        *,
        nonce: str | None = None,
        audience: str = "signoff",
        issuer: str | None = None,
        lifetime: int = 300,
        issued_at: float | None = None,
        key: Any = None,
        kid: str | None = None,
    ) -> str:
        now = issued_at if issued_at is not None else time.time()
        claims: dict[str, Any] = {"iss": issuer or self.issuer, "sub": subject, "aud": audience, "iat": int(now), "exp": int(now + lifetime)}
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})
