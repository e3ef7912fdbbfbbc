"""Build and test activities: run the release's configured command in the sandbox.

Every command runs confined by bubblewrap (activities/sandbox.py): no network unless the policy
chose the `fetch` profile, the release's checkout read-only, one writable workspace holding a
copy of it (per release, shared by its build and its tests), nothing of the worker's state in
view, rlimits, and everything it started killed with its pid namespace.

Why it is shaped like this:

* The command runs through ``/bin/sh -c`` in its own session (process group), so a timeout or
  a cancelled release kills the command *and everything it started* (compilers, test
  runners, background servers), not just the shell.
* The environment is reduced to an allow-list. The worker holds Slack, Jira and signing
  secrets in its environment; a build script written by an agent must never see them.
* The activity heartbeats every second with the tail of the output, so the Temporal UI
  shows progress, a dead worker is noticed within the heartbeat timeout, and a retried
  attempt can find and kill the process group an earlier (crashed) attempt left behind.
* Permanent problems (no such command, a failing build, a timeout) are non-retryable
  ``ApplicationError``s with one sentence; the workflow turns them into ``failed`` with
  that sentence as the reason. A failing *test run* is not an error: the summary is
  returned and the workflow decides what failed tests mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import sandbox
from activities.artifacts import ArtifactStore, store_for
from signoff.config import Settings
from signoff.errors import SignoffError
from signoff.models import (
    BuildRequest,
    BuildResult,
    CommandRequest,
    Component,
    Finding,
    SbomRequest,
    SbomResult,
    ScanRequest,
    ScanResult,
    TestRequest,
    TestSummary,
)

#: Variables a build may inherit from the worker. Everything else (SLACK_*, JIRA_*, SIGNOFF_*,
#: cloud credentials, ...) is dropped; the release can add its own through ``req.env``.
ENV_ALLOW_LIST = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR", "SOURCE_DATE_EPOCH")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

HEARTBEAT_SECONDS = 1.0
TERM_GRACE_SECONDS = 5.0
TAIL_BYTES = 64 * 1024
HEARTBEAT_TAIL_CHARS = 2000

BUILD_TYPE = "https://signoff.dev/build/command/v1"
BUILDER_ID = "https://signoff.dev/worker"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"


def command_env(extra: dict[str, str] | None = None, *, source: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user command gets: the allow-list from `source` plus `extra`."""
    source = dict(os.environ) if source is None else source
    env = {k: source[k] for k in ENV_ALLOW_LIST if k in source}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra or {})
    return env


@dataclass
class CommandOutcome:
    exit_code: int
    output: str
    duration_seconds: float

    @property
    def last_line(self) -> str:
        for line in reversed(self.output.splitlines()):
            if line.strip():
                return line.strip()[:300]
        return "(no output)"


