"""The registered runbook actions, run one step at a time by the `run_runbook_step` activity.

A runbook can only do what is in this file: `scale`, `restart`, `rollback`, `set_weight`,
`toggle_flag`, `wait`, `notify` and `run_script` (a script whose sha256 is pinned in the
runbook). There is no free-form shell. Deployment actions go through the same deployment
targets as releases (activities/deploy), so a runbook rollback is exactly a release rollback:
"deploy the previous stable digest again".

Every action has a dry run that reads the current state and says precisely what it would
change, without changing anything — that is what `runbook run --dry-run` shows.

Local-target notes (the `local` target runs one process per track and has no restart or
replica count of its own):
- ``restart`` stops the service's processes and lets the target's reconciliation start the same
  digests again (logged by the target as ``restart``), then restarts any extra replicas;
- ``scale`` runs extra stable replicas next to the target's stable process, recorded in
  ``<state>/deploy/<service>.replicas.json`` and published to Prometheus through a file_sd file,
  so "replicas" is real processes with real metrics. Rollback and restart keep them on the
  stable digest.
Other targets get ``restart``/``scale`` when they expose methods of those names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deploy import LocalTarget, target_for
from activities.deploy.base import DeployError, DeploymentTarget, file_lock, utc_now, write_json_atomically
from activities.deploy.local import process_alive, stop_process
from activities.runner import command_env
from signoff.config import Settings
from signoff.errors import SignoffError
from signoff.models import DeploymentState
from signoff.runbooks import (
    ACTIONS,
    NotifyArgs,
    PreparedRunbook,
    PrepareRunbook,
    RestartArgs,
    RollbackArgs,
    RunScriptArgs,
    ScaleArgs,
    SetWeightArgs,
    StepRequest,
    StepResult,
    ToggleFlagArgs,
    WaitArgs,
    describe_validation_error,
    prepare,
)

RUN_RUNBOOK_STEP = "run_runbook_step"
PREPARE_RUNBOOK = "prepare_runbook"
SCRIPT_INTERPRETERS = {".py": sys.executable, ".sh": "/bin/sh"}
SCRIPT_OUTPUT_TAIL = 4000


def _fail(message: str, kind: str, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=not retryable)


def _heartbeat(detail: str) -> None:
    """Heartbeat when running as an activity; a no-op when called directly (tests, CLI)."""
    with contextlib.suppress(RuntimeError):
        activity.heartbeat(detail)


def _placement(state: DeploymentState) -> dict[str, Any]:
    return {"stable": state.stable, "canary": state.canary, "weight": state.weight, "previous": state.detail.get("previous")}


# --------------------------------------------------------------------------- local replicas


class LocalReplicas:
    """Extra stable replicas of a service on the local target (see the module docstring)."""

    def __init__(self, target: LocalTarget) -> None:
        self.target = target

    def path(self, service: str) -> Path:
        return self.target.root / f"{service}.replicas.json"

    def targets_path(self, service: str) -> Path:
        return self.target.targets_dir / f"{service}-replicas.json"

    def _marker(self, digest: str) -> str:
        return str(self.target.store.path_for(digest))

    def read(self, service: str) -> list[dict[str, Any]]:
        path = self.path(service)
        return json.loads(path.read_text()).get("replicas", []) if path.exists() else []

    def alive(self, service: str, digest: str | None) -> list[dict[str, Any]]:
        """Extra replicas that are running `digest` right now."""
        return [r for r in self.read(service) if r["digest"] == digest and process_alive(r.get("pid"), self._marker(r["digest"]))]

    def count(self, service: str, stable: str | None) -> int:
        """Stable processes serving: the target's own one plus live extras."""
        return (1 if stable else 0) + len(self.alive(service, stable))

    def converge(self, service: str, stable: str, replicas: int, *, run_id: str, restart: bool = False) -> list[dict[str, Any]]:
        """Make exactly ``replicas - 1`` extras run `stable`; with `restart`, replace them all."""
        with file_lock(self.target.root / f"{service}.replicas.lock"):
            keep: list[dict[str, Any]] = []
            for r in self.read(service):
                alive = process_alive(r.get("pid"), self._marker(r["digest"]))
                if alive and r["digest"] == stable and len(keep) < replicas - 1 and not restart:
                    keep.append(r)
                elif alive:
                    stop_process(r.get("pid"), self._marker(r["digest"]))
                    self.target.actions(service).append("stop", track="replica", digest=r["digest"], pid=r.get("pid"), release_id=run_id)
            while len(keep) < replicas - 1:
                index = len(keep) + 1
                _heartbeat(f"starting replica {index + 1} of {service}")
                proc = self.target._start(service, f"replica{index}", stable)  # same launch as the target's own processes
                proc["index"] = index
                keep.append(proc)
                self.target.actions(service).append("start", track="replica", digest=stable, pid=proc["pid"], release_id=run_id)
            write_json_atomically(self.path(service), {"service": service, "replicas": keep, "updated_at": utc_now()})
            write_json_atomically(
                self.targets_path(service),
                [
                    {
                        "targets": [f"{self.target.host}:{r['port']}"],
                        "labels": {
                            "service": service,
                            "digest": r["digest"],
                            "version": r["digest"].split(":", 1)[1][:12],
                            "track": "stable",
                            "replica": str(r["index"]),
                        },
                    }
                    for r in keep
                ],
            )
            return keep


