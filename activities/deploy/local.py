"""The `local` deployment target: the artifact runs as processes on this machine.

It exists so a release can be watched end to end on one laptop, with real traffic and real
metrics: the stable and the canary each run as a process on a free loopback port, and one
traffic generator per service (examples/service/loadgen.py) sends ~20 requests/s split by the
canary weight. Prometheus finds the processes through file_sd target files labelled with
service, digest and track, so a canary analysis can select the canary's series by digest.

A new canary gets traffic only once Prometheus has scraped it: the target writes its file_sd
entry at weight 0, waits until the Prometheus at ``SIGNOFF_PROMETHEUS_URL`` reports the canary's
scrape target up (only when that Prometheus reads this state directory's target files), and
then shifts the weight. Prometheus applies file_sd changes at most every 5 s; without the wait
that discovery delay sat between the canary's first errors and the first sample of them, on the
path from a breach to its rollback. The analysis starts after the deploy returns, so it counts
from the first request the canary serves. Other targets should do the same before shifting
weight (README, "Canary analysis and scraping").

Processes are started in their own sessions so they outlive a worker restart; everything the
target knows is in ``<state_dir>/deploy/<service>.json`` (digests, pids, ports, weight), so a new
worker picks up where the old one stopped. Every call reconciles first: a process that should
be running but died is started again (and that restart is logged).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from activities.artifacts import ArtifactNotFound, ArtifactStore, ArtifactTampered, store_for
from activities.deploy.base import (
    ActionLog,
    DeployError,
    Placement,
    file_lock,
    plan_deploy,
    plan_rollback,
    state_of,
    utc_now,
    write_json_atomically,
)
from activities.runner import command_env
from signoff.config import REPO_ROOT, Settings
from signoff.models import DeploymentState

LOADGEN = REPO_ROOT / "examples" / "service" / "loadgen.py"
START_TIMEOUT_SECONDS = 20.0
#: How long a new canary waits for its first scrape before getting traffic anyway (the analysis
#: then reads an empty vector, inconclusive, until Prometheus catches up).
SCRAPE_WAIT_SECONDS = 30.0
STOP_GRACE_SECONDS = 3.0
TRACKS = ("stable", "canary")


# --------------------------------------------------------------------------- processes


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (guards against pid reuse)."""
    if not pid:
        return False
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        for _ in range(40):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return False
            if state in ("Z", "X"):
                return False
            if cmdline:
                return marker in cmdline
            time.sleep(0.025)  # just forked: the new command line is not visible until exec completes
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(pid: int | None, marker: str, *, grace: float = STOP_GRACE_SECONDS) -> bool:
    """SIGTERM the process group of `pid` (it is a session leader), then SIGKILL after `grace`."""
    if not process_alive(pid, marker):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and process_alive(pid, marker):
        time.sleep(0.05)
    if process_alive(pid, marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and process_alive(pid, marker):
            time.sleep(0.05)
    return True


def _get(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except Exception:  # any failure means "not healthy yet"
        return None


def _get_json(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except Exception:  # unreachable, not Prometheus, not JSON: no answer
        return None


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- target


class LocalTarget:
    """Stable and canary as local processes, plus a traffic generator; see the module docstring.

    Options (``deploy.settings`` in the release file): ``rate`` requests/s of the traffic
    generator (default 20, 0 disables it), ``host`` to bind (default 127.0.0.1),
    ``scrape_wait`` seconds a new canary waits for its first scrape before getting traffic
    (default 30, 0 disables the wait).
    """

    def __init__(
        self,
        settings: Settings,
        options: dict[str, Any] | None = None,
        *,
        store: ArtifactStore | None = None,
        python: str = sys.executable,
    ) -> None:
        options = options or {}
        self.state_dir = Path(settings.state_dir)
        self.root = self.state_dir / "deploy"
        self.targets_dir = self.state_dir / "prometheus" / "targets"
        self.store = store or store_for(self.state_dir)
        self.python = python
        self.rate = float(options.get("rate", 20))
        self.host = str(options.get("host", "127.0.0.1"))
        # set by the flag target: the build reads its feature flag from this flagd file
        self.flag_args = ["--flags", str(options["flags"]), "--flag", str(options["flag"])] if options.get("flags") else []
        self.prometheus_url = str(settings.prometheus_url).rstrip("/")
        self.scrape_wait = float(options.get("scrape_wait", SCRAPE_WAIT_SECONDS))

    # paths -----------------------------------------------------------------

    def state_path(self, service: str) -> Path:
        return self.root / f"{service}.json"

    def targets_path(self, service: str) -> Path:
        return self.targets_dir / f"{service}.json"

    def actions(self, service: str) -> ActionLog:
        return ActionLog(self.root / f"{service}.actions.jsonl")

    # the interface -----------------------------------------------------------

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            state = self._load(service)
            self._reconcile(service, state, release_id)
            want, note = plan_deploy(self._placement(state), digest, weight)
            self._realise(service, state, want, release_id, op="deploy")
            return self._result(service, state, note=note)

    def current(self, service: str) -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            state = self._load(service)
            self._reconcile(service, state, "")
            return self._result(service, state)

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            state = self._load(service)
            self._reconcile(service, state, release_id)
            want = plan_rollback(self._placement(state), to_digest)
            self._realise(service, state, want, release_id, op="rollback")
            return self._result(service, state)

    # for other local tooling (runbook actions run extra replicas the same way) ---

    def load_state(self, service: str) -> dict[str, Any]:
        """The raw state file contents (pids, ports, digests, weight) without reconciling."""
        return self._load(service)

    def start_process(self, service: str, track: str, digest: str) -> dict[str, Any]:
        """Start one detached process of `digest`; returns {digest, pid, port, log, started_at}."""
        return self._start(service, track, digest)

    # internals ---------------------------------------------------------------

    def _load(self, service: str) -> dict[str, Any]:
        path = self.state_path(service)
        if path.exists():
            return json.loads(path.read_text())
        return {"service": service, "stable": None, "canary": None, "weight": 0, "previous": None, "loadgen": None}

    def _save(self, service: str, state: dict[str, Any]) -> None:
        state["updated_at"] = utc_now()
        write_json_atomically(self.state_path(service), state)
        groups = []
        for track in TRACKS:
            proc = state.get(track)
            if proc:
                groups.append(
                    {
                        "targets": [f"{self.host}:{proc['port']}"],
                        "labels": {
                            "service": service,
                            "digest": proc["digest"],
                            "version": proc["digest"].split(":", 1)[1][:12],
                            "track": track,
                        },
                    }
                )
        write_json_atomically(self.targets_path(service), groups)

    @staticmethod
    def _placement(state: dict[str, Any]) -> Placement:
        return Placement(
            stable=(state.get("stable") or {}).get("digest"),
            canary=(state.get("canary") or {}).get("digest"),
            weight=int(state.get("weight") or 0) if state.get("canary") else 0,
            previous=state.get("previous"),
        )

    def _marker(self, proc: dict[str, Any]) -> str:
        return str(self.store.path_for(proc["digest"]))

    def _start(self, service: str, track: str, digest: str) -> dict[str, Any]:
        try:
            artifact = self.store.get(digest)
        except ArtifactTampered as e:
            raise DeployError(str(e), kind="ArtifactTampered") from e
        except ArtifactNotFound as e:
            raise DeployError(
                f"artifact {digest} is not in the artifact store at {self.store.root}; build it with signoff (or store it there) before deploying it locally",
                kind="ArtifactNotFound",
            ) from e
        run_dir = self.root / "run"
        logs = self.root / "logs"
        run_dir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        tag = f"{service}-{track}-{digest.split(':', 1)[1][:12]}"
        port_file = run_dir / f"{tag}.port"
        port_file.unlink(missing_ok=True)
        log_path = logs / f"{tag}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [self.python, str(artifact), "--host", self.host, "--port", "0", "--port-file", str(port_file), *self.flag_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(run_dir),
                env=command_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        port: int | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DeployError(
                    f"{service} {digest} exited with code {proc.returncode} while starting (log: {_log_tail(log_path)}); check that the artifact runs with `python ARTIFACT --port N`",
                    kind="StartFailed",
                )
            if port is None and port_file.exists():
                with contextlib.suppress(ValueError, OSError):
                    port = int(port_file.read_text())
            if port is not None and _get(f"http://{self.host}:{port}/healthz") == 200:
                return {"digest": digest, "pid": proc.pid, "port": port, "log": str(log_path), "started_at": utc_now(), "flag_args": self.flag_args}
            time.sleep(0.05)
        stop_process(proc.pid, str(artifact))
        raise DeployError(
            f"{service} {digest} did not answer /healthz within {START_TIMEOUT_SECONDS:.0f} seconds (log: {_log_tail(log_path)}); check the artifact",
            kind="StartFailed",
            retryable=True,
        )

    def _start_loadgen(self, service: str) -> dict[str, Any]:
        log_path = self.root / "logs" / f"{service}-loadgen.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [self.python, str(LOADGEN), "--state", str(self.state_path(service)), "--rate", str(self.rate), "--host", self.host],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=command_env(),
                start_new_session=True,
            )
        return {"pid": proc.pid, "rate": self.rate, "started_at": utc_now()}

    def _loadgen_marker(self, service: str) -> str:
        return str(self.state_path(service))

    def _reconcile(self, service: str, state: dict[str, Any], release_id: str) -> None:
        """Restart what should run but does not (a crash, a reboot, `stop_all`), or runs with
        other flag settings than this target's (the service moved to or from the flag target)."""
        changed = False
        for track in TRACKS:
            proc = state.get(track)
            if not proc:
                continue
            alive = process_alive(proc.get("pid"), self._marker(proc))
            if alive and proc.get("flag_args", []) == self.flag_args:
                continue
            state[track] = self._start(service, track, proc["digest"])
            if alive:
                stop_process(proc.get("pid"), self._marker(proc))
            self.actions(service).append("restart", track=track, digest=proc["digest"], release_id=release_id)
            changed = True
        if changed:
            self._save(service, state)
        self._ensure_loadgen(service, state)

    def _ensure_loadgen(self, service: str, state: dict[str, Any]) -> None:
        loadgen = state.get("loadgen") or {}
        running = process_alive(loadgen.get("pid"), self._loadgen_marker(service))
        if state.get("stable") and self.rate > 0 and not running:
            state["loadgen"] = self._start_loadgen(service)
            self._save(service, state)
        elif not state.get("stable") and running:
            stop_process(loadgen.get("pid"), self._loadgen_marker(service))
            state["loadgen"] = None
            self._save(service, state)

    def _realise(self, service: str, state: dict[str, Any], want: Placement, release_id: str, *, op: str) -> None:
        """Make the processes match `want`, reusing any process already running the right digest
        (promotion turns the canary process into the stable one without a restart)."""
        now = self._placement(state)
        if want == now:
            return
        log = self.actions(service)
        running = [p for p in (state.get("stable"), state.get("canary")) if p]

        def take(digest: str | None, track: str) -> dict[str, Any] | None:
            if digest is None:
                return None
            preferred = sorted(running, key=lambda p: p is not state.get(track))
            for proc in preferred:
                if proc["digest"] == digest:
                    running.remove(proc)
                    return proc
            log.append("start", track=track, digest=digest, release_id=release_id)
            return self._start(service, track, digest)

        new_stable = take(want.stable, "stable")
        fresh_canary = want.canary is not None and not any(p["digest"] == want.canary for p in running)
        new_canary = take(want.canary, "canary")
        if fresh_canary and new_canary is not None and want.weight > 0:
            # Scraped before it gets traffic: listed for Prometheus at weight 0 first.
            state.update(canary=new_canary, weight=0)
            self._save(service, state)
            self._await_first_scrape(service, new_canary, release_id)
        # The new processes serve before the old ones stop, so traffic never finds nothing.
        state.update(stable=new_stable, canary=new_canary, weight=want.weight, previous=want.previous)
        self._save(service, state)
        for proc in running:
            stop_process(proc.get("pid"), self._marker(proc))
            log.append("stop", digest=proc["digest"], pid=proc.get("pid"), release_id=release_id)
        log.append(
            op,
            stable=want.stable,
            canary=want.canary,
            weight=want.weight,
            previous=want.previous,
            release_id=release_id,
        )
        self._ensure_loadgen(service, state)

    def _prometheus_reads_our_targets(self) -> bool:
        """True when the Prometheus at `prometheus_url` loads this state directory's file_sd files
        (its loaded configuration names the directory); any other Prometheus, or none, never
        scrapes our processes, and waiting for it would only delay the deploy."""
        doc = _get_json(f"{self.prometheus_url}/api/v1/status/config")
        config = ((doc or {}).get("data") or {}).get("yaml") or ""
        return str(self.targets_dir) in config

    def _scraped_up(self, address: str, digest: str) -> bool:
        doc = _get_json(f"{self.prometheus_url}/api/v1/targets?state=active")
        for target in ((doc or {}).get("data") or {}).get("activeTargets") or []:
            labels = target.get("labels") or {}
            if labels.get("digest") == digest and (target.get("discoveredLabels") or {}).get("__address__") == address:
                return target.get("health") == "up"
        return False

    def _await_first_scrape(self, service: str, proc: dict[str, Any], release_id: str) -> None:
        """Block until Prometheus reports the canary's target up (scraped at least once), at most
        `scrape_wait` seconds; the wait (or its timeout) is in the action log."""
        if self.scrape_wait <= 0 or not self._prometheus_reads_our_targets():
            return
        address = f"{self.host}:{proc['port']}"
        started = time.monotonic()
        deadline = started + self.scrape_wait
        while not self._scraped_up(address, proc["digest"]):
            if time.monotonic() >= deadline:
                self.actions(service).append("scrape_wait_timeout", digest=proc["digest"], seconds=self.scrape_wait, release_id=release_id)
                return
            time.sleep(0.1)
        self.actions(service).append("scraped", digest=proc["digest"], waited_seconds=round(time.monotonic() - started, 3), release_id=release_id)

    def _result(self, service: str, state: dict[str, Any], *, note: str = "") -> DeploymentState:
        detail: dict[str, Any] = {
            "actions": self.actions(service).count(),
            "state_file": str(self.state_path(service)),
            "targets_file": str(self.targets_path(service)),
            "loadgen_pid": (state.get("loadgen") or {}).get("pid"),
        }
        for track in TRACKS:
            proc = state.get(track)
            if proc:
                detail[track] = {"pid": proc["pid"], "port": proc["port"], "url": f"http://{self.host}:{proc['port']}/"}
        if note:
            detail["note"] = note
        return state_of(service, self._placement(state), **detail)


def stop_all(state_dir: Path | str) -> list[int]:
    """Kill every process the local target started under `state_dir`; returns the pids stopped.

    The state files stay, so the next call to the target (deploy, current, rollback) starts the
    same digests again: `signoff dev` can stop everything on Ctrl-C and bring it back next time.
    """
    root = Path(state_dir) / "deploy"
    store = store_for(state_dir)
    stopped: list[int] = []
    for path in sorted(root.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        loadgen = state.get("loadgen") or {}
        if stop_process(loadgen.get("pid"), str(path)):
            stopped.append(loadgen["pid"])
        for track in TRACKS:
            proc = state.get(track)
            if proc and stop_process(proc.get("pid"), str(store.path_for(proc["digest"]))):
                stopped.append(proc["pid"])
    return stopped
