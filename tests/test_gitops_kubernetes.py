"""The gitops target with real Kubernetes manifests: an Argo Rollouts `Rollout` and a `Deployment`
committed by real git to a clone of a real bare remote, checked against the vendored schemas."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from ruamel.yaml import YAML
from temporalio.exceptions import ApplicationError

from activities.deploy.manifests import KUBERNETES_VERSION, ROLLOUT_SCHEMA
from signoff.config import Settings
from signoff.models import DeployRequest, DeploySpec, RollbackRequest, TargetRequest
from tests.test_deploy import DeployActivities, call

DATA = Path(__file__).resolve().parent / "data" / "gitops"
A, B, C = ("sha256:" + c * 64 for c in "abc")
MANIFEST = "apps/checkout.yaml"


def git(repo: Path, *args: str, who: str = "someone") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": f"{who}@example.com",
           "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": f"{who}@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


class Remote:
    """A bare repository holding one manifest, signoff's clone of it and a colleague's clone."""

    def __init__(self, tmp_path: Path, fixture: str) -> None:
        self.bare = tmp_path / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        self.colleague = tmp_path / "colleague"
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.colleague)], check=True, capture_output=True)
        (self.colleague / "apps").mkdir()
        shutil.copy(DATA / fixture, self.colleague / MANIFEST)
        git(self.colleague, "add", ".")
        git(self.colleague, "commit", "-qm", "checkout manifest")
        git(self.colleague, "push", "-q", "origin", "HEAD:main")
        self.clone = tmp_path / "signoff-clone"
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.clone)], check=True, capture_output=True)

    def text(self, ref: str = "main") -> str:
        return subprocess.run(["git", "--git-dir", str(self.bare), "show", f"{ref}:{MANIFEST}"], check=True, capture_output=True, text=True).stdout

    def doc(self, ref: str = "main") -> Any:
        return json.loads(json.dumps(YAML(typ="safe").load(self.text(ref))))

    def head(self) -> str:
        return subprocess.run(["git", "--git-dir", str(self.bare), "rev-parse", "main"], check=True, capture_output=True, text=True).stdout.strip()

    def log(self, fmt: str = "%s") -> list[str]:
        out = subprocess.run(["git", "--git-dir", str(self.bare), "log", f"--format={fmt}", "main"], check=True, capture_output=True, text=True)
        return out.stdout.splitlines()

    def spec(self, kind: str, **extra: Any) -> DeploySpec:
        return DeploySpec(target="gitops", settings={"repo": str(self.clone), "manifest": "apps/{service}.yaml", "kind": kind, "push": True, "branch": "main", **extra})


def image_of(doc: dict[str, Any], container: str = "checkout") -> str:
    return next(c["image"] for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == container)


def rollout_schema_errors(doc: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(json.loads(ROLLOUT_SCHEMA.read_text())).iter_errors(doc)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


async def deploy(settings: Settings, spec: DeploySpec, digest: str, weight: int, release_id: str) -> Any:
    return await call(DeployActivities(settings).deploy, DeployRequest(release_id=release_id, service="checkout", digest=digest, weight=weight, target=spec))


async def rollback(settings: Settings, spec: DeploySpec, digest: str, release_id: str) -> Any:
    return await call(DeployActivities(settings).rollback, RollbackRequest(release_id=release_id, service="checkout", to_digest=digest, target=spec))


async def test_rollout_canary_steps_promotion_and_rollback_reach_the_remote(settings: Settings, tmp_path: Path) -> None:
    remote = Remote(tmp_path, "rollout.yaml")
    spec = remote.spec("argo-rollout")

    await deploy(settings, spec, A, 100, "rel-a")
    doc = remote.doc()
    assert image_of(doc) == f"registry.example.com/shop/checkout@{A}" and doc["spec"]["strategy"]["canary"]["steps"] == []

    state = await deploy(settings, spec, B, 25, "rel-b")
    assert (state.stable, state.canary, state.weight) == (A, B, 25)
    doc = remote.doc()
    assert image_of(doc) == f"registry.example.com/shop/checkout@{B}"
    assert doc["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 25}, {"pause": {}}]
    assert rollout_schema_errors(doc) == []
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": doc["spec"]["template"]}, KUBERNETES_VERSION, strict=True)
    notes = doc["metadata"]["annotations"]
    assert (notes["signoff.dev/stable"], notes["signoff.dev/canary"], notes["signoff.dev/weight"], notes["signoff.dev/release"]) == (A, B, "25", "rel-b")

    await deploy(settings, spec, B, 50, "rel-b")
    assert remote.doc()["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 50}, {"pause": {}}]

    again = await deploy(settings, spec, B, 50, "rel-b")  # a retried activity commits nothing
    assert again.detail["commit"] == remote.head()

    back = await rollback(settings, spec, A, "rel-b")
    doc = remote.doc()
    assert (back.stable, back.canary, back.weight) == (A, None, 0)
    assert image_of(doc) == f"registry.example.com/shop/checkout@{A}" and doc["spec"]["strategy"]["canary"]["steps"] == []
    assert "signoff.dev/canary" not in doc["metadata"]["annotations"] and rollout_schema_errors(doc) == []

    # every commit names its release; the colleague's commit is the first
    assert remote.log()[:4] == [
        f"signoff: checkout: roll back to {A} (release rel-b)",
        f"signoff: checkout: canary {B} at 50% (release rel-b)",
        f"signoff: checkout: canary {B} at 25% (release rel-b)",
        f"signoff: checkout: promote {A} (release rel-a)",
    ]
    assert f"Signoff-Release: rel-b\nSignoff-Digest: {A}" in "\n".join(remote.log("%B"))

    # comments, the sidecar and every field signoff does not own survive
    text = remote.text()
    for kept in ("# Owned by the platform team", "team: payments  # who gets paged", "# a sidecar signoff must not touch",
                 "canaryService: checkout-canary  # traffic split", "limits: {cpu: 500m, memory: 256Mi}"):
        assert kept in text
    assert image_of(doc, "log-shipper") == "registry.example.com/infra/fluent-bit:3.1"
    assert doc["spec"]["strategy"]["canary"]["trafficRouting"] == {"nginx": {"stableIngress": "checkout"}}

    current = await call(DeployActivities(settings).current_deployment, TargetRequest(service="checkout", target=spec))
    assert (current.stable, current.canary, current.detail["commit"]) == (A, None, remote.head())


async def test_deployment_is_pinned_in_place_and_rolled_back(settings: Settings, tmp_path: Path) -> None:
    remote = Remote(tmp_path, "deployment.yaml")
    spec = remote.spec("deployment")

    await deploy(settings, spec, A, 100, "rel-a")
    state = await deploy(settings, spec, B, 25, "rel-b")
    assert (state.stable, state.canary) == (B, None) and "no canary" in state.detail["note"]
    doc = remote.doc()
    assert image_of(doc) == f"registry.example.com/shop/checkout@{B}"
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert doc["metadata"]["annotations"]["signoff.dev/previous"] == A

    await rollback(settings, spec, A, "rel-b")
    doc = remote.doc()
    assert image_of(doc) == f"registry.example.com/shop/checkout@{A}"
    text = remote.text()
    assert "rollingUpdate: {maxSurge: 1, maxUnavailable: 0}  # never below capacity" in text and 'value: "production"' in text
    assert text.startswith("# checkout: plain Deployment")
    assert remote.log()[0] == f"signoff: checkout: roll back to {A} (release rel-b)"


async def test_a_concurrent_push_is_retried_on_top_and_not_clobbered(settings: Settings, tmp_path: Path) -> None:
    remote = Remote(tmp_path, "rollout.yaml")
    spec = remote.spec("argo-rollout")
    await deploy(settings, spec, A, 100, "rel-a")
    # The moment signoff pushes, a colleague pushes first (a pre-push hook runs between
    # signoff's fetch and its push): they scale the Rollout in the same file.
    git(remote.colleague, "pull", "-q", "origin", "main")
    marker = tmp_path / "raced"
    hook = remote.clone / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        f"[ -e {marker} ] && exit 0\ntouch {marker}\n"
        f"cd {remote.colleague} && sed -i 's/replicas: 4/replicas: 6/' {MANIFEST} && "
        "git -c user.name=colleague -c user.email=c@example.com commit -qam 'scale checkout to 6' && git push -q origin HEAD:main\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)

    state = await deploy(settings, spec, B, 25, "rel-b")

    assert marker.exists()
    doc = remote.doc()
    assert doc["spec"]["replicas"] == 6  # the colleague's change is kept
    assert image_of(doc).endswith(B) and doc["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 25}
    assert remote.log()[:2] == [f"signoff: checkout: canary {B} at 25% (release rel-b)", "scale checkout to 6"]
    assert state.detail["commit"] == remote.head()


@pytest.mark.parametrize(
    ("fixture", "kind", "breakage", "complaint"),
    [
        ("deployment.yaml", "deployment", ("replicas: 3", 'replicas: "three"'), "spec.replicas"),
        ("deployment.yaml", "deployment", ("  replicas: 3", "  replica: 3"), "replica"),
        ("rollout.yaml", "argo-rollout", ("revisionHistoryLimit: 3", "revisionHistoryLimit: three"), "spec.revisionHistoryLimit"),
        ("rollout.yaml", "argo-rollout", ("containerPort: 8080", "containerPort: http"), "containerPort"),
    ],
)
async def test_an_invalid_manifest_is_refused_in_one_sentence_before_any_commit(
    settings: Settings, tmp_path: Path, fixture: str, kind: str, breakage: tuple[str, str], complaint: str
) -> None:
    remote = Remote(tmp_path, fixture)
    manifest = remote.colleague / MANIFEST
    manifest.write_text(manifest.read_text().replace(*breakage))
    git(remote.colleague, "commit", "-qam", "a typo")
    git(remote.colleague, "push", "-q", "origin", "HEAD:main")
    before = remote.head()

    with pytest.raises(ApplicationError) as refused:
        await deploy(settings, remote.spec(kind), B, 100, "rel-b")

    assert refused.value.type == "InvalidManifest" and refused.value.non_retryable
    message = refused.value.message
    assert complaint in message and message.endswith("fix the manifest in the gitops repository") and "\n" not in message
    assert remote.head() == before and git(remote.clone, "log", "-1", "--format=%s").strip() == "a typo"
    assert git(remote.clone, "status", "--porcelain") == ""


async def test_wrong_kind_and_missing_manifest_are_explained(settings: Settings, tmp_path: Path) -> None:
    remote = Remote(tmp_path, "deployment.yaml")
    with pytest.raises(ApplicationError, match=r"is a apps/v1/Deployment, not a argoproj.io/v1alpha1/Rollout; point deploy.settings.manifest") as wrong:
        await deploy(settings, remote.spec("argo-rollout"), B, 100, "rel-b")
    assert wrong.value.type == "BadManifest"
    with pytest.raises(ApplicationError, match=r"apps/payments.yaml does not exist"):
        await call(DeployActivities(settings).deploy, DeployRequest(release_id="r", service="payments", digest=B, weight=100, target=remote.spec("deployment")))
    with pytest.raises(ApplicationError, match="not one of signoff, argo-rollout, deployment"):
        await deploy(settings, remote.spec("helm"), B, 100, "rel-b")
    with pytest.raises(ApplicationError, match="via 'kustomize' is not supported with kind argo-rollout"):
        await deploy(settings, remote.spec("argo-rollout", via="kustomize"), B, 100, "rel-b")
    assert remote.log() == ["checkout manifest"]


def ssh_key(tmp_path: Path, name: str) -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def verify(repo: Path, allowed: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "HEAD"], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="git signs with SSH keys through ssh-keygen; install openssh-client")
async def test_commits_are_signed_with_the_workers_key_and_a_forgery_does_not_verify(tmp_path: Path) -> None:
    key = ssh_key(tmp_path, "gitops")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("signoff@localhost " + key.with_suffix(".pub").read_text())
    remote = Remote(tmp_path, "deployment.yaml")

    await deploy(Settings(state_dir=tmp_path / "state", gitops_signing_key=key), remote.spec("deployment"), A, 100, "rel-a")
    assert verify(remote.clone, allowed).returncode == 0
    assert git(remote.clone, "-c", f"gpg.ssh.allowedSignersFile={allowed}", "log", "-1", "--format=%G? %s").startswith("G signoff: checkout: promote")

    # An attacker with push access commits the next digest as "signoff", signed with their own key.
    intruder = ssh_key(tmp_path, "intruder")
    git(remote.colleague, "pull", "-q", "origin", "main")
    manifest = remote.colleague / MANIFEST
    manifest.write_text(manifest.read_text().replace(A, C))
    subprocess.run(
        ["git", "-C", str(remote.colleague), "-c", "user.name=signoff", "-c", "user.email=signoff@localhost", "-c", "gpg.format=ssh",
         "-c", f"user.signingkey={intruder}", "commit", "-qS", "-am", f"signoff: checkout: promote {C}"],
        check=True,
    )
    refused = verify(remote.colleague, allowed)
    assert refused.returncode != 0 and "No principal matched" in refused.stderr

    unsigned = Remote(tmp_path / "plain", "deployment.yaml")
    await deploy(Settings(state_dir=tmp_path / "state2"), unsigned.spec("deployment"), A, 100, "rel-a")
    assert git(unsigned.clone, "-c", f"gpg.ssh.allowedSignersFile={allowed}", "log", "-1", "--format=%G?").strip() == "N"


KUSTOMIZATION = """\
# production overlay for checkout
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
images:
- name: registry.example.com/shop/checkout  # pinned by signoff
  newTag: 1.4.2
