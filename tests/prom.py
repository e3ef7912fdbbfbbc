"""A real Prometheus server for tests (the Debian package's /usr/bin/prometheus).

    with start_prometheus(tmp_path, file_sd_dir=state / "prometheus" / "targets") as prom:
        ... prom.url ...
        prom.stop()          # "Prometheus is down" from here on

Targets come from file_sd files (the local deploy target writes
`<state_dir>/prometheus/targets/<service>.json`, re-read every second) and/or static
`host:port` strings. The server listens on a free loopback port, keeps its TSDB in the test's
tmp directory, and is killed when the `with` block ends, whatever happened inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator

import httpx
import yaml

PROMETHEUS_BIN = os.environ.get("SIGNOFF_TEST_PROMETHEUS_BIN", "/usr/bin/prometheus")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: all held at once while they are picked (one at a time, the OS can
    hand the same port out twice; CI once gave the Temporal UI and the gateway the same one)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def prometheus_available() -> bool:
    return Path(PROMETHEUS_BIN).exists() or shutil.which(PROMETHEUS_BIN) is not None


def write_targets(path: Path, groups: list[dict[str, Any]]) -> None:
    """A file_sd target file, `[{"targets": ["host:port"], "labels": {...}}, ...]`, replaced
    atomically (the format the local deploy target writes; Prometheus re-reads it every second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


class PrometheusServer:
    """A running /usr/bin/prometheus; a context manager that always stops it."""

    def __init__(
        self,
        workdir: Path,
        *,
        file_sd_dir: Path | None = None,
        static_targets: list[str] | None = None,
        scrape_interval: str = "1s",
        ready_timeout: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        scrape_configs: list[dict[str, Any]] = []
        if file_sd_dir is not None:
            file_sd_dir.mkdir(parents=True, exist_ok=True)
            scrape_configs.append(
                {
                    "job_name": "signoff-targets",
                    "file_sd_configs": [{"files": [str(file_sd_dir / "*.json")], "refresh_interval": "1s"}],
                }
            )
        if static_targets:
            scrape_configs.append({"job_name": "static", "static_configs": [{"targets": list(static_targets)}]})
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval, "scrape_timeout": scrape_interval},
            "scrape_configs": scrape_configs,
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self._start(ready_timeout)

    def _start(self, ready_timeout: float) -> None:
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {ready_timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Terminate (then kill) the server; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query straight over HTTP, for tests that wait for data to appear."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for(self, promql: str, *, timeout: float = 20.0, at_least: int = 1) -> list[dict[str, Any]]:
        """Poll until `promql` returns `at_least` series (e.g. two scrapes exist for rate())."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) >= at_least:
                return result
            time.sleep(0.25)
        raise TimeoutError(f"{promql!r} returned {len(result)} series after {timeout}s; targets: {self.targets()}")

    def targets(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=5.0)
        return response.json()["data"]["activeTargets"]

    def __enter__(self) -> "PrometheusServer":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_prometheus(
    tmp_path: Path,
    *,
    file_sd_dir: Path | None = None,
    static_targets: list[str] | None = None,
    scrape_interval: str = "1s",
) -> PrometheusServer:
    """Start a real Prometheus under `tmp_path/prometheus` and wait until it is ready."""
    if not prometheus_available():
        raise RuntimeError(f"{PROMETHEUS_BIN} is missing; install the Debian package `prometheus`")
    return PrometheusServer(
        tmp_path / "prometheus", file_sd_dir=file_sd_dir, static_targets=static_targets, scrape_interval=scrape_interval
    )


def prometheus_fixture(tmp_path: Path, file_sd_dir: Path | None = None) -> Iterator[PrometheusServer]:
    """Body for a pytest fixture: `yield from prometheus_fixture(tmp_path, state / "prometheus" / "targets")`."""
    server = start_prometheus(tmp_path, file_sd_dir=file_sd_dir)
    try:
        yield server
    finally:
        server.stop()
