"""Documented presets for the `command` target, so nobody hand-writes a ``kubectl`` string.

A recipe is a set of command templates. Its own values (which Rollout, container, image,
namespace: worker-side settings) are shell-quoted into it when the target is built; the
run-time placeholders (``{service}``, ``{digest}``, ``{weight}``, ``{release_id}``) stay for the
command target to quote when it runs them. Settings given explicitly win over the recipe's.

``argo-rollouts`` drives an Argo Rollouts ``Rollout`` with the ``kubectl argo rollouts`` plugin.
The Rollout's own steps should be signoff's canary weights, each followed by an indefinite
``pause: {}``, so Argo never advances by itself and signoff's analysis stays the judge:

* a new digest at a canary weight: ``set image`` (Argo runs the first ``setWeight`` step);
* the same digest at a higher weight: ``promote`` (past the pause, to the next step);
* the same digest at 100 %: ``promote --full``;
* rollback: ``abort`` and then ``set image`` back to the previous digest (Argo recognises the
  stable ReplicaSet and switches back without steps), so rollback stays "deploy the previous digest";
* current: ``status --watch=false`` (its output is kept in the deployment detail).
"""

from __future__ import annotations

import shlex
from typing import Any

from activities.deploy.base import DeployError

ARGO = "kubectl argo rollouts"
RECIPES: dict[str, dict[str, str]] = {
    "argo-rollouts": {
        "deploy": f"{ARGO} set image [rollout] [container]=[image]@{{digest}} --namespace [namespace]",
        "advance": f"{ARGO} promote [rollout] --namespace [namespace]",
        "promote": f"{ARGO} promote [rollout] --full --namespace [namespace]",
        "rollback": f"{ARGO} abort [rollout] --namespace [namespace] && {ARGO} set image [rollout] [container]=[image]@{{digest}} --namespace [namespace]",
        "current": f"{ARGO} status [rollout] --watch=false --namespace [namespace]",
    },
}
RECIPE_VALUES = {"argo-rollouts": ("rollout", "container", "image", "namespace")}


def recipe_templates(name: str, options: dict[str, Any]) -> dict[str, str]:
    """The recipe's templates with its values quoted in (``rollout`` and ``container`` default to
    the service name, ``namespace`` to ``default``; ``image``, the repository, is required)."""
    if name not in RECIPES:
        raise DeployError(f"deploy.settings.recipe {name!r} is not one of {', '.join(RECIPES)}; pick a recipe or write deploy.settings.deploy", kind="BadTargetSettings")
    if not options.get("image"):
        raise DeployError(f"the {name} recipe needs deploy.settings.image, the image repository (registry/name) to pin by digest", kind="BadTargetSettings")
    values = {"rollout": "{service}", "container": "{service}", "namespace": "default"}
    values.update({k: str(options[k]) for k in RECIPE_VALUES[name] if options.get(k)})
    templates = {}
    for kind, template in RECIPES[name].items():
        for key, value in values.items():
            # the service placeholder stays a placeholder (quoted at run time); the rest is quoted now
            template = template.replace(f"[{key}]", value if value == "{service}" else shlex.quote(value))
        templates[kind] = template
    return templates
