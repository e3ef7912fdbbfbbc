#!/usr/bin/env python3
"""The example service's release tests: start the built artifact, probe it, write JUnit XML.

    python3 selftest.py --artifact dist/checkout-good.pyz --junit dist/junit.xml

Like most real test suites, it checks that the build starts, is healthy and is observable; it
does not catch the bad flavour's production error rate — that is the canary's job.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree as ET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--junit", required=True)
    ap.add_argument("--fail", action="append", default=[], help="force a named check to fail (for demos of failing tests)")
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen([sys.executable, args.artifact, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: list[tuple[str, str | None]] = []
    try:
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            try:
                status, _ = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                time.sleep(0.1)
        results.append(("test_starts_and_is_healthy", None if status == 200 else f"/healthz answered {status}"))
        _, metrics = get(f"http://127.0.0.1:{port}/metrics")
        ok = "http_requests_total" in metrics or "http_request_duration_seconds" in metrics
        results.append(("test_exposes_prometheus_metrics", None if ok else "no http_requests_total in /metrics"))
        answered = 0
        for _ in range(5):
            try:
                code, _ = get(f"http://127.0.0.1:{port}/")
                answered += code < 600
            except OSError:
                pass
        results.append(("test_serves_requests", None if answered == 5 else f"only {answered} of 5 requests answered"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    results = [(n, why if n not in args.fail else "forced failure") for n, why in results]
    suite = ET.Element("testsuite", name="checkout", tests=str(len(results)), failures=str(sum(1 for _, w in results if w)))
    for name, why in results:
        case = ET.SubElement(suite, "testcase", classname="checkout.selftest", name=name)
        if why:
            ET.SubElement(case, "failure", message=why)
    Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(args.junit, encoding="utf-8", xml_declaration=True)
    return 1 if any(w for _, w in results) else 0


if __name__ == "__main__":
    sys.exit(main())