- name: registry.example.com/infra/fluent-bit
  newTag: "3.1"
"""


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="via: kustomize renders with `kubectl kustomize`; install kubectl (Debian: kubernetes-client)")
async def test_deployment_through_a_kustomize_images_entry(settings: Settings, tmp_path: Path) -> None:
    remote = Remote(tmp_path, "deployment.yaml")
    overlay = remote.colleague / "apps" / "checkout"
    overlay.mkdir()
    git(remote.colleague, "mv", MANIFEST, "apps/checkout/deployment.yaml")
    (overlay / "kustomization.yaml").write_text(KUSTOMIZATION)
    git(remote.colleague, "add", ".")
    git(remote.colleague, "commit", "-qm", "kustomize overlay")
    git(remote.colleague, "push", "-q", "origin", "HEAD:main")
    spec = DeploySpec(target="gitops", settings={
        "repo": str(remote.clone), "manifest": "apps/{service}/kustomization.yaml", "kind": "deployment", "via": "kustomize",
        "image": "registry.example.com/shop/checkout", "push": True, "branch": "main"})

    def kustomization() -> str:
        return subprocess.run(["git", "--git-dir", str(remote.bare), "show", "main:apps/checkout/kustomization.yaml"], check=True, capture_output=True, text=True).stdout

    await deploy(settings, spec, A, 100, "rel-a")
    await deploy(settings, spec, B, 100, "rel-b")
    text = kustomization()
    assert f"- name: registry.example.com/shop/checkout  # pinned by signoff\n  digest: {B}\n" in text and "newTag: 1.4.2" not in text
    assert text.startswith("# production overlay") and 'newTag: "3.1"' in text  # the other entry and the comments stay
    back = await rollback(settings, spec, A, "rel-b")
    assert back.stable == A and f"digest: {A}" in kustomization()
    git(remote.colleague, "pull", "-q", "origin", "main")
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True).stdout
    assert f"image: registry.example.com/shop/checkout@{A}" in rendered
    assert remote.log()[:3] == [f"signoff: checkout: roll back to {A} (release rel-b)", f"signoff: checkout: promote {B} (release rel-b)", f"signoff: checkout: promote {A} (release rel-a)"]

    # an images entry that matches no container would change nothing: refused before any commit
    head = remote.head()
    wrong = spec.model_copy(update={"settings": {**spec.settings, "image": "registry.example.com/shop/chekout"}})
    with pytest.raises(ApplicationError, match="no container of the rendered kustomization runs registry.example.com/shop/chekout") as refused:
        await deploy(settings, wrong, C, 100, "rel-c")
    assert refused.value.type == "InvalidManifest" and remote.head() == head
    assert git(remote.clone, "status", "--porcelain") == ""
