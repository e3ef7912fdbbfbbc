"""Kubernetes manifests the gitops target edits: an Argo Rollouts ``Rollout`` or a ``Deployment``.

Edits are structural (ruamel.yaml round-trip), so comments, key order and every field signoff
does not own survive a commit. signoff owns exactly three things in a manifest:

* the image of one container, pinned by digest (``registry/app@sha256:…``);
* for a ``Rollout``, ``spec.strategy.canary.steps`` (see `RolloutManifest`);
* its bookkeeping in ``metadata.annotations`` (``signoff.dev/stable``, ``…/canary``,
  ``…/weight``, ``…/previous``, ``…/release``). Object annotations never restart pods, and they
  let `current` answer from Git alone.

Every edited document is validated before it is committed: a ``Deployment`` (and a Rollout's
pod template) against the Kubernetes schema bundled with ``kubernetes-validate``; a ``Rollout``
against the Rollout CRD's OpenAPI schema vendored in ``schemas/`` from the Argo Rollouts
release named in its file name.
"""

from __future__ import annotations

import io
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import jsonschema
import kubernetes_validate
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.deploy.base import DeployError, Placement

SCHEMAS = Path(__file__).resolve().parent / "schemas"
ROLLOUT_SCHEMA = SCHEMAS / "argo-rollouts-v1.9.1-rollout.json"
KUBERNETES_VERSION = "1.33.0"
ANNOTATION = "signoff.dev/"


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting are kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def load(text: str, where: str) -> Any:
    try:
        doc = _yaml().load(text)
    except YAMLError as e:
        raise DeployError(f"{where} is not valid YAML ({e.__class__.__name__}); fix the manifest in the gitops repository", kind="BadManifest") from e
    if not isinstance(doc, dict):
        raise DeployError(f"{where} is not a Kubernetes object (a YAML mapping); fix the manifest in the gitops repository", kind="BadManifest")
    return doc


def dump(doc: Any) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def plain(doc: Any) -> dict[str, Any]:
    """The document as plain JSON types, the way a validator or the API server sees it."""
    return json.loads(json.dumps(doc))


# --------------------------------------------------------------------------- images