# --------------------------------------------------------------------------- process groups


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] = state, fields[2] = pgrp (see proc(5))
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def kill_group(pgid: int, *, grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM the whole group, give it `grace` seconds, then SIGKILL what is left."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        await asyncio.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _is_our_shell(pid: int, command: str) -> bool:
    """Whether `pid` is still the ``/bin/sh -c command`` an earlier attempt started (pid reuse guard)."""
    argv: list[bytes] = []
    for _ in range(40):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if argv != [b""]:
            break
        time.sleep(0.025)  # a process that is exec'ing shows an empty command line for a moment
    # `/bin/sh -c COMMAND`, or bubblewrap's argv ending in the same two words
    return len(argv) >= 4 and argv[-3:] == [b"-c", command.encode(), b""]


async def _kill_leftover_from_previous_attempt(command: str) -> None:
    """A worker that crashed mid-build leaves its (detached) process group running; the retry
    finds its pgid in the last heartbeat and stops it before starting again."""
    try:
        details = activity.info().heartbeat_details
    except RuntimeError:
        return
    if not details:
        return
    last = details[-1]
    pgid = last.get("pgid") if isinstance(last, dict) else None
    if isinstance(pgid, int) and _is_our_shell(pgid, command):
        activity.logger.info("stopping process group %s left by a previous attempt", pgid)
        await kill_group(pgid)


def _heartbeat(details: dict[str, Any]) -> None:
    with contextlib.suppress(RuntimeError):  # not running inside an activity (direct use)
        activity.heartbeat(details)


# --------------------------------------------------------------------------- running


@dataclass
class Launch:
    """How to start one command: plain (`/bin/sh -c` in `cwd`) or a sandbox's argv."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    preexec: Any = None


async def run_command(
    req: CommandRequest, *, what: str, launch: Launch | None = None, on_killed: Callable[[str, str], None] | None = None
) -> CommandOutcome:
    """Run `req.command` under the rules in the module docstring and return its outcome.

    Raises non-retryable ApplicationErrors for a missing working directory, a missing or
    non-executable command (exit 126/127) and a timeout. Cancellation kills the group and
    re-raises. `on_killed(why, output tail)` runs once the group is killed for either.
    """
    workdir = Path(req.workdir)
    if not workdir.is_dir():
        raise ApplicationError(
            f"the {what} working directory {workdir} does not exist; set working_dir in the release file to an existing directory",
            type="BadWorkdir",
            non_retryable=True,
        )
    await _kill_leftover_from_previous_attempt(req.command)
    launch = launch or Launch(["/bin/sh", "-c", req.command], workdir, command_env(req.env))

    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *launch.argv,
        cwd=str(launch.cwd),
        env=launch.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=launch.preexec,
    )
    pgid = proc.pid
    buffer: deque[bytes] = deque()
    buffered = 0

    async def pump() -> None:
        nonlocal buffered
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(4096):
            buffer.append(chunk)
            buffered += len(chunk)
            while buffered - len(buffer[0]) >= TAIL_BYTES and len(buffer) > 1:
                buffered -= len(buffer.popleft())

    def tail(chars: int | None = None) -> str:
        text = b"".join(buffer).decode("utf-8", "replace")
        return text if chars is None else text[-chars:]

    reader = asyncio.create_task(pump())
    waiter = asyncio.create_task(proc.wait())
    deadline = started + req.timeout_seconds
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await kill_group(pgid)
                if on_killed is not None:
                    on_killed(f"killed after its {req.timeout_seconds} s time limit", tail())
                raise ApplicationError(
                    f"the {what} command did not finish within {req.timeout_seconds} seconds and was stopped; "
                    f"make it faster or raise {what}.timeout_seconds in the release file",
                    {"output_tail": tail(HEARTBEAT_TAIL_CHARS)},
                    type="Timeout",
                    non_retryable=True,
                )
            done, _ = await asyncio.wait({waiter}, timeout=min(HEARTBEAT_SECONDS, remaining))
            if done:
                break
            _heartbeat({"pgid": pgid, "elapsed": round(time.monotonic() - started, 1), "tail": tail(HEARTBEAT_TAIL_CHARS)})
        exit_code = waiter.result()
        # Output may still be buffered in the pipe; background children that keep the pipe
        # open must not hold the activity forever.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), timeout=2.0)
    except asyncio.CancelledError:
        await asyncio.shield(kill_group(pgid))
        if on_killed is not None:
            on_killed("killed: the release was stopped (cancelled)", tail())
        raise
    finally:
        if not waiter.done():
            _signal_group(pgid, signal.SIGKILL)
        reader.cancel()
        if _group_alive(pgid):  # stragglers the command left in the background
            _signal_group(pgid, signal.SIGKILL)
        if not waiter.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(waiter, timeout=2.0)

    outcome = CommandOutcome(exit_code=exit_code, output=tail(), duration_seconds=time.monotonic() - started)
    if exit_code in (126, 127):
        raise ApplicationError(
            f"the {what} command could not be run ({outcome.last_line}); check the command in the release file",
            {"exit_code": exit_code, "output_tail": tail(HEARTBEAT_TAIL_CHARS)},
            type="BadCommand",
            non_retryable=True,
        )
    return outcome


# --------------------------------------------------------------------------- provenance


def _git_commit(workdir: Path) -> tuple[str, str] | None:
    """(repository URI, commit) of the working directory, or None when it is not a Git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(workdir), "rev-parse", "HEAD", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            env=command_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) < 2:
        return None
    return f"git+file://{lines[1]}", lines[0]


