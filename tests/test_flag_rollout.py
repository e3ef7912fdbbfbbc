"""The `flag` deployment target: a flagd flag whose fractional targeting is the canary weight.

The unit part checks the flag file (schema, weights, metadata, neighbours kept, refusals); the
release part runs the real ReleaseWorkflow on the dev server with the example service running
through the local target, reading the flag with OpenFeature's flagd file provider, and a real
Prometheus judging the flagged path."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.deploy import target_for
from activities.deploy.flag import FlagTarget, flags_validator
from signoff.config import Settings
from signoff.models import DeployRequest, DeploySpec, ReleaseFile, RollbackRequest
from tests.helpers import running_worker, wait_for, wait_phase
from tests.prom import PrometheusServer
from tests.test_deploy import DeployActivities, artifacts, call, digests, settings  # noqa: F401 (fixtures)
from tests.test_release_canary import canary_release, checkout, stack  # noqa: F401 (the fixture)

A, B, C = ("sha256:" + c * 64 for c in "abc")
FLAG_ERROR_RATE = (
    'sum(rate(http_requests_total{service="{service}",digest="{digest}",variant="on",code=~"5.."}[10s]))'
    ' / sum(rate(http_requests_total{service="{service}",digest="{digest}",variant="on"}[10s]))'
)


def flagd_schema_errors(document: dict[str, Any]) -> list[str]:
    return [e.message for e in flags_validator().iter_errors(document)]


def flag_in(path: Path, key: str = "checkout-new-path") -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert flagd_schema_errors(document) == []
    return document["flags"][key]


async def test_weights_become_fractional_targeting_and_rollback_is_zero(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", flags_dir=tmp_path)
    flags = tmp_path / "flags.json"
    neighbour = {"state": "ENABLED", "variants": {"dark": "#000", "light": "#fff"}, "defaultVariant": "light"}
    flags.write_text(json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {"theme": neighbour}}))
    spec = DeploySpec(target="flag", settings={"file": "flags.json"})
    acts = DeployActivities(settings)

    async def deploy(digest: str, weight: int) -> Any:
        return await call(acts.deploy, DeployRequest(release_id=f"rel-{digest[7]}", service="checkout", digest=digest, weight=weight, target=spec))

    first = await deploy(A, 100)
    assert (first.stable, flag_in(flags)["defaultVariant"]) == (A, "on") and "targeting" not in flag_in(flags)
    for weight in (25, 50):
        state = await deploy(B, weight)
        assert (state.stable, state.canary, state.weight) == (A, B, weight)
        assert flag_in(flags)["targeting"] == {"fractional": [{"var": "targetingKey"}, ["on", weight], ["off", 100 - weight]]}
    promoted = await deploy(B, 100)
    assert (promoted.stable, promoted.canary, promoted.detail["previous"]) == (B, None, A)
    assert flag_in(flags)["defaultVariant"] == "on" and "targeting" not in flag_in(flags)

    await deploy(C, 25)
    back = await call(acts.rollback, RollbackRequest(release_id="rel-c", service="checkout", to_digest=B, target=spec))
    flag = flag_in(flags)
    assert (back.stable, back.canary, back.weight) == (B, None, 0)
    assert flag["defaultVariant"] == "off" and "targeting" not in flag
    assert flag["metadata"] == {"signoffStable": B, "signoffPrevious": A, "signoffRelease": "rel-c"}
    assert json.loads(flags.read_text())["flags"]["theme"] == neighbour  # other flags are not touched

    again = await call(acts.rollback, RollbackRequest(release_id="rel-c", service="checkout", to_digest=B, target=spec))
    assert again.detail["actions"] == back.detail["actions"]  # a retried rollback writes nothing


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ('{"flags": {"checkout-new-path": {"state": "MAYBE", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}', "flags.checkout-new-path"),
        ('{"flags": {"checkout-new-path": {"state": "ENABLED", "variants": {}, "defaultVariant": "off"}}}', "flags.checkout-new-path"),
        ("{not json", "is not JSON"),
    ],
)
async def test_a_broken_flag_file_is_refused_in_one_sentence_and_left_alone(tmp_path: Path, content: str, complaint: str) -> None:
    flags = tmp_path / "flags.json"
    flags.write_text(content)
    spec = DeploySpec(target="flag", settings={"file": "flags.json"})
    with pytest.raises(ApplicationError) as refused:
        await call(DeployActivities(Settings(state_dir=tmp_path / "s", flags_dir=tmp_path)).deploy, DeployRequest(release_id="r", service="checkout", digest=A, weight=25, target=spec))
    assert refused.value.type == "InvalidFlag" and refused.value.non_retryable
    assert complaint in refused.value.message and refused.value.message.endswith("fix the flag file") and "\n" not in refused.value.message
    assert flags.read_text() == content


async def test_a_release_file_cannot_make_the_flag_target_write_outside_the_flags_directory(tmp_path: Path) -> None:
    """The attack: a release names a flag file elsewhere on the worker (its keys, a shell profile,
    through a symlink planted in the flags directory) so that a deploy writes JSON there."""
    settings = Settings(state_dir=tmp_path / "state", flags_dir=tmp_path / "flags")
    (tmp_path / "flags").mkdir()
    outside = tmp_path / "state" / "keys"
    outside.mkdir(parents=True)
    (tmp_path / "flags" / "planted.json").symlink_to(outside / "planted.json")
    acts = DeployActivities(settings)
    for file in ("../state/keys/orchestrator.json", str(outside / "abs.json"), "planted.json", "checkout.yaml"):
        spec = DeploySpec(target="flag", settings={"file": file})
        with pytest.raises(ApplicationError, match="is not a .json file inside the worker's flags directory") as refused:
            await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=A, weight=100, target=spec))
        assert refused.value.type == "BadTargetSettings"
    assert list(outside.iterdir()) == [] and [p.name for p in (tmp_path / "flags").iterdir()] == ["planted.json"]


def served_variants(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return {line.split('variant="', 1)[1].split('"', 1)[0] for line in text.splitlines() if line.startswith("http_requests_total{") and "variant=" in line}


async def test_a_service_moving_from_local_to_flag_is_restarted_reading_the_flag(settings: Settings, digests: dict[str, str]) -> None:  # noqa: F811
    from activities.deploy.local import LocalTarget

    good = digests["good"]
    LocalTarget(settings, {"rate": 0}).deploy("checkout", good, 100, release_id="rel-local")
    plain_port = json.loads((settings.state_dir / "deploy" / "checkout.json").read_text())["stable"]["port"]
    assert served_variants(plain_port) == set()  # started without a flag

    state = FlagTarget(settings, {"runs_on": "local"}).deploy("checkout", good, 100, release_id="rel-flag")
    proc = json.loads((settings.state_dir / "deploy" / "checkout.json").read_text())["stable"]
    assert state.stable == good and proc["digest"] == good and "--flags" in proc["flag_args"]
    assert served_variants(proc["port"]) == {"on", "off"}  # the same build, now reading the flag
    # 100 %: once the provider has re-read the file (it polls every 100 ms), every request is on
    answers: list[str] = []
    deadline = time.monotonic() + 5
    while answers[-5:] != ["on"] * 5 and time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc['port']}/", timeout=2) as resp:
            answers.append(resp.headers["X-Flag-Variant"])
        time.sleep(0.02)
    assert answers[-5:] == ["on"] * 5, answers


def test_unknown_runs_on_is_explained(tmp_path: Path) -> None:
    from activities.deploy.base import DeployError

    with pytest.raises(DeployError, match="runs_on 'kubernetes' is not supported by the flag target; use local"):
        FlagTarget(Settings(state_dir=tmp_path), {"runs_on": "kubernetes"})


# --------------------------------------------------------------------------- a release behind the flag


def flag_release(flavour: str, **extra: Any) -> ReleaseFile:
    release = canary_release(flavour, **extra).model_dump(mode="json", exclude_none=True)
    release["deploy"] = {"target": "flag", "settings": {"runs_on": "local"}}
    if release.get("canary"):
        release["canary"]["steps"] = [{"set_weight": 25}, {"analysis": ["error-rate"]}, {"set_weight": 50}, {"analysis": ["error-rate"]}]
        release["canary"]["analyses"]["error-rate"]["query"] = FLAG_ERROR_RATE
    return ReleaseFile.model_validate(release)


def variants_served(state_dir: Path) -> dict[str, float]:
    """Requests by variant, from the running build's own /metrics."""
    port = json.loads((state_dir / "deploy" / "checkout.json").read_text())["stable"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        lines = [line for line in resp.read().decode().splitlines() if line.startswith("http_requests_total{")]
    served: dict[str, float] = {}
    for line in lines:
        variant = line.split('variant="', 1)[1].split('"', 1)[0]
        served[variant] = served.get(variant, 0.0) + float(line.rsplit(" ", 1)[1])
    return served


@pytest.mark.slow
async def test_flag_release_good_reaches_100_and_bad_is_turned_off_by_the_analysis(
    client: Client, task_queue: str, stack: PrometheusServer, tmp_path: Path  # noqa: F811 (the fixture)
) -> None:
    settings = Settings.from_env()
    flags = settings.state_dir.resolve() / "flags" / "checkout.flagd.json"
    async with running_worker(client, task_queue) as sc:
        (tmp_path / "base").mkdir()
        base = await sc.start_release(flag_release("bad", canary=None), release_id=f"base-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "base"))
        await wait_phase(sc, base.release_id, "succeeded", timeout=120)

        good_id = f"good-{uuid.uuid4().hex[:6]}"
        (tmp_path / "good").mkdir()
        await sc.start_release(flag_release("good"), release_id=good_id, base_dir=checkout(tmp_path / "good"))
        good = await wait_for(sc, good_id, lambda s: s.phase.is_final, timeout=180)
        assert good.phase.value == "succeeded", good.reason
        assert good.canary is not None and {(2, "successful"), (4, "successful")} <= {(m.step, m.verdict) for m in good.canary.analyses}
        weights = [e["weight"] for e in FlagTarget(settings).actions("checkout").entries() if e["release_id"] == good_id]
        assert weights == [0, 25, 50, 100]  # dark, then 25 → 50 → 100 %
        assert flag_in(flags)["defaultVariant"] == "on" and flag_in(flags)["metadata"]["signoffStable"] == good.artifact_digest

        bad_id = f"bad-{uuid.uuid4().hex[:6]}"
        (tmp_path / "bad").mkdir()
        await sc.start_release(flag_release("bad"), release_id=bad_id, base_dir=checkout(tmp_path / "bad"))
        bad = await wait_for(sc, bad_id, lambda s: s.phase.is_final, timeout=180)
        assert bad.phase.value == "rolled_back", bad.reason
        assert bad.canary is not None
        failed = [m for m in bad.canary.analyses if m.verdict == "failed"]
        assert failed and failed[0].step == 2 and failed[0].value is not None and failed[0].value >= 0.05
        entries = [e for e in FlagTarget(settings).actions("checkout").entries() if e["release_id"] == bad_id]
        assert [e["weight"] for e in entries] == [0, 25, 0]  # dark, 25 %, and 0 % by the analysis
        flag = flag_in(flags)
        assert flag["defaultVariant"] == "off" and "targeting" not in flag and flag["metadata"]["signoffStable"] == good.artifact_digest

        placement = target_for(settings, flag_release("good").deploy).current("checkout")
        assert (placement.stable, placement.canary, placement.weight) == (good.artifact_digest, None, 0)
        # the build that serves now is the good one, and it takes only the flag-off path from here on
        before = variants_served(settings.state_dir)
        await asyncio.sleep(2)
        after = variants_served(settings.state_dir)
        assert after["off"] > before["off"] and after["on"] == before["on"]