def image_repository(image: str) -> str:
    """``registry:5000/app:1.2@sha256:…`` → ``registry:5000/app`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    return name


def image_digest(image: str) -> str | None:
    return image.split("@", 1)[1] if "@" in image else None


def pick_container(containers: Any, service: str, name: str | None, where: str) -> Any:
    """The container signoff pins: the one named in settings, else the one named after the
    service, else the only one. Guessing between several would ship to the wrong one."""
    if not isinstance(containers, list) or not containers:
        raise DeployError(f"{where} has no containers in its pod template; fix the manifest", kind="BadManifest")
    wanted = name or service
    for container in containers:
        if isinstance(container, dict) and container.get("name") == wanted:
            return container
    if name is None and len(containers) == 1 and isinstance(containers[0], dict):
        return containers[0]
    raise DeployError(
        f"{where} has no container named {wanted!r}; set deploy.settings.container to the container signoff should update",
        kind="BadManifest",
    )


# --------------------------------------------------------------------------- manifests


class Manifest(Protocol):
    """What the gitops target needs of a manifest it edits: read the placement, change it,
    and refuse (DeployError) a result the cluster tool would not accept."""

    doc: Any

    def placement(self) -> Placement: ...

    def release(self) -> str | None: ...

    def apply(self, want: Placement, release_id: str) -> None: ...

    def validate(self) -> None: ...


class KubernetesManifest:
    """One workload object; subclasses say where its pod template is and what a placement means."""

    kind = ""
    api_versions: tuple[str, ...] = ()

    def __init__(self, doc: Any, *, where: str, service: str, container: str | None = None, image: str | None = None) -> None:
        self.doc = doc
        self.where = where
        self.service = service
        self.container_name = container
        self.image = image
        if doc.get("kind") != self.kind or doc.get("apiVersion") not in self.api_versions:
            raise DeployError(
                f"{where} is a {doc.get('apiVersion')}/{doc.get('kind')}, not a {self.api_versions[0]}/{self.kind}; "
                f"point deploy.settings.manifest at the {self.kind} or change deploy.settings.kind",
                kind="BadManifest",
            )

    # placement bookkeeping ----------------------------------------------------

    def _annotations(self) -> Any:
        metadata = self.doc.setdefault("metadata", {})
        if metadata.get("annotations") is None:
            metadata["annotations"] = {}
        return metadata["annotations"]

    def placement(self) -> Placement:
        notes = (self.doc.get("metadata") or {}).get("annotations") or {}
        running = image_digest(str(self.container().get("image") or ""))
        return Placement(
            stable=notes.get(ANNOTATION + "stable") or (running if not notes.get(ANNOTATION + "canary") else None),
            canary=notes.get(ANNOTATION + "canary") or None,
            weight=int(notes.get(ANNOTATION + "weight") or 0),
            previous=notes.get(ANNOTATION + "previous") or None,
        )

    def release(self) -> str | None:
        return ((self.doc.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION + "release")

    def _record(self, want: Placement, release_id: str) -> None:
        notes = self._annotations()
        values = {**want.to_dict(), "weight": str(want.weight), "release": release_id or None}
        for key, value in values.items():
            if value is None:
                notes.pop(ANNOTATION + key, None)
            else:
                notes[ANNOTATION + key] = str(value)

    # the pod template ----------------------------------------------------------

    def template(self) -> Any:
        spec = self.doc.get("spec") or {}
        template = spec.get("template")
        if not isinstance(template, dict) or not isinstance((template.get("spec") or None), dict):
            raise DeployError(f"{self.where} has no spec.template.spec; fix the manifest", kind="BadManifest")
        return template

    def container(self) -> Any:
        return pick_container(self.template()["spec"].get("containers"), self.service, self.container_name, self.where)

    def _pin(self, digest: str) -> None:
        container = self.container()
        repository = self.image or image_repository(str(container.get("image") or ""))
        if not repository:
            raise DeployError(f"{self.where}: container {container.get('name')!r} has no image; set deploy.settings.image", kind="BadManifest")
        container["image"] = f"{repository}@{digest}"



class DeploymentManifest(KubernetesManifest):
    """A plain ``Deployment``: no canary, so the pod template always runs the stable digest and
    Kubernetes' rolling update does the rest."""

    kind = "Deployment"
    api_versions = ("apps/v1",)

    def apply(self, want: Placement, release_id: str) -> None:
        self._pin(want.stable or "")
        self._record(want, release_id)

    def validate(self) -> None:
        validate_kubernetes(plain(self.doc), self.where)


class RolloutManifest(KubernetesManifest):
    """An Argo Rollouts ``Rollout`` whose canary signoff drives through Git.

    For a canary at weight ``w`` the pod template gets the canary digest and the steps become
    ``[{setWeight: w}, {pause: {}}]``: Argo shifts ``w`` % of traffic and then waits with no
    deadline, so only signoff's analysis decides what happens next. The next signoff step
    commits new steps; Argo restarts its step index whenever the steps change, so it goes
    straight to the new weight. Promotion commits no steps (Argo completes the update) and
    rollback is "deploy the previous digest": the template returns to the stable ReplicaSet,
    which Argo recognises and switches back to at once, skipping every step.
    """

    kind = "Rollout"
    api_versions = ("argoproj.io/v1alpha1",)

    def _canary(self) -> Any:
        strategy = (self.doc.get("spec") or {}).get("strategy") or {}
        canary = strategy.get("canary")
        if not isinstance(canary, dict):
            raise DeployError(
                f"{self.where} has no spec.strategy.canary; signoff drives Rollouts with the canary strategy, so add one",
                kind="BadManifest",
            )
        return canary

    def apply(self, want: Placement, release_id: str) -> None:
        canary = self._canary()
        if want.canary:
            self._pin(want.canary)
            canary["steps"] = [{"setWeight": want.weight}, {"pause": {}}]
        else:
            self._pin(want.stable or "")
            canary["steps"] = []
        self._record(want, release_id)

    def validate(self) -> None:
        document = plain(self.doc)
        errors = sorted(rollout_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            raise DeployError(
                f"{self.where} is not a valid Argo Rollouts Rollout ({describe(errors[0])}); fix the manifest in the gitops repository",
                kind="InvalidManifest",
            )
        template = document["spec"]["template"]
        validate_kubernetes({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "template"}, "template": template}, self.where)


