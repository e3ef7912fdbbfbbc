"""Deployment targets with real processes, a real Git repository, real shell commands and a real
Prometheus server reading the local target's file_sd targets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.artifacts import ArtifactStore
from activities.deploy import DeployActivities as _Actuator
from activities.deploy import Placement, activities_from_settings, plan_deploy, plan_rollback, stop_all
from activities.deploy.local import process_alive
from signoff.config import Settings
from signoff.models import DeployRequest, DeploySpec, DeploymentState, RollbackRequest, TargetRequest

REPO = Path(__file__).resolve().parent.parent


class DeployActivities(_Actuator):
    """The deploy activities with the actuator's evidence check set aside: these tests are about
    what each *target* does once shipping is allowed. The check itself is attacked in
    tests/test_trust_boundary.py (rogue workflow, forged approvals) and is on in every workflow test."""

    def check_evidence(self, req: DeployRequest) -> str:
        return "not checked in target tests"


async def test_the_real_deploy_activity_refuses_without_evidence(settings: Settings) -> None:
    digest = "sha256:" + "a" * 64
    with pytest.raises(ApplicationError, match="carries no evidence") as refused:
        await call(_Actuator(settings).deploy, DeployRequest(release_id="r", service="checkout", digest=digest, weight=100, target=LOCAL))
    assert refused.value.type == "DeployRefused" and refused.value.non_retryable
BUILD = REPO / "examples" / "service" / "build.py"
LOCAL = DeploySpec(target="local", settings={"rate": 20})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    for flavour in ("good", "bad"):
        subprocess.run([sys.executable, str(BUILD), "--flavour", flavour, "--out", str(out / f"{flavour}.pyz")], check=True)
    return {f: out / f"{f}.pyz" for f in ("good", "bad")}


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(state_dir=tmp_path / "state")
    try:
        yield settings
    finally:
        stop_all(settings.state_dir)


@pytest.fixture
def digests(settings: Settings, artifacts: dict[str, Path]) -> dict[str, str]:
    store = ArtifactStore(settings.state_dir / "artifacts")
    return {flavour: store.put(path) for flavour, path in artifacts.items()}


async def call(fn: Callable[..., Any], req: Any) -> DeploymentState:
    return await ActivityEnvironment().run(fn, req)


def requests_by_code(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "http_requests":
            for sample in family.samples:
                if sample.name == "http_requests_total":
                    counts[sample.labels["code"]] = sample.value
    return counts


def total(port: int) -> float:
    return sum(requests_by_code(port).values())


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --------------------------------------------------------------------------- placement rules


def test_placement_rules() -> None:
    a, b, c = (f"sha256:{x * 64}" for x in "abc")
    stable_a = Placement(stable=a)
    canary, _ = plan_deploy(stable_a, b, 20)
    assert canary == Placement(stable=a, canary=b, weight=20)
    promoted, _ = plan_deploy(canary, b, 100)
    assert promoted == Placement(stable=b, canary=None, weight=0, previous=a)
    assert plan_deploy(promoted, b, 100)[0] == promoted  # idempotent
    assert plan_rollback(canary, a) == Placement(stable=a, previous=None)
    assert plan_rollback(promoted, a) == Placement(stable=a, previous=b)
    first, note = plan_deploy(Placement(), c, 10)
    assert first == Placement(stable=c) and "no stable" in note


# --------------------------------------------------------------------------- local target


async def test_local_target_lifecycle(settings: Settings, digests: dict[str, str]) -> None:
    good, bad = digests["good"], digests["bad"]
    acts = DeployActivities(settings)

    # 1. the good build becomes the stable; the traffic generator starts
    s1 = await call(acts.deploy, DeployRequest(release_id="rel-1", service="checkout", digest=good, weight=100, target=LOCAL))
    assert (s1.stable, s1.canary, s1.weight) == (good, None, 0)
    stable_port, stable_pid = s1.detail["stable"]["port"], s1.detail["stable"]["pid"]
    wait_until(lambda: total(stable_port) >= 5, 10, "traffic on the stable")

    # 2. the bad build as canary at 20%: both processes get traffic, both counters grow
    s2 = await call(acts.deploy, DeployRequest(release_id="rel-2", service="checkout", digest=bad, weight=20, target=LOCAL))
    assert (s2.stable, s2.canary, s2.weight) == (good, bad, 20)
    assert s2.detail["stable"]["pid"] == stable_pid  # the stable was not restarted
    canary_port, canary_pid = s2.detail["canary"]["port"], s2.detail["canary"]["pid"]
    before_stable, before_canary = total(stable_port), total(canary_port)
    time.sleep(2.5)
    grew_stable, grew_canary = total(stable_port) - before_stable, total(canary_port) - before_canary
    assert grew_canary >= 3 and grew_stable >= 3 * grew_canary * 0.8, (grew_stable, grew_canary)
    wait_until(lambda: requests_by_code(canary_port).get("500", 0) >= 1, 10, "canary errors")
    assert requests_by_code(stable_port).get("500", 0) == 0

    # Prometheus file_sd targets carry service, digest and track
    targets = json.loads(Path(s2.detail["targets_file"]).read_text())
    assert targets == [
        {"targets": [f"127.0.0.1:{stable_port}"], "labels": {"service": "checkout", "digest": good, "version": good[7:19], "track": "stable"}},
        {"targets": [f"127.0.0.1:{canary_port}"], "labels": {"service": "checkout", "digest": bad, "version": bad[7:19], "track": "canary"}},
    ]
    assert Path(s2.detail["targets_file"]) == settings.state_dir / "prometheus" / "targets" / "checkout.json"

    # 3. the same deploy again does nothing: same processes, no new action
    s3 = await call(acts.deploy, DeployRequest(release_id="rel-2", service="checkout", digest=bad, weight=20, target=LOCAL))
    assert s3.detail["actions"] == s2.detail["actions"]
    assert (s3.detail["stable"]["pid"], s3.detail["canary"]["pid"]) == (stable_pid, canary_pid)

    # 4. a new DeployActivities (= a restarted worker) sees the same placement and processes
    restarted = DeployActivities(settings)
    s4 = await call(restarted.current_deployment, TargetRequest(service="checkout", target=LOCAL))
    assert (s4.stable, s4.canary, s4.weight) == (good, bad, 20)
    assert (s4.detail["stable"]["pid"], s4.detail["canary"]["pid"]) == (stable_pid, canary_pid)
    assert s4.detail["actions"] == s2.detail["actions"]

    # 5. a canary process that dies is started again on the next call, and that is logged
    os.killpg(canary_pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(canary_pid, "sha256-"), 5, "the canary to die")
    s5 = await call(restarted.current_deployment, TargetRequest(service="checkout", target=LOCAL))
    assert s5.canary == bad and s5.detail["canary"]["pid"] != canary_pid
    assert s5.detail["actions"] == s4.detail["actions"] + 1
    canary_pid = s5.detail["canary"]["pid"]

    # 6. promotion: the canary process becomes the stable without a restart; the old stable stops
    s6 = await call(restarted.deploy, DeployRequest(release_id="rel-2", service="checkout", digest=bad, weight=100, target=LOCAL))
    assert (s6.stable, s6.canary, s6.weight, s6.detail["previous"]) == (bad, None, 0, good)
    assert s6.detail["stable"]["pid"] == canary_pid
    wait_until(lambda: not process_alive(stable_pid, "sha256-"), 5, "the old stable to stop")

    # 7. rollback to the previous digest: good serves again, bad is gone
    s7 = await call(restarted.rollback, RollbackRequest(release_id="rel-2", service="checkout", to_digest=good, target=LOCAL))
    assert (s7.stable, s7.canary, s7.weight, s7.detail["previous"]) == (good, None, 0, bad)
    wait_until(lambda: not process_alive(canary_pid, "sha256-"), 5, "the bad build to stop")
    new_port = s7.detail["stable"]["port"]
    wait_until(lambda: total(new_port) >= 3, 10, "traffic on the rolled-back stable")
    log = [json.loads(x) for x in (settings.state_dir / "deploy" / "checkout.actions.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log].count("rollback") == 1
    assert log[-1]["action"] == "rollback" and log[-1]["stable"] == good

    # stop_all kills the services and the traffic generator
    pids = [s7.detail["stable"]["pid"], s7.detail["loadgen_pid"]]
    stopped = stop_all(settings.state_dir)
    assert sorted(stopped) == sorted(pids)
    assert not any(process_alive(p, "") for p in pids)


async def test_local_target_errors(settings: Settings) -> None:
    acts = DeployActivities(settings)
    missing = "sha256:" + "0" * 64
    with pytest.raises(ApplicationError) as err:
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=missing, weight=100, target=LOCAL))
    assert err.value.type == "ArtifactNotFound" and err.value.non_retryable and missing in err.value.message
    with pytest.raises(ApplicationError) as err2:
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest="latest", weight=100, target=LOCAL))
    assert err2.value.type == "BadDigest" and err2.value.non_retryable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _promql(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())["data"]["result"]
    except OSError:
        return []


async def test_prometheus_sees_local_processes_by_digest(settings: Settings, digests: dict[str, str], tmp_path: Path) -> None:
    """The wiring the canary analysis relies on: file_sd targets → series labelled by digest."""
    good, bad = digests["good"], digests["bad"]
    acts = DeployActivities(settings)
    await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=good, weight=100, target=LOCAL))
    await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=bad, weight=50, target=LOCAL))

    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: services\n"
        "    file_sd_configs:\n"
        f"      - files: ['{settings.state_dir}/prometheus/targets/*.json']\n"
        "        refresh_interval: 1s\n"
    )
    prom = subprocess.Popen(
        ["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    error_rate = (
        'sum(rate(http_requests_total{{service="checkout",digest="{d}",code=~"5.."}}[10s]))'
        ' / sum(rate(http_requests_total{{service="checkout",digest="{d}"}}[10s]))'
    )
    try:
        def both_measured() -> bool:
            return all(_promql(base, error_rate.format(d=d)) for d in (good, bad))

        wait_until(both_measured, 40, "Prometheus to have error rates for both digests")
        bad_rate = float(_promql(base, error_rate.format(d=bad))[0]["value"][1])
        good_rate = float(_promql(base, error_rate.format(d=good))[0]["value"][1])
        assert bad_rate >= 0.1, bad_rate  # the bad build answers ~30% 5xx; a fresh 10 s rate window is noisy
        assert good_rate == 0.0
        tracks = {r["metric"]["track"]: r["metric"]["digest"] for r in _promql(base, 'up{service="checkout"} == 1')}
        assert tracks == {"stable": good, "canary": bad}
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()


# --------------------------------------------------------------------------- gitops target


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


async def test_gitops_target_commits_manifest_with_release_id(settings: Settings, tmp_path: Path) -> None:
    import yaml

    repo = tmp_path / "gitops"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("manifests\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    spec = DeploySpec(target="gitops", settings={"repo": str(repo), "manifest": "apps/{service}.yaml", "branch": "production"})
    acts = DeployActivities(settings)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64

    s1 = await call(acts.deploy, DeployRequest(release_id="rel-a", service="checkout", digest=a, weight=100, target=spec))
    s2 = await call(acts.deploy, DeployRequest(release_id="rel-b", service="checkout", digest=b, weight=20, target=spec))
    assert (s2.stable, s2.canary, s2.weight) == (a, b, 20)
    manifest = yaml.safe_load((repo / "apps" / "checkout.yaml").read_text())
    assert manifest == {"service": "checkout", "stable": a, "canary": b, "weight": 20, "previous": None, "release": "rel-b"}
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "production"
    assert "rel-b" in _git(repo, "log", "-1", "--format=%B") and b in _git(repo, "log", "-1", "--format=%B")

    # idempotent: the same request makes no commit
    s3 = await call(acts.deploy, DeployRequest(release_id="rel-b", service="checkout", digest=b, weight=20, target=spec))
    assert s3.detail["commit"] == s2.detail["commit"] and s3.detail["actions"] == s2.detail["actions"] == 2

    s4 = await call(acts.rollback, RollbackRequest(release_id="rel-b", service="checkout", to_digest=a, target=spec))
    assert (s4.stable, s4.canary, s4.weight) == (a, None, 0)
    subjects = _git(repo, "log", "--format=%s", "--", "apps/checkout.yaml").splitlines()
    assert subjects == [
        f"signoff: checkout: roll back to {a} (release rel-b)",
        f"signoff: checkout: canary {b} at 20% (release rel-b)",
        f"signoff: checkout: promote {a} (release rel-a)",
    ]
    assert _git(repo, "status", "--porcelain") == ""  # everything committed
    current = await call(DeployActivities(settings).current_deployment, TargetRequest(service="checkout", target=spec))
    assert (current.stable, current.canary, current.detail["commit"]) == (a, None, s4.detail["commit"])
    assert s1.detail["commit"] != s2.detail["commit"] != s4.detail["commit"]

    not_repo = DeploySpec(target="gitops", settings={"repo": str(tmp_path / "nowhere")})
    with pytest.raises(ApplicationError) as err:
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=a, target=not_repo))
    assert err.value.type == "NotARepo" and err.value.non_retryable


# --------------------------------------------------------------------------- command target


async def test_command_target_runs_quoted_commands(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    log = tmp_path / "calls.log"
    spec = DeploySpec(
        target="command",
        settings={
            "deploy": f"echo deploy {{service}} {{digest}} {{weight}} {{release_id}} \"${{SLACK_BOT_TOKEN:-none}}\" >> {log}",
            "rollback": f"echo rollback {{service}} {{digest}} >> {log}",
            "current": "printf '{\"stable\": \"%s\"}' " + "sha256:" + "c" * 64,
        },
    )
    acts = DeployActivities(settings)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    await call(acts.deploy, DeployRequest(release_id="rel-1", service="check out", digest=a, weight=100, target=spec))
    s2 = await call(acts.deploy, DeployRequest(release_id="rel-2", service="check out", digest=b, weight=10, target=spec))
    again = await call(acts.deploy, DeployRequest(release_id="rel-2", service="check out", digest=b, weight=10, target=spec))
    assert again.detail["actions"] == s2.detail["actions"] == 2
    s3 = await call(acts.rollback, RollbackRequest(release_id="rel-2", service="check out", to_digest=a, target=spec))
    # the first deploy learned from `current` that c was serving, so c is the previous stable
    assert (s3.stable, s3.canary, s3.detail["previous"]) == (a, None, "sha256:" + "c" * 64)
    # placeholders were shell-quoted (the space stays inside one argument), no secret leaked
    assert log.read_text().splitlines() == [
        f"deploy check out {a} 100 rel-1 none",
        f"deploy check out {b} 10 rel-2 none",
        f"rollback check out {a}",
    ]
    current = await call(acts.current_deployment, TargetRequest(service="check out", target=spec))
    assert current.stable == "sha256:" + "c" * 64

    failing = DeploySpec(target="command", settings={"deploy": "echo 'cluster unreachable' >&2; exit 7"})
    with pytest.raises(ApplicationError) as err:
        await call(acts.deploy, DeployRequest(release_id="r", service="other", digest=a, target=failing))
    assert err.value.type == "DeployCommandFailed" and err.value.non_retryable
    assert "code 7" in err.value.message and "cluster unreachable" in err.value.message
    with pytest.raises(ApplicationError) as err2:
        await call(acts.deploy, DeployRequest(release_id="r", service="other", digest=a, target=DeploySpec(target="command")))
    assert err2.value.type == "BadTargetSettings"


def test_activities_from_settings_names(tmp_path: Path) -> None:
    names = sorted(a.__temporal_activity_definition.name for a in activities_from_settings(Settings(state_dir=tmp_path)))
    assert names == ["current_deployment", "deploy", "rollback"]