# --------------------------------------------------------------------------- the activity


class RunbookActivities:
    """Runbook steps. Holds only settings; targets are built per step from the runbook's deploy block."""

    def __init__(self, settings: Settings, *, target_factory: Callable[[Settings, Any], DeploymentTarget] = target_for) -> None:
        self.settings = settings
        self.target_factory = target_factory

    @activity.defn(name=PREPARE_RUNBOOK)
    def prepare_runbook(self, request: PrepareRunbook) -> PreparedRunbook:
        """Find, certify-check and parameterise a runbook (file reads are side effects, so they
        happen here and not in the workflow). A refusal is returned, not raised."""
        return prepare(request, self.settings)

    @activity.defn(name=RUN_RUNBOOK_STEP)
    def run_runbook_step(self, request: StepRequest) -> StepResult:
        """Run (or dry-run) one rendered step; a permanent failure is a non-retryable ApplicationError."""
        return self.run_step(request)

    def run_step(self, request: StepRequest) -> StepResult:
        handler = getattr(self, f"_{request.step.action}") if request.step.action in ACTIONS else None
        if handler is None:
            raise _fail(f"step {request.step.name} uses action {request.step.action!r}, which is not a registered runbook action", "UnknownAction")
        try:
            return handler(request)
        except ValidationError as e:
            raise _fail(
                f"step {request.step.name} ({request.step.action}) has bad arguments: {describe_validation_error(e)}", "BadStepArguments"
            ) from e
        except DeployError as e:
            raise ApplicationError(str(e), type=e.kind, non_retryable=not e.retryable) from e

    # helpers ------------------------------------------------------------------

    def _target(self, request: StepRequest) -> DeploymentTarget:
        return self.target_factory(self.settings, request.target)

    def _result(self, request: StepRequest, detail: str, **fields: Any) -> StepResult:
        return StepResult(
            name=request.step.name,
            action=request.step.action,
            state="dry_run" if request.dry_run else "succeeded",
            detail=("dry run: would " if request.dry_run else "") + detail,
            **fields,
        )

    @staticmethod
    def _now(target: DeploymentTarget, service: str, *, dry_run: bool) -> DeploymentState:
        """The placement in force. A dry run must change nothing, and the local target's
        `current` restarts dead processes, so a dry run reads its state file instead."""
        if dry_run and isinstance(target, LocalTarget):
            state = target._load(service)
            detail: dict[str, Any] = {"previous": state.get("previous")}
            for track in ("stable", "canary"):
                if state.get(track):
                    detail[track] = {"pid": state[track].get("pid"), "port": state[track].get("port")}
            placement = target._placement(state)
            return DeploymentState(service=service, stable=placement.stable, canary=placement.canary, weight=placement.weight, detail=detail)
        return target.current(service)

    def _replicas(self, target: DeploymentTarget) -> LocalReplicas | None:
        return LocalReplicas(target) if isinstance(target, LocalTarget) else None

    # deployment actions --------------------------------------------------------

    def _rollback(self, request: StepRequest) -> StepResult:
        args = RollbackArgs.model_validate(request.step.args)
        target = self._target(request)
        now = self._now(target, args.service, dry_run=request.dry_run)
        to = now.detail.get("previous") if args.to == "previous" else self._last_good(args.service) if args.to == "last-good" else args.to
        if not to:
            raise _fail(f"{args.service} has no previous stable digest to roll back to; name a digest with to: sha256:…", "NoPreviousDigest")
        if request.dry_run:
            return self._result(request, f"roll {args.service} back from {now.stable} to {to}", before=_placement(now), after=_placement(now))
        after = target.rollback(args.service, to, release_id=request.run_id)
        replicas = self._replicas(target)
        if replicas is not None and after.stable and replicas.read(args.service):
            replicas.converge(args.service, after.stable, replicas.count(args.service, now.stable), run_id=request.run_id)
        return self._result(
            request, f"rolled {args.service} back from {now.stable} to {after.stable}", changed=now.stable != after.stable, before=_placement(now), after=_placement(after)
        )

    def _last_good(self, service: str) -> str:
        """The last digest that succeeded with verified provenance (signed log), its provenance
        checked again now: signoff's own signed build provenance against the orchestrator key. A
        Sigstore bundle is not kept by signoff (only its hash), so for those the verified signed
        record of its verification is what stands."""
        from activities.deploy import DeployActivities
        from signoff.audit import public_key_from_settings, store_from_settings
        from signoff.trace import last_good
        from signoff.trust.evidence import EvidenceRefused

        try:
            good = last_good(store_from_settings(self.settings), public_key_from_settings(self.settings), service)
        except SignoffError as e:
            raise _fail(str(e), "NoLastGood") from e
        if good["provenance"] == "signoff-build":
            try:
                DeployActivities(self.settings).verified_build_profile(good["digest"])
            except EvidenceRefused as e:
                raise _fail(f"the last good digest of {service} no longer has valid provenance, so it is not rolled back to: {e}", "ProvenanceRefused") from e
        return str(good["digest"])

    def _set_weight(self, request: StepRequest) -> StepResult:
        args = SetWeightArgs.model_validate(request.step.args)
        target = self._target(request)
        now = self._now(target, args.service, dry_run=request.dry_run)
        if not now.canary:
            raise _fail(f"{args.service} has no canary running, so there is no weight to set; start a release with a canary first", "NoCanary")
        if request.dry_run:
            return self._result(request, f"set the canary {now.canary} of {args.service} from {now.weight}% to {args.weight}%", before=_placement(now), after=_placement(now))
        after = target.deploy(args.service, now.canary, args.weight, release_id=request.run_id)
        return self._result(
            request, f"set the canary of {args.service} from {now.weight}% to {args.weight}%", changed=_placement(now) != _placement(after), before=_placement(now), after=_placement(after)
        )

    def _restart(self, request: StepRequest) -> StepResult:
        args = RestartArgs.model_validate(request.step.args)
        target = self._target(request)
        now = self._now(target, args.service, dry_run=request.dry_run)
        if not now.stable:
            raise _fail(f"{args.service} is not deployed on this target, so there is nothing to restart; deploy it first", "NotDeployed")
        tracks = [t for t in ("stable", "canary") if isinstance(now.detail.get(t), dict)]
        if request.dry_run:
            return self._result(request, f"restart the {' and '.join(tracks) or 'running'} processes of {args.service} ({now.stable})", before=_pids(now), after=_pids(now))
        if isinstance(target, LocalTarget):
            for track in tracks:
                digest = now.stable if track == "stable" else now.canary
                assert digest is not None
                stop_process(now.detail[track]["pid"], str(target.store.path_for(digest)))
            after = target.current(args.service)  # reconciliation starts the stopped digests again
            replicas = LocalReplicas(target)
            if replicas.read(args.service):
                replicas.converge(args.service, now.stable, replicas.count(args.service, now.stable), run_id=request.run_id, restart=True)
        elif callable(getattr(target, "restart", None)):
            after = target.restart(args.service)  # type: ignore[attr-defined]
        else:
            raise _fail(f"the {request.target.target} target cannot restart {args.service}; restart it with that system's own tools", "Unsupported")
        return self._result(request, f"restarted {args.service} ({now.stable})", changed=True, before=_pids(now), after=_pids(after))

    def _scale(self, request: StepRequest) -> StepResult:
        args = ScaleArgs.model_validate(request.step.args)
        target = self._target(request)
        now = self._now(target, args.service, dry_run=request.dry_run)
        if not now.stable:
            raise _fail(f"{args.service} is not deployed on this target, so there is nothing to scale; deploy it first", "NotDeployed")
        replicas = self._replicas(target)
        if replicas is None:
            if not callable(getattr(target, "scale", None)):
                raise _fail(f"the {request.target.target} target cannot scale {args.service}; scale it with that system's own tools", "Unsupported")
            if request.dry_run:
                return self._result(request, f"scale {args.service} to {args.replicas} replicas")
            target.scale(args.service, args.replicas)  # type: ignore[attr-defined]
            return self._result(request, f"scaled {args.service} to {args.replicas} replicas", changed=True, after={"replicas": args.replicas})
        before = replicas.count(args.service, now.stable)
        if request.dry_run:
            return self._result(request, f"scale {args.service} from {before} to {args.replicas} replicas of {now.stable}", before={"replicas": before}, after={"replicas": before})
        replicas.converge(args.service, now.stable, args.replicas, run_id=request.run_id)
        after = replicas.count(args.service, now.stable)
        target.actions(args.service).append("scale", replicas=after, digest=now.stable, release_id=request.run_id)
        return self._result(request, f"scaled {args.service} from {before} to {after} replicas of {now.stable}", changed=before != after, before={"replicas": before}, after={"replicas": after})

    # other actions ---------------------------------------------------------------

    def flag_path(self, service: str) -> Path:
        return Path(self.settings.state_dir) / "flags" / f"{service}.json"

    def _toggle_flag(self, request: StepRequest) -> StepResult:
        """Flags are written in flagd's flag-definition format, so an OpenFeature flagd provider can serve the file."""
        args = ToggleFlagArgs.model_validate(request.step.args)
        path = self.flag_path(args.service)
        wanted = "on" if args.enabled else "off"
        if request.dry_run:  # read only: no lock file, no directory
            before = self._flag_state(self._flag_document(path), args.flag)
            return self._result(request, f"set flag {args.flag} of {args.service} to {wanted} in {path} (now {_on_off(before)})", before={args.flag: before}, after={args.flag: before})
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(f".{path.name}.lock")):
            document = self._flag_document(path)
            before = self._flag_state(document, args.flag)
            if before is args.enabled:
                return self._result(request, f"flag {args.flag} of {args.service} is already {wanted}", before={args.flag: before}, after={args.flag: before})
            document["flags"][args.flag] = {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on" if args.enabled else "off",
                "metadata": {"updated_by": request.run_id, "updated_at": utc_now(), "runbook": request.runbook},
            }
            write_json_atomically(path, document)
        return self._result(request, f"set flag {args.flag} of {args.service} to {'on' if args.enabled else 'off'}", changed=True, before={args.flag: before}, after={args.flag: args.enabled})

    @staticmethod
    def _flag_document(path: Path) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"$schema": "https://flagd.dev/schema/v0/flags.json"}
        document.setdefault("flags", {})
        return document

    @staticmethod
    def _flag_state(document: dict[str, Any], flag: str) -> bool | None:
        entry = document["flags"].get(flag)
        return None if entry is None else entry.get("defaultVariant") == "on"

    def _wait(self, request: StepRequest) -> StepResult:
        args = WaitArgs.model_validate(request.step.args)
        if request.dry_run:
            return self._result(request, f"wait {args.seconds:g} seconds")
        deadline = time.monotonic() + args.seconds
        while (left := deadline - time.monotonic()) > 0:
            _heartbeat(f"waiting, {left:.0f}s left")
            time.sleep(min(1.0, left))
        return self._result(request, f"waited {args.seconds:g} seconds")

    def _notify(self, request: StepRequest) -> StepResult:
        args = NotifyArgs.model_validate(request.step.args)
        return self._result(request, f"notify: {args.text}", text=args.text)

    def _run_script(self, request: StepRequest) -> StepResult:
        args = RunScriptArgs.model_validate(request.step.args)
        base = Path(request.runbook_dir or self.settings.runbook_dir).resolve()
        script = (base / args.path).resolve()
        if base not in script.parents:
            raise _fail(f"script {args.path} is outside the runbook directory {base}; keep scripts next to the runbooks", "ScriptOutsideRunbooks")
        interpreter = SCRIPT_INTERPRETERS.get(script.suffix)
        if interpreter is None:
            raise _fail(f"script {args.path} has suffix {script.suffix!r}; runbook scripts must be .py or .sh", "UnsupportedScript")
        try:
            data = script.read_bytes()
        except FileNotFoundError:
            raise _fail(f"script {args.path} does not exist in {base}; add it or fix the path in the runbook", "ScriptNotFound") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != args.sha256:
            raise _fail(
                f"script {args.path} has sha256 {actual} but the runbook pins {args.sha256}; refusing to run a script that is not the pinned one",
                "ScriptHashMismatch",
            )
        if request.dry_run:
            return self._result(request, f"run {args.path} (sha256 {actual[:12]}… verified) with arguments {args.args}")
        # Run the bytes that were hashed, not the path again, so the file cannot change in between,
        # confined like every release command (activities/sandbox.py): a copy of the runbook
        # directory as its workspace, no network, nothing of the worker's state in view.
        from activities import sandbox

        try:
            profile = sandbox.choose_profile(sandbox.HERMETIC)
        except sandbox.SandboxUnavailable as e:
            raise _fail(str(e), "SandboxUnavailable") from e
        state = Path(self.settings.state_dir).resolve()
        hidden = sandbox.hidden_paths(self.settings)
        workspace = state / "workspaces" / f"{request.run_id}-{request.step.name}"
        sandbox.prepare_workspace(base, workspace, hidden=hidden, fresh=True)
        copy = workspace / args.path
        copy.write_bytes(data)
        # What the script may want to log; the reduced environment keeps worker secrets out.
        env = {
            **command_env({"RUNBOOK_RUN_ID": request.run_id, "RUNBOOK_NAME": request.runbook, "RUNBOOK_STEP": request.step.name}),
            "PATH": sandbox.sandbox_path(),
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
        }
        timeout = request.step.timeout.total_seconds()
        limits = sandbox.Limits.from_env(cpu_seconds=max(1, int(timeout) + 1))
        spec = sandbox.SandboxSpec(
            command=shlex.join([interpreter, str(Path(sandbox.WORKSPACE_MOUNT) / args.path) if profile != sandbox.UNCONFINED else str(copy), *args.args]),
            source=base,
            workspace=workspace,
            cwd=workspace,
            env=env,
            profile=profile,
            hidden=hidden,
        )
        confined = profile != sandbox.UNCONFINED
        with subprocess.Popen(
            spec.argv(),
            cwd="/" if confined else str(workspace),
            env={} if confined else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=sandbox.preexec(limits, drop=not confined),
        ) as proc:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    # communicate() drains the pipe while waiting, so chatty scripts never block.
                    raw, _ = proc.communicate(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.communicate()
                        raise _fail(f"script {args.path} did not finish within {timeout:g} seconds and was killed", "ScriptTimeout", retryable=True) from None
                    _heartbeat(f"running {args.path}")
            output = raw.decode(errors="replace")
        tail = output[-SCRIPT_OUTPUT_TAIL:]
        if proc.returncode != 0:
            raise _fail(f"script {args.path} exited with code {proc.returncode}: {tail.strip()[-500:]}", "ScriptFailed", retryable=True)
        return self._result(request, f"ran {args.path} (sha256 {actual[:12]}…): {tail.strip()[-500:]}", changed=True, after={"exit_code": 0, "output": tail})


def _on_off(value: bool | None) -> str:
    return "unset" if value is None else ("on" if value else "off")


def _pids(state: DeploymentState) -> dict[str, Any]:
    return {t: state.detail[t]["pid"] for t in ("stable", "canary") if isinstance(state.detail.get(t), dict)}


def activities_from_settings(settings: Settings) -> list[Callable[..., Any]]:
    acts = RunbookActivities(settings)
    return [acts.prepare_runbook, acts.run_runbook_step]
