"""The `argo-rollouts` recipe of the command target: the exact argv `kubectl argo rollouts` gets,
recorded by a fake `kubectl` first on PATH (the real plugin needs a cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.deploy.recipes import recipe_templates
from signoff.config import Settings
from signoff.models import DeployRequest, DeploySpec, RollbackRequest, TargetRequest
from tests.test_deploy import DeployActivities, call

A, B = ("sha256:" + c * 64 for c in "ab")
KUBECTL = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["argo", "rollouts", "status"]:
    print("Healthy")
if os.path.exists({log!r} + ".fail"):
    print("error: rollouts.argoproj.io 'checkout' not found", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `kubectl` that records each argv as one JSON line; returns the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "kubectl.jsonl"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(KUBECTL.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def argo(*args: str) -> list[str]:
    return ["argo", "rollouts", *args]


async def test_argo_rollouts_recipe_drives_a_canary_with_the_expected_argv(tmp_path: Path, kubectl: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    spec = DeploySpec(target="command", settings={"recipe": "argo-rollouts", "image": "registry.example.com/shop/checkout", "namespace": "shop"})
    acts = DeployActivities(settings)

    async def deploy(digest: str, weight: int) -> Any:
        return await call(acts.deploy, DeployRequest(release_id="rel-1", service="checkout", digest=digest, weight=weight, target=spec))

    await deploy(A, 100)
    await deploy(B, 25)
    await deploy(B, 50)
    await deploy(B, 100)
    back = await call(acts.rollback, RollbackRequest(release_id="rel-1", service="checkout", to_digest=A, target=spec))
    status = await call(acts.current_deployment, TargetRequest(service="checkout", target=spec))

    image = "registry.example.com/shop/checkout"
    assert calls(kubectl) == [
        argo("status", "checkout", "--watch=false", "--namespace", "shop"),  # learns what runs before the first deploy
        argo("set", "image", "checkout", f"checkout={image}@{A}", "--namespace", "shop"),
        argo("promote", "checkout", "--full", "--namespace", "shop"),
        argo("set", "image", "checkout", f"checkout={image}@{B}", "--namespace", "shop"),
        argo("promote", "checkout", "--namespace", "shop"),
        argo("promote", "checkout", "--full", "--namespace", "shop"),
        argo("abort", "checkout", "--namespace", "shop"),
        argo("set", "image", "checkout", f"checkout={image}@{A}", "--namespace", "shop"),
        argo("status", "checkout", "--watch=false", "--namespace", "shop"),
    ]
    assert (back.stable, back.canary) == (A, None) and "Healthy" in status.detail["output"]


async def test_recipe_values_and_placeholders_stay_single_arguments(tmp_path: Path, kubectl: Path) -> None:
    """A hostile service name or setting is one argv element, never a second command."""
    marker = tmp_path / "pwned"
    spec = DeploySpec(
        target="command",
        settings={"recipe": "argo-rollouts", "image": f"reg/x; touch {marker}", "rollout": f"$(touch {marker})", "container": "app"},
    )
    service = f"checkout; touch {marker}"
    await call(DeployActivities(Settings(state_dir=tmp_path / "s")).deploy, DeployRequest(release_id="r", service=service, digest=A, weight=100, target=spec))
    assert calls(kubectl)[1] == argo("set", "image", f"$(touch {marker})", f"app=reg/x; touch {marker}@{A}", "--namespace", "default")
    assert not marker.exists()
    # without a rollout name, the service is the Rollout and the container, quoted at run time
    default = recipe_templates("argo-rollouts", {"image": "reg/x"})
    assert default["deploy"] == "kubectl argo rollouts set image {service} {service}=reg/x@{digest} --namespace default"


async def test_a_failing_kubectl_and_bad_recipe_settings_are_one_sentence(tmp_path: Path, kubectl: Path) -> None:
    acts = DeployActivities(Settings(state_dir=tmp_path / "s"))
    Path(f"{kubectl}.fail").touch()
    spec = DeploySpec(target="command", settings={"recipe": "argo-rollouts", "image": "reg/x"})
    with pytest.raises(ApplicationError) as failed:
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=A, weight=100, target=spec))
    assert failed.value.type == "DeployCommandFailed" and "exited with code 1 (error: rollouts.argoproj.io 'checkout' not found)" in failed.value.message
    with pytest.raises(ApplicationError, match="needs deploy.settings.image") as no_image:
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=A, weight=100, target=DeploySpec(target="command", settings={"recipe": "argo-rollouts"})))
    assert no_image.value.type == "BadTargetSettings"
    with pytest.raises(ApplicationError, match="'flagger' is not one of argo-rollouts"):
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=A, weight=100, target=DeploySpec(target="command", settings={"recipe": "flagger", "image": "x"})))
