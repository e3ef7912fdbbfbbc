"""The `command` deployment target: user-supplied shell commands do the deploying.

For platforms signoff has no native target for (``kubectl argo rollouts``, a vendor CLI, an
internal script). Settings::

    recipe: argo-rollouts  # optional: a documented preset (activities/deploy/recipes.py), with
    image: registry.example.com/shop/checkout   # its values: image, rollout, container, namespace
    deploy:   "my-platform deploy {service} registry/{service}@{digest} --weight {weight}"
    advance:  "my-platform set-weight {service} {weight}"  # optional: the canary's digest at a new weight
    promote:  "my-platform promote {service}"              # optional: the canary's digest at 100
    rollback: "my-platform deploy {service} registry/{service}@{digest}"   # optional; default: deploy at weight 100
    current:  "my-platform status {service} --json"                        # optional
    timeout: 300          # seconds per command
    pass_env: [KUBECONFIG] # worker variables the commands may see, on top of the allow-list
    env: {K: V}            # extra variables

Placeholders ``{service}``, ``{digest}``, ``{weight}`` and ``{release_id}`` are replaced with
shell-quoted values (nothing else in the template is touched, so JSON braces are safe). The
placement the target last applied is recorded under ``<state_dir>/deploy/command/``; asking for
the same placement again runs nothing. ``current`` may print JSON with ``stable``, ``canary``,
``weight`` keys, which then wins over the record.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from activities.deploy.base import (
    ActionLog,
    DeployError,
    Placement,
    file_lock,
    plan_deploy,
    plan_rollback,
    state_of,
    write_json_atomically,
)
from activities.deploy.recipes import recipe_templates
from activities.runner import command_env
from signoff.config import Settings
from signoff.models import DeploymentState

TEMPLATES = ("deploy", "advance", "promote", "rollback", "current")
PLACEHOLDER = re.compile(r"\{(service|digest|weight|release_id)\}")


def render(template: str, values: dict[str, str]) -> str:
    """Substitute the known placeholders with shell-quoted values."""
    return PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)


class CommandTarget:
    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.templates = recipe_templates(str(options["recipe"]), options) if options.get("recipe") else {}
        self.templates.update({k: str(options[k]) for k in TEMPLATES if options.get(k)})
        if not self.templates.get("deploy"):
            raise DeployError(
                "the command target needs deploy.settings.deploy (a shell command with {service}, {digest} and {weight} placeholders) or a recipe",
                kind="BadTargetSettings",
            )
        self.timeout = int(options.get("timeout", 300))
        allowed = {n.strip() for n in os.environ.get("SIGNOFF_DEPLOY_PASS_ENV", "").split(",") if n.strip()}
        refused = sorted(str(k) for k in options.get("pass_env", []) if str(k) not in allowed)
        if refused:
            # The worker decides which of its variables a release's commands may see; a release
            # file naming SLACK_BOT_TOKEN gets nothing.
            raise DeployError(
                f"deploy.settings.pass_env names {', '.join(refused)}, which the worker does not pass to deploy commands; "
                "ask an operator to add it to SIGNOFF_DEPLOY_PASS_ENV",
                kind="BadTargetSettings",
            )
        extra = {k: os.environ[k] for k in options.get("pass_env", []) if k in os.environ}
        extra.update({str(k): str(v) for k, v in (options.get("env") or {}).items()})
        self.env = command_env(extra)
        self.cwd = str(options["cwd"]) if options.get("cwd") else None
        self.root = Path(settings.state_dir) / "deploy" / "command"

    def _record_path(self, service: str) -> Path:
        return self.root / f"{service}.json"

    def actions(self, service: str) -> ActionLog:
        return ActionLog(self.root / f"{service}.actions.jsonl")

    def _recorded(self, service: str) -> Placement:
        path = self._record_path(service)
        return Placement.from_dict(json.loads(path.read_text())) if path.exists() else Placement()

    def _run(self, kind: str, values: dict[str, str]) -> str:
        command = render(self.templates[kind], values)
        try:
            out = subprocess.run(
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as e:
            raise DeployError(
                f"the {kind} command for {values['service']} did not finish within {self.timeout} seconds; check it or raise deploy.settings.timeout",
                kind="Timeout",
            ) from e
        if out.returncode != 0:
            lines = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()
            raise DeployError(
                f"the {kind} command for {values['service']} exited with code {out.returncode} ({lines[-1][:300]}); fix deploy.settings.{kind} or the platform it talks to",
                kind="DeployCommandFailed",
            )
        return out.stdout

    def _result(self, service: str, placement: Placement, **detail: Any) -> DeploymentState:
        return state_of(service, placement, actions=self.actions(service).count(), **detail)

    def deploy(self, service: str, digest: str, weight: int, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            now = self._recorded(service)
            if now.stable is None and "current" in self.templates:
                # First deploy through signoff: learn what already serves from the `current` command.
                seen = self.current(service)
                now = Placement.from_dict({"stable": seen.stable, "canary": seen.canary, "weight": seen.weight})
            want, note = plan_deploy(now, digest, weight)
            extra: dict[str, Any] = {"note": note} if note else {}
            if want == now:
                return self._result(service, now, **extra)
            effective_weight = want.weight if want.canary else 100
            values = {"service": service, "digest": digest, "weight": str(effective_weight), "release_id": release_id}
            output = "".join(self._run(kind, values) for kind in self._deploy_kinds(now, digest, effective_weight))
            write_json_atomically(self._record_path(service), want.to_dict())
            self.actions(service).append("deploy", digest=digest, weight=effective_weight, release_id=release_id)
            return self._result(service, want, output=output[-2000:], **extra)

    def _deploy_kinds(self, now: Placement, digest: str, weight: int) -> list[str]:
        """The templates to run, in order. A new digest is `deploy` (then `promote` at 100, when
        given); the running canary moves on with `advance` or `promote` when those are given."""
        wanted = "promote" if weight >= 100 else "advance"
        if now.canary != digest:
            return ["deploy", "promote"] if wanted == "promote" and "promote" in self.templates else ["deploy"]
        return [wanted if wanted in self.templates else "deploy"]

    def current(self, service: str) -> DeploymentState:
        recorded = self._recorded(service)
        if "current" not in self.templates:
            return self._result(service, recorded)
        output = self._run("current", {"service": service, "digest": recorded.stable or "", "weight": str(recorded.weight), "release_id": ""})
        try:
            reported = json.loads(output)
        except ValueError:
            reported = None
        if isinstance(reported, dict):
            merged = Placement.from_dict({**recorded.to_dict(), **{k: v for k, v in reported.items() if k in ("stable", "canary", "weight")}})
            return self._result(service, merged, output=output[-2000:])
        return self._result(service, recorded, output=output[-2000:])

    def rollback(self, service: str, to_digest: str, *, release_id: str = "") -> DeploymentState:
        with file_lock(self.root / f"{service}.lock"):
            now = self._recorded(service)
            want = plan_rollback(now, to_digest)
            if want == now:
                return self._result(service, now)
            kind = "rollback" if "rollback" in self.templates else "deploy"
            output = self._run(kind, {"service": service, "digest": to_digest, "weight": "100", "release_id": release_id})
            write_json_atomically(self._record_path(service), want.to_dict())
            self.actions(service).append("rollback", digest=to_digest, release_id=release_id)
            return self._result(service, want, output=output[-2000:])