def provenance_statement(
    *,
    req: BuildRequest,
    subject_name: str,
    digest: str,
    started: datetime,
    finished: datetime,
    profile: str = sandbox.UNCONFINED,
    limits: sandbox.Limits | None = None,
) -> dict[str, Any]:
    """An in-toto Statement v1 with a SLSA provenance v1 predicate describing this build.

    The build parameters are what the release file said (command, output); the resolved
    dependency is the source commit, so a verifier can tie the digest to the code it came from.
    """
    dependencies: list[dict[str, Any]] = []
    source = _git_commit(Path(req.checkout or req.workdir))
    if source is not None:
        uri, commit = source
        dependencies.append({"uri": uri, "digest": {"gitCommit": commit}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                # The sandbox profile is part of the build type and the builder id, so a verifier
                # tells a hermetic build from one with network, or from an unconfined one.
                "buildType": f"{BUILD_TYPE}?sandbox={profile}",
                "externalParameters": {"command": req.command, "output": req.output, "env": sorted(req.env)},
                "internalParameters": {
                    "release_id": req.release_id,
                    "env_allow_list": list(ENV_ALLOW_LIST),
                    "sandbox": {"profile": profile, "network": sandbox.PROFILES.get(profile, {"network": True})["network"], "limits": vars(limits) if limits else None},
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": f"{BUILDER_ID}/sandbox/{profile}"},
                "metadata": {
                    "invocationId": req.release_id,
                    "startedOn": started.isoformat().replace("+00:00", "Z"),
                    "finishedOn": finished.isoformat().replace("+00:00", "Z"),
                },
            },
        },
    }


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- JUnit


def parse_junit(path: Path) -> TestSummary:
    """Count the <testcase> elements of a JUnit XML report (either <testsuites> or <testsuite>
    at the root); failing and erroring cases are listed as ``classname.name``."""
    root = ET.parse(path).getroot()
    summary = TestSummary()
    cases = [root] if root.tag == "testcase" else list(root.iter("testcase"))
    for case in cases:
        name = case.get("name", "?")
        classname = case.get("classname")
        full = f"{classname}.{name}" if classname else name
        if case.find("failure") is not None:
            summary.failed += 1
            summary.failures.append(full)
        elif case.find("error") is not None:
            summary.errors += 1
            summary.failures.append(full)
        elif case.find("skipped") is not None:
            summary.skipped += 1
        else:
            summary.passed += 1
    return summary


# --------------------------------------------------------------------------- activities


def _inside(workdir: Path, relative: str, *, what: str) -> Path:
    path = (workdir / relative).resolve()
    if not path.is_relative_to(workdir.resolve()):
        raise ApplicationError(
            f"the {what} path {relative!r} points outside the working directory; give a path inside it",
            type="BadPath",
            non_retryable=True,
        )
    return path