class KustomizationImage:
    """A ``Deployment`` pinned through a kustomize ``images:`` entry (``name`` = the image
    repository, ``digest`` = what runs), for repositories where overlays own the image. The
    entry is the placement; the release is in the commit message.

    Validation renders the kustomization with ``kubectl kustomize`` (in place; the previous text
    is put back when it fails) and checks every rendered Deployment and Rollout against its schema,
    and that some container really runs the pinned image: an entry whose name matches no
    container would otherwise change nothing, silently.
    """

    def __init__(self, doc: Any, *, where: str, path: Path, image: str | None) -> None:
        if not image:
            raise DeployError("deploy.settings.image (the image repository the images: entry names) is required with via: kustomize", kind="BadTargetSettings")
        if not isinstance(doc.get("images", []), list):
            raise DeployError(f"{where}: images is not a list; fix the kustomization", kind="BadManifest")
        self.doc, self.where, self.path, self.image = doc, where, path, image

    def _entry(self) -> Any:
        images = self.doc.setdefault("images", [])
        for entry in images:
            if isinstance(entry, dict) and entry.get("name") == self.image:
                return entry
        images.append({"name": self.image})
        return images[-1]

    def placement(self) -> Placement:
        for entry in self.doc.get("images") or []:
            if isinstance(entry, dict) and entry.get("name") == self.image:
                return Placement(stable=entry.get("digest") or None)
        return Placement()

    def release(self) -> str | None:
        return None

    def apply(self, want: Placement, release_id: str) -> None:
        entry = self._entry()
        entry["digest"] = want.stable
        entry.pop("newTag", None)

    def validate(self) -> None:
        original = self.path.read_text()
        self.path.write_text(dump(self.doc))
        try:
            rendered = render_kustomization(self.path.parent, self.where)
            pinned = f"{self.image}@{self.placement().stable}"
            images = [c.get("image") for obj in rendered for c in _containers(obj)]
            if pinned not in images:
                raise DeployError(f"{self.where}: no container of the rendered kustomization runs {self.image}; set deploy.settings.image to the repository its Deployment uses", kind="InvalidManifest")
            for obj in rendered:
                if obj.get("kind") == "Deployment":
                    validate_kubernetes(obj, f"{self.where} (rendered {obj['kind']} {obj.get('metadata', {}).get('name')})")
        except DeployError:
            self.path.write_text(original)
            raise


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c for c in spec.get("containers") or [] if isinstance(c, dict)]


def render_kustomization(directory: Path, where: str) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: the objects the cluster would get (no cluster needed)."""
    try:
        out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeployError(f"could not run `kubectl kustomize` to check {where} ({e.__class__.__name__}); install kubectl on the worker", kind="InvalidManifest") from e
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise DeployError(f"{where} does not build with kustomize ({reason}); fix the kustomization in the gitops repository", kind="InvalidManifest")
    return [plain(d) for d in YAML(typ="safe").load_all(out.stdout) if isinstance(d, dict)]


MANIFEST_KINDS: dict[str, type[RolloutManifest] | type[DeploymentManifest]] = {"argo-rollout": RolloutManifest, "deployment": DeploymentManifest}


# --------------------------------------------------------------------------- validation


def describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "the document"
    return f"{where}: {error.message[:200]}"


@cache
def rollout_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(ROLLOUT_SCHEMA.read_text())
    schema.pop("$comment", None)
    return jsonschema.Draft7Validator(schema)


def validate_kubernetes(document: dict[str, Any], where: str) -> None:
    """Strict validation (unknown fields are errors) against the bundled Kubernetes schema."""
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise DeployError(
            f"{where} is not a valid Kubernetes {document.get('kind')} ({describe(e)}); fix the manifest in the gitops repository",
            kind="InvalidManifest",
        ) from e
    except kubernetes_validate.SchemaNotFoundError as e:
        raise DeployError(f"{where}: no Kubernetes {KUBERNETES_VERSION} schema for {document.get('apiVersion')}/{document.get('kind')}; fix the manifest", kind="InvalidManifest") from e
