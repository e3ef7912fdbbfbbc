"""A tiny HTTP service whose behaviour comes from the configuration baked into its artifact.

The release demos need two artifacts of "the same service" that differ only in how well they
behave, so canary analysis has something real to measure: the good one answers quickly and
without errors, the bad one fails a fixed share of requests and is slower. The configuration is
part of the zipapp, so the behaviour is tied to the digest, exactly like a real code change.

Endpoints: ``/`` (the user-facing request: counted and timed), ``/healthz`` and ``/metrics``
(Prometheus text format). With ``--flags FILE --flag KEY`` the configured behaviour is this
build's new code path behind a feature flag (checkout/flag.py): requests the flag turns off take
the baseline path (the good behaviour); requests are counted by ``variant`` (on/off) and answered
with an ``X-Flag-Variant`` header.
Errors are spread evenly (an accumulator, not a coin toss), so an
error rate of 0.3 is 30 % of any window of requests and tests can assert on it without flaking.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DEFAULT_CONFIG: dict[str, Any] = {"flavour": "dev", "version": "0.0.0", "error_rate": 0.0, "latency_ms": 10, "jitter_ms": 4}
BASELINE: dict[str, Any] = {"error_rate": 0.0, "latency_ms": 10, "jitter_ms": 4}  # the path a flag turned off takes


def load_config() -> dict[str, Any]:
    """The configuration embedded next to this module (config.json in the artifact)."""
    try:
        text = resources.files("checkout").joinpath("config.json").read_text()
    except (FileNotFoundError, OSError):
        return dict(DEFAULT_CONFIG)
    return {**DEFAULT_CONFIG, **json.loads(text)}


def own_digest() -> str:
    """sha256 of the artifact we run from, so /metrics can say which build is serving."""
    path = Path(sys.argv[0])
    if path.is_file():
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return "unknown"


class Behaviour:
    """Decides, per request, the latency and whether it fails; thread-safe."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.error_rate = float(config["error_rate"])
        self.latency = float(config["latency_ms"]) / 1000
        self.jitter = float(config["jitter_ms"]) / 1000
        self._debt = 0.0
        self._lock = threading.Lock()

    def next(self) -> tuple[float, bool]:
        with self._lock:
            self._debt += self.error_rate
            fail = self._debt >= 1.0
            if fail:
                self._debt -= 1.0
        return max(0.0, self.latency + random.uniform(-self.jitter, self.jitter)), fail


def make_server(host: str, port: int, config: dict[str, Any], gate: Any = None) -> ThreadingHTTPServer:
    """`gate` (a checkout.flag.FlagGate) puts the configured behaviour behind a feature flag."""
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests to / by status code.", ["code", *(["variant"] if gate else [])], registry=registry)
    duration = Histogram("http_request_duration_seconds", "Latency of requests to /.", registry=registry)
    info = Gauge("checkout_build_info", "Which build is serving.", ["version", "flavour", "digest"], registry=registry)
    info.labels(str(config["version"]), str(config["flavour"]), own_digest()).set(1)
    codes = ("200", "500")  # every series exists from the start, so error-rate queries are never empty
    for labels in [(code, variant) for code in codes for variant in ("on", "off")] if gate else [(code,) for code in codes]:
        requests.labels(*labels)
    behaviour, baseline = Behaviour(config), Behaviour(BASELINE)
    body_ok = json.dumps({"service": "checkout", "version": config["version"], "ok": True}).encode()
    body_err = json.dumps({"service": "checkout", "version": config["version"], "ok": False, "error": "internal"}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, content_type: str = "application/json", variant: str | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            if variant:
                self.send_header("X-Flag-Variant", variant)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, b'{"ok": true}')
            elif self.path == "/" or self.path.startswith("/?"):
                started = time.perf_counter()
                new_path = gate.new_path() if gate else True
                delay, fail = (behaviour if new_path else baseline).next()
                time.sleep(delay)
                code = 500 if fail else 200
                variant = ("on" if new_path else "off") if gate else None
                self._send(code, body_err if fail else body_ok, variant=variant)
                requests.labels(str(code), *([variant] if variant else [])).inc()
                duration.observe(time.perf_counter() - started)
            else:
                self._send(404, b'{"error": "not found"}')

        def log_message(self, format: str, *args: Any) -> None:  # keep the logs quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="checkout", description="the checkout example service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--flags", help="a flagd flag-definition file; the build's behaviour is its new path behind --flag")
    parser.add_argument("--flag", default="checkout-new-path", help="the flag's key in --flags")
    args = parser.parse_args(argv)
    config = load_config()
    gate = None
    if args.flags:
        from checkout.flag import FlagGate

        gate = FlagGate(args.flags, args.flag)
    server = make_server(args.host, args.port, config, gate)
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        Path(tmp).write_text(str(port))
        os.replace(tmp, args.port_file)
    print(f"checkout {config['version']} ({config['flavour']}) listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