class CommandActivities:
    """Build and test activities; the artifact store location comes from the settings."""

    def __init__(self, settings: Settings, *, store: ArtifactStore | None = None) -> None:
        self.settings = settings
        self.store = store or store_for(settings.state_dir)

    # ------------------------------------------------------------------ confinement

    def profile_for(self, req: CommandRequest) -> str:
        """The worker's policy picks the profile (the release file only asks for network)."""
        from signoff.policy import evaluate_query

        try:
            chosen = evaluate_query("data.signoff.release.sandbox_profile", req.facts, policy_dir=self.settings.policy_dir)
        except SignoffError as e:
            raise ApplicationError(str(e), type="PolicyError", non_retryable=True) from e
        return chosen if chosen in sandbox.PROFILES else sandbox.HERMETIC

    def confine(self, req: CommandRequest, *, what: str, fresh: bool) -> tuple[Launch, Path, str]:
        """(how to launch, the working directory inside the workspace, the profile)."""
        checkout = Path(req.checkout or req.workdir).resolve()
        workdir = Path(req.workdir).resolve()
        if not workdir.is_relative_to(checkout):
            raise ApplicationError(
                f"the {what} working directory {req.workdir} is outside the release's checkout {checkout}; "
                "make working_dir a relative path inside it",
                type="BadWorkdir",
                non_retryable=True,
            )
        if not workdir.is_dir():
            raise ApplicationError(
                f"the {what} working directory {workdir} does not exist; set working_dir in the release file to an existing directory",
                type="BadWorkdir",
                non_retryable=True,
            )
        try:
            profile = sandbox.choose_profile(self.profile_for(req))
        except sandbox.SandboxUnavailable as e:
            raise ApplicationError(str(e), type="SandboxUnavailable", non_retryable=True) from e
        hidden = sandbox.hidden_paths(self.settings)
        workspace = Path(self.settings.state_dir).resolve() / "workspaces" / req.release_id
        sandbox.prepare_workspace(checkout, workspace, hidden=hidden, fresh=fresh)
        cwd = workspace / workdir.relative_to(checkout)
        env = {**command_env(req.env), "PATH": sandbox.sandbox_path(), "HOME": "/tmp", "TMPDIR": "/tmp"}
        limits = sandbox.Limits.from_env(cpu_seconds=req.timeout_seconds)
        spec = sandbox.SandboxSpec(command=req.command, source=checkout, workspace=workspace, cwd=cwd, env=env, profile=profile, hidden=hidden)
        self.limits = limits
        if profile == sandbox.UNCONFINED:
            return Launch(spec.argv(), cwd, env, sandbox.preexec(limits, drop=True)), cwd, profile
        # bwrap starts in /; --chdir puts the command in its workspace
        return Launch(spec.argv(), Path("/"), {}, sandbox.preexec(limits)), cwd, profile

    def sign_provenance(self, statement: dict[str, Any]) -> dict[str, Any]:
        """The SLSA statement as a DSSE envelope signed by the orchestrator key (or keyless)."""
        from signoff.audit import KeyExistsError, canonical_json, init_keys, signer_from_settings, sigstore_enabled

        if not sigstore_enabled() and not Path(self.settings.key_path).exists():
            with contextlib.suppress(KeyExistsError):
                init_keys(self.settings.key_path)
        try:
            return signer_from_settings(self.settings).sign(canonical_json(statement)).envelope
        except SignoffError as e:
            raise ApplicationError(str(e), type="SigningFailed", non_retryable=True) from e

    def snapshotter(self, req: CommandRequest, what: str, profile: str) -> Callable[[str, str], None]:
        """What the runner does when it kills a command: a signed forensic snapshot (activities/forensics.py)."""
        from activities.forensics import snapshot

        def keep(ended: str, output_tail: str) -> None:
            try:
                path = snapshot(self.settings, self.sign_provenance, release_id=req.release_id, what=what, command=req.command,
                                profile=profile, ended=ended, output_tail=output_tail[-HEARTBEAT_TAIL_CHARS:])
                activity.logger.info("kept a forensic snapshot of %s's %s at %s", req.release_id, what, path)
            except (OSError, ApplicationError) as e:  # the kill stands; say why the snapshot is missing
                activity.logger.warning("no forensic snapshot of %s's %s: %s", req.release_id, what, e)

        return keep

    # ------------------------------------------------------------------ activities

    @activity.defn(name="run_build")
    async def run_build(self, req: BuildRequest) -> BuildResult:
        """Run the build in a fresh workspace, file its output in the artifact store by sha256
        and write signed provenance that names the sandbox it ran in."""
        started = datetime.now(timezone.utc)
        launch, workdir, profile = self.confine(req, what="build", fresh=True)
        outcome = await run_command(req, what="build", launch=launch, on_killed=self.snapshotter(req, "build", profile))
        if outcome.exit_code != 0:
            raise ApplicationError(
                f"the build command exited with code {outcome.exit_code} (last output: {outcome.last_line}); fix the build and start the release again",
                {"exit_code": outcome.exit_code, "output_tail": outcome.output[-HEARTBEAT_TAIL_CHARS:], "profile": profile},
                type="BuildFailed",
                non_retryable=True,
            )
        output = _inside(workdir, req.output, what="build output")
        if not output.is_file():
            raise ApplicationError(
                f"the build succeeded but did not produce {req.output} in its working directory; make the build write it or fix build.output",
                type="MissingOutput",
                non_retryable=True,
            )
        digest = self.store.put(output)
        statement = provenance_statement(
            req=req, subject_name=output.name, digest=digest, started=started, finished=datetime.now(timezone.utc), profile=profile, limits=self.limits
        )
        provenance = self.store.provenance_path_for(digest)
        _write_json_atomically(provenance, statement)
        envelope = self.sign_provenance(statement)
        _write_json_atomically(self.store.signed_provenance_path_for(digest), envelope)
        activity.logger.info("built %s as %s in %.1fs (sandbox %s)", req.output, digest, outcome.duration_seconds, profile)
        return BuildResult(
            digest=digest,
            artifact_path=str(self.store.path_for(digest)),
            output_tail=outcome.output[-HEARTBEAT_TAIL_CHARS:],
            provenance_path=str(provenance),
            profile=profile,
            provenance_envelope=envelope,
            duration_seconds=outcome.duration_seconds,
        )

    @activity.defn(name="run_tests")
    async def run_tests(self, req: TestRequest) -> TestSummary:
        """Run the tests and summarise them; failing tests are a result, not an error.

        With a JUnit report the counts are the report's (plus one error when the command failed
        although no test did). Without one, the command itself is the single check: passed=1 on
        exit 0, failed=1 with the exit code and last output line otherwise. Only a missing
        command, a bad working directory or a timeout raise.
        """
        launch, workdir, profile = self.confine(req, what="test", fresh=False)
        outcome = await run_command(req, what="test", launch=launch, on_killed=self.snapshotter(req, "test", profile))
        summary = self.summarise(req, outcome, workdir)
        first_failures = list(summary.failures)
        # Failing tests are run again (the whole command) up to rerun_failures times; a test that
        # failed and then passed is flaky, reported by name — the policy decides what that means.
        while (summary.failed or summary.errors) and summary.runs <= req.rerun_failures:
            launch, workdir, _ = self.confine(req, what="test", fresh=False)
            rerun = self.summarise(req, await run_command(req, what="test", launch=launch), workdir)
            rerun.runs = summary.runs + 1
            rerun.flaky = sorted({*summary.flaky, *(name for name in first_failures if name not in rerun.failures)})
            summary = rerun
        summary.coverage = self.coverage(req, workdir, summary.coverage)
        summary.profile = profile
        return summary

    @activity.defn(name="run_scan")
    async def run_scan(self, req: ScanRequest) -> ScanResult:
        """Run a scanner in the release's workspace (sandboxed) and count its SARIF findings.

        A scanner's own exit code says little (bandit exits 1 when it finds something); the SARIF
        file is the result, and a scan that writes none fails the release with one sentence.
        """
        launch, workdir, profile = self.confine(req, what=f"{req.name} scan", fresh=False)
        outcome = await run_command(req, what=f"{req.name} scan", launch=launch)
        path = _inside(workdir, req.sarif, what="SARIF report")
        try:
            raw = path.read_bytes()
            doc = json.loads(raw)
        except (OSError, ValueError) as e:
            raise ApplicationError(
                f"the {req.name} scan wrote no readable SARIF at {req.sarif} (exit code {outcome.exit_code}, last output: {outcome.last_line}); fix the scan command",
                type="ScanFailed",
                non_retryable=True,
            ) from e
        result = ScanResult(name=req.name, profile=profile, sarif_sha256="sha256:" + hashlib.sha256(raw).hexdigest())
        for run in doc.get("runs") or [] if isinstance(doc, dict) else []:
            rules = {r.get("id"): r for r in (((run.get("tool") or {}).get("driver") or {}).get("rules") or []) if isinstance(r, dict)}
            for item in run.get("results") or []:
                if not isinstance(item, dict):
                    continue
                rule = str(item.get("ruleId") or "unknown")
                default = ((rules.get(rule) or {}).get("defaultConfiguration") or {}).get("level")
                level = item.get("level") or default or "warning"  # SARIF's default level
                level = level if level in ("error", "warning", "note", "none") else "warning"
                where = ((item.get("locations") or [{}])[0].get("physicalLocation") or {})
                location = f"{(where.get('artifactLocation') or {}).get('uri', '')}:{(where.get('region') or {}).get('startLine', '')}"
                result.findings.append(Finding(rule=rule, level=level, message=str((item.get("message") or {}).get("text", ""))[:300], location=location))
        result.errors = sum(f.level == "error" for f in result.findings)
        result.warnings = sum(f.level == "warning" for f in result.findings)
        result.notes = sum(f.level == "note" for f in result.findings)
        return result

    @activity.defn(name="read_sbom")
    async def read_sbom(self, req: SbomRequest) -> SbomResult:
        """The artifact's CycloneDX JSON SBOM from the release's workspace (generated there first,
        in the sandbox, when the release gives a command): components and their licences."""
        launch, workdir, _ = self.confine(req, what="SBOM", fresh=False)
        if req.command:
            outcome = await run_command(req, what="SBOM", launch=launch)
            if outcome.exit_code != 0:
                raise ApplicationError(
                    f"the SBOM command exited with code {outcome.exit_code} (last output: {outcome.last_line}); fix sbom.command",
                    type="SbomFailed",
                    non_retryable=True,
                )
        path = _inside(workdir, req.path, what="SBOM")
        try:
            raw = path.read_bytes()
            doc = json.loads(raw)
        except (OSError, ValueError) as e:
            raise ApplicationError(f"there is no readable CycloneDX JSON SBOM at {req.path}; make the build write it or fix sbom.path", type="SbomFailed", non_retryable=True) from e
        if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
            raise ApplicationError(f"{req.path} is not a CycloneDX JSON SBOM (bomFormat is not CycloneDX); write CycloneDX JSON", type="SbomFailed", non_retryable=True)
        components = []
        for item in doc.get("components") or []:
            if not isinstance(item, dict):
                continue
            licenses = []
            for entry in item.get("licenses") or []:
                lic = (entry or {}).get("license") or {}
                value = lic.get("id") or lic.get("name") or (entry or {}).get("expression")
                if value:
                    licenses.append(str(value))
            supplier = (item.get("supplier") or {}).get("name") or item.get("publisher") or ""
            components.append(Component(name=str(item.get("name", "?")), version=str(item.get("version", "")), licenses=licenses, supplier=str(supplier)))
        return SbomResult(sha256="sha256:" + hashlib.sha256(raw).hexdigest(), components=components)

    @staticmethod
    def coverage(req: TestRequest, workdir: Path, current: float | None) -> float | None:
        """Line coverage in percent from the report the tests wrote (Cobertura XML or coverage.py
        JSON) — measured by the test run, never a number the release file states."""
        if not req.coverage_report:
            return current
        path = _inside(workdir, req.coverage_report, what="coverage report")
        try:
            text = path.read_text()
        except OSError:
            return None  # no report: coverage is unknown, and the policy treats unknown as it must
        try:
            if text.lstrip().startswith("{"):
                doc = json.loads(text)
                value = float(doc["totals"]["percent_covered"])
            else:
                value = float(ET.fromstring(text).get("line-rate", "nan")) * 100
        except (ValueError, KeyError, TypeError, ET.ParseError):
            return None
        return round(value, 2) if value == value else None

    @staticmethod
    def summarise(req: TestRequest, outcome: CommandOutcome, workdir: Path) -> TestSummary:
        report = _inside(workdir, req.junit, what="JUnit report") if req.junit else None
        if report is not None and report.is_file():
            try:
                summary = parse_junit(report)
            except ET.ParseError as e:
                return TestSummary(
                    errors=1,
                    failures=[f"the JUnit report {req.junit} is not valid XML ({e}); the test command exited with code {outcome.exit_code}"],
                )
            if outcome.exit_code != 0 and summary.failed + summary.errors == 0:
                summary.errors += 1
                summary.failures.append(
                    f"the test command exited with code {outcome.exit_code} although its report shows no failing test (last output: {outcome.last_line})"
                )
            return summary
        if report is not None:
            return TestSummary(
                failed=1,
                failures=[
                    f"the test command exited with code {outcome.exit_code} and wrote no JUnit report at {req.junit} (last output: {outcome.last_line})"
                ],
            )
        if outcome.exit_code != 0:
            return TestSummary(
                failed=1,
                failures=[f"the test command exited with code {outcome.exit_code} (last output: {outcome.last_line})"],
            )
        return TestSummary(passed=1)


def activities_from_settings(settings: Settings) -> list:
    """The bound build/test activities for the worker."""
    acts = CommandActivities(settings)
    return [acts.run_build, acts.run_tests, acts.run_scan, acts.read_sbom]
