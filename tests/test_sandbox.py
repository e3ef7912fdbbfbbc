"""Escapes from the confined runner, attempted the way a hostile build script would.

Every build here runs through the real `run_build` / `run_tests` activities with real bubblewrap.
Each escape must not succeed: the secret never appears in anything the build produced, the
file outside the workspace is not written, the listener gets no connection, the daemon is gone
when the activity ends — and where the build fails, it fails with one sentence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import sandbox
from activities.artifacts import ArtifactTampered, store_for
from activities.deploy import DeployError, target_for
from activities.runner import CommandActivities
from signoff.audit import init_keys
from signoff.config import Settings
from signoff.models import BuildRequest, DeploySpec, TestRequest
from signoff.trust.evidence import EvidenceRefused
from tests.helpers import REPO
from tests.test_runner import processes_running, unique_sleep

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason=f"the sandbox cannot run here: {sandbox.unavailable_reason()}")


@pytest.fixture
def settings() -> Settings:
    settings = Settings.from_env()
    init_keys(settings.key_path)  # the orchestrator key a build would love to read
    return settings


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    d = tmp_path / "checkout"
    d.mkdir()
    (d / "README.md").write_text("the release's source\n")
    return d


def build(checkout: Path, command: str, *, output: str = "out.bin", workdir: Path | None = None, **kw: object) -> BuildRequest:
    return BuildRequest(
        release_id=f"rel-escape-{uuid.uuid4().hex[:8]}", command=command, output=output,
        workdir=str(workdir or checkout), checkout=str(checkout), **kw,
    )


async def run_build(settings: Settings, req: BuildRequest) -> tuple[object | None, ApplicationError | None]:
    try:
        return await ActivityEnvironment().run(CommandActivities(settings).run_build, req), None
    except ApplicationError as e:
        return None, e


def one_sentence(error: ApplicationError | None) -> str:
    assert error is not None, "the escape was expected to fail the build"
    assert error.non_retryable and "\n" not in error.message and "Traceback" not in error.message
    return error.message


async def test_build_cannot_read_the_orchestrator_key_by_absolute_path(settings: Settings, checkout: Path) -> None:
    key = Path(settings.key_path).resolve()
    result, error = await run_build(settings, build(checkout, f"cat {key} > out.bin"))
    assert result is None and "No such file or directory" in one_sentence(error)
    secret = key.read_bytes()
    for stored in store_for(settings.state_dir).root.glob("*") if store_for(settings.state_dir).root.exists() else []:
        assert secret not in stored.read_bytes()


async def test_build_cannot_read_the_workers_environment(settings: Settings, checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    command = (
        f"cat /proc/{os.getpid()}/environ > out.bin 2>&1; cat /proc/{os.getppid()}/environ >> out.bin 2>&1; "
        "for p in /proc/[0-9]*; do cat $p/environ >> out.bin 2>&1; done; env >> out.bin"
    )
    result, error = await run_build(settings, build(checkout, command))
    assert error is None
    produced = Path(result.artifact_path).read_bytes()  # type: ignore[union-attr]
    # the worker's processes are not in the sandbox's pid namespace, and its environment is not passed
    assert b"xoxb-very-secret" not in produced and b"SLACK_" not in produced and b"SIGNOFF_" not in produced
    assert b"No such file or directory" in produced


async def test_build_cannot_connect_to_a_listener_on_loopback(settings: Settings, checkout: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    command = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)\" && printf connected > out.bin"
    result, error = await run_build(settings, build(checkout, command))
    listener.close()
    thread.join(timeout=20)
    assert result is None and "exited with code 1" in one_sentence(error)
    assert accepted == []


async def test_build_cannot_write_outside_its_workspace(settings: Settings, checkout: Path, tmp_path: Path) -> None:
    host_tmp = Path("/tmp") / f"signoff-escape-{uuid.uuid4().hex[:8]}"
    command = (
        f"echo x > {checkout}/escaped.txt; echo x > /source/escaped.txt; echo x > {host_tmp}; "
        f"echo x > {Path(settings.state_dir).resolve()}/escaped.txt; printf built > out.bin"
    )
    result, error = await run_build(settings, build(checkout, command))
    assert error is None  # the writes failed, the build went on
    assert not (checkout / "escaped.txt").exists() and not host_tmp.exists() and not (Path(settings.state_dir) / "escaped.txt").exists()
    assert sorted(p.name for p in checkout.iterdir()) == ["README.md"]


async def test_build_cannot_overwrite_a_stored_artifact_and_a_tampered_one_is_never_served(settings: Settings, checkout: Path) -> None:
    first, error = await run_build(settings, build(checkout, "printf good-bytes > out.bin"))
    assert error is None
    stored = Path(first.artifact_path)  # type: ignore[union-attr]
    _, error = await run_build(settings, build(checkout, f"printf evil > {stored}; printf evil > out2.bin", output="out2.bin"))
    assert stored.read_bytes() == b"good-bytes"
    # Someone with the worker's own rights changes it anyway: reading it back refuses.
    store = store_for(settings.state_dir)
    digest = "sha256:" + hashlib.sha256(b"good-bytes").hexdigest()
    stored.chmod(0o644)
    stored.write_bytes(b"evil-bytes")
    with pytest.raises(ArtifactTampered, match="changed after it was stored"):
        store.get(digest)
    with pytest.raises(DeployError, match="changed after it was stored") as refused:
        target_for(settings, DeploySpec(target="local", settings={"rate": 1})).deploy("checkout", digest, 100, release_id="r")
    assert refused.value.kind == "ArtifactTampered"


async def test_setsid_daemon_is_gone_when_the_build_ends(settings: Settings, checkout: Path) -> None:
    marker = unique_sleep()
    result, error = await run_build(settings, build(checkout, f"setsid sleep {marker} > /dev/null 2>&1 < /dev/null & printf ok > out.bin"))
    assert error is None and result is not None
    deadline = time.monotonic() + 5
    while processes_running(marker):
        assert time.monotonic() < deadline, "a detached process outlived the build"
        time.sleep(0.05)


async def test_fork_bomb_and_memory_hog_are_stopped_by_limits(settings: Settings, checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_SANDBOX_PROCESSES", "64")
    monkeypatch.setenv("SIGNOFF_SANDBOX_MEMORY_BYTES", str(1 << 30))
    started = time.monotonic()
    result, error = await run_build(settings, build(checkout, "bomb() { bomb | bomb & }; bomb; sleep 2; printf contained > out.bin", timeout_seconds=60))
    assert error is None and Path(result.artifact_path).read_bytes() == b"contained"  # type: ignore[union-attr]
    assert time.monotonic() - started < 30
    _, error = await run_build(settings, build(checkout, "python3 -c 'x = bytearray(4 << 30)' && printf hog > out.bin"))
    assert "exited with code 1" in one_sentence(error) and "MemoryError" in (error.details[0]["output_tail"] if error and error.details else "")


async def test_working_dir_outside_the_checkout_is_refused(settings: Settings, checkout: Path) -> None:
    result, error = await run_build(settings, build(checkout, "printf x > out.bin", workdir=Path("/")))
    assert result is None and error is not None and error.type == "BadWorkdir"
    assert "outside the release's checkout" in one_sentence(error)


def test_gitops_manifest_path_escaping_the_repo_is_refused(settings: Settings, tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "deploy-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    target = target_for(settings, DeploySpec(target="gitops", settings={"repo": str(repo), "manifest": "../../etc/{service}.yaml"}))
    with pytest.raises(DeployError, match="points outside the repository") as refused:
        target.deploy("checkout", "sha256:" + "a" * 64, 100, release_id="r")
    assert refused.value.kind == "BadTargetSettings"


def test_pass_env_takes_only_what_the_worker_allows(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    options = {"deploy": "env > " + str(tmp_path / "seen.env"), "pass_env": ["SLACK_BOT_TOKEN"]}
    with pytest.raises(DeployError, match="SLACK_BOT_TOKEN, which the worker does not pass"):
        target_for(settings, DeploySpec(target="command", settings=options))
    monkeypatch.setenv("SIGNOFF_DEPLOY_PASS_ENV", "KUBECONFIG")
    allowed = target_for(settings, DeploySpec(target="command", settings={**options, "pass_env": ["KUBECONFIG"]}))
    assert allowed.env.get("KUBECONFIG") == "/etc/kube/config" and "SLACK_BOT_TOKEN" not in allowed.env  # type: ignore[attr-defined]


async def test_without_bwrap_production_refuses_and_the_dev_override_runs_unconfined(settings: Settings, checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_BWRAP", "/nonexistent/bwrap")
    sandbox._probe.cache_clear()
    result, error = await run_build(settings, build(checkout, "printf x > out.bin"))
    message = one_sentence(error)
    assert result is None and error is not None and error.type == "SandboxUnavailable"
    assert "SIGNOFF_UNSAFE_UNCONFINED=1" in message and "bubblewrap" in message
    monkeypatch.setenv("SIGNOFF_UNSAFE_UNCONFINED", "1")
    result, error = await run_build(settings, build(checkout, "printf x > out.bin"))
    assert error is None and result.profile == "unconfined"  # type: ignore[union-attr]
    import base64
    import json

    statement = json.loads(base64.b64decode(result.provenance_envelope["payload"]))  # type: ignore[union-attr]
    assert statement["predicate"]["buildDefinition"]["buildType"].endswith("?sandbox=unconfined")
    assert statement["predicate"]["runDetails"]["builder"]["id"].endswith("/sandbox/unconfined")


async def test_hermetic_build_of_the_example_service_is_reproducible(settings: Settings, checkout: Path) -> None:
    shutil.copytree(REPO / "examples" / "service", checkout / "service", ignore=shutil.ignore_patterns("__pycache__"))
    digests = []
    for _ in range(2):
        result, error = await run_build(settings, build(checkout, "python3 service/build.py --flavour good --out dist/checkout.pyz", output="dist/checkout.pyz"))
        assert error is None, error
        assert result.profile == "hermetic"  # type: ignore[union-attr]
        digests.append(result.digest)  # type: ignore[union-attr]
    assert digests[0] == digests[1]


async def test_tests_run_confined_in_the_builds_workspace(settings: Settings, checkout: Path) -> None:
    req = build(checkout, "printf artifact > out.bin")
    result, error = await run_build(settings, req)
    assert error is None
    summary = await ActivityEnvironment().run(
        CommandActivities(settings).run_tests,
        TestRequest(release_id=req.release_id, command="test -f out.bin && ! test -w /source/README.md", workdir=str(checkout), checkout=str(checkout)),
    )
    assert (summary.passed, summary.failed, summary.profile) == (1, 0, "hermetic")


async def test_the_actuator_reads_the_build_profile_from_signed_provenance_only(settings: Settings, checkout: Path) -> None:
    """A build's provenance is checked again before shipping: a rewritten one is refused."""
    import base64
    import json

    from activities.deploy import DeployActivities
    from signoff.models import DeployRequest, Evidence
    from tests.helpers import release_spec
    from tests.test_trust_boundary import signed

    req = build(checkout, "printf shipped-bytes > out.bin")
    result, error = await run_build(settings, req)
    assert error is None and result is not None
    spec = release_spec(artifact=None, build={"command": req.command, "output": "out.bin"})
    from signoff.trust.evidence import start_body

    start = signed("dana@example.com", action="start_release", subject=req.release_id, body=start_body(spec, str(checkout)), channel="api")
    deploy = DeployRequest(
        release_id=req.release_id, service="checkout", digest=result.digest, weight=100,  # type: ignore[union-attr]
        target=spec.deploy, evidence=Evidence(release_id=req.release_id, spec=spec, base_dir=str(checkout), start_proof=start),
    )
    actuator = DeployActivities(settings)
    assert "evidence verified" in actuator.check_evidence(deploy)
    signed_path = store_for(settings.state_dir).signed_provenance_path_for(result.digest)  # type: ignore[union-attr]
    envelope = json.loads(signed_path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["buildDefinition"]["internalParameters"]["sandbox"]["profile"] = "fetch"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signed_path.write_text(json.dumps(envelope))
    with pytest.raises(EvidenceRefused, match="not signed by the orchestrator key"):
        actuator.check_evidence(deploy)
    signed_path.unlink()
    with pytest.raises(EvidenceRefused, match="signed provenance cannot be read"):
        actuator.check_evidence(deploy)
