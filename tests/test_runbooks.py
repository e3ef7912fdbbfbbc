"""Runbook definitions, certification and the registered actions (issue 9).

Real components throughout: real ed25519 signatures (cryptography), real JSON Schema
validation, the real `local` deployment target running the example service's real artifacts
as processes, real scripts. The RunbookWorkflow is tested with the workflow (lead-owned).
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import json
import shutil
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.artifacts import store_for
from activities.deploy import LocalTarget, stop_all
from activities.runbook_actions import RunbookActivities, activities_from_settings
from signoff.config import Settings
from signoff.errors import Refused, SignoffError
from signoff.models import DeploySpec
from signoff.runbooks import (
    NotCertified,
    PreparedRunbook,
    PrepareRunbook,
    RenderedStep,
    RunbookError,
    RunbookParameterError,
    StepRequest,
    StepResult,
    UnknownRunbook,
    catalogue,
    certified_runbook,
    certify,
    check_certified,
    load_runbook,
    read_lock,
    render_steps,
    render_value,
    runbook_path,
    validate_params,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "runbooks"
SHIPPED_NAMES = ("restart-service", "scale-service", "rollback-service")
sys.path.insert(0, str(REPO / "examples" / "service"))
import build as example_build  # noqa: E402  (examples/service/build.py, not a package)

MINIMAL = """\
name: {name}
version: "{version}"
description: Say something.
owners: [carol@example.com]
allowed_groups: [on-call]
parameters:
  type: object
  properties:
    service: {{type: string, enum: [checkout]}}
  required: [service]
steps:
  - name: hello
    action: notify
    with:
      text: "hello {{{{ params.service }}}}"
"""


def write_runbook(directory: Path, name: str = "say-hello", version: str = "1.0.0", body: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(body if body is not None else MINIMAL.format(name=name, version=version))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dataclasses.replace(Settings.from_env(), runbook_dir=tmp_path / "runbooks")


def key_of(who: str) -> Path:
    """`who`'s own key: the dev key the test's directory registers for them."""
    from signoff.trust.credentials import dev_key_path

    return dev_key_path(Settings.from_env().state_dir, "person", who)


def shipped_directory() -> Any:
    from signoff.directory import load_directory

    return load_directory(REPO / "examples" / "approvers.yaml")


# --------------------------------------------------------------------------- shipped runbooks


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_shipped_runbooks_are_certified_by_the_committed_certifier_key(name: str) -> None:
    """What a fresh CI machine sees: the shipped lock, each entry signed by its certifier's own
    key as registered in examples/approvers.yaml; carol and alice, with two different keys."""
    entry = check_certified(SHIPPED / f"{name}.yaml", SHIPPED / "certified.lock", directory=shipped_directory())
    entries = [e for e in read_lock(SHIPPED / "certified.lock") if e.name == name]
    assert {e.certified_by for e in entries} == {"carol@example.com", "alice@example.com"} and len({e.keyid for e in entries}) == 2
    loaded = load_runbook(SHIPPED / f"{name}.yaml")
    assert entry.certified_by == "carol@example.com"
    assert entry.sha256 == hashlib.sha256((SHIPPED / f"{name}.yaml").read_bytes()).hexdigest() == loaded.sha256
    assert "on-call" in loaded.spec.allowed_groups
    # only restart-service may be started automatically after a release's rollback
    assert ("automation" in loaded.spec.allowed_groups) == (name == "restart-service")
    assert loaded.spec.parameters["properties"]["service"]["enum"] == ["checkout"]
    assert loaded.spec.deploy.target == "local"
    assert loaded.spec.prechecks and loaded.spec.postchecks


def test_shipped_lock_refuses_when_the_directory_registers_other_keys(tmp_path: Path) -> None:
    """The signature is what counts: the same lock against a directory that registers another
    key for carol fails, naming her."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from signoff.trust.keys import public_pem

    directory = shipped_directory()
    carol = directory.people["carol@example.com"]
    other = carol.model_copy(update={"keys": [public_pem(Ed25519PrivateKey.generate().public_key())]})
    swapped = directory.model_copy(update={"people": {**directory.people, "carol@example.com": other}})
    with pytest.raises(NotCertified, match="by carol@example.com whose signature does not verify with a key the approver directory registers for carol@example.com"):
        check_certified(SHIPPED / "restart-service.yaml", SHIPPED / "certified.lock", directory=swapped)


def test_one_key_cannot_certify_as_two_people(settings: Settings, tmp_path: Path) -> None:
    """mallory certifies a risky runbook as herself and as mallory+second@ with the same key."""
    from signoff.directory import load_directory

    from tests.helpers import unregistered_key, write_directory

    risky = write_runbook(settings.runbook_dir, "roll-it-back", body=yaml.safe_dump({
        "name": "roll-it-back", "version": "1.0.0", "description": "d", "owners": ["carol@example.com"],
        "allowed_groups": ["on-call"], "steps": [{"name": "back", "action": "rollback", "with": {"service": "checkout"}}],
    }))
    lock = settings.runbook_dir / "certified.lock"
    mallory_key = unregistered_key("mallory@example.com")
    directory_file = write_directory(tmp_path / "dir.yaml", {"people": [{"email": "mallory@example.com"}], "groups": {"on-call": ["mallory@example.com"]}})
    certify(risky, "mallory@example.com", lock, key_path=mallory_key)
    certify(risky, "mallory+second@example.com", lock, key_path=mallory_key)
    # the second "person" is nobody the directory knows: her entry proves nothing
    with pytest.raises(NotCertified, match="by mallory\+second@example.com whose signature does not verify"):
        check_certified(risky, lock, directory=load_directory(directory_file))
    # …and even a directory that registers the one key for both names counts one key as one person
    doc = yaml.safe_load(directory_file.read_text())
    doc["people"].append({"email": "mallory+second@example.com", "keys": doc["people"][0]["keys"]})
    directory_file.write_text(yaml.safe_dump(doc))
    with pytest.raises(NotCertified, match="with 1 key\(s\); each certifier must sign with their own key"):
        check_certified(risky, lock, directory=load_directory(directory_file))


def test_a_person_cannot_certify_with_someone_elses_key(settings: Settings) -> None:
    """alice signs an entry 'certified by carol' with her own key: carol never certified it."""
    path = write_runbook(settings.runbook_dir)
    certify(path, "carol@example.com", settings.runbook_dir / "certified.lock", key_path=key_of("alice@example.com"))
    with pytest.raises(NotCertified, match="by carol@example.com whose signature does not verify"):
        certified_runbook("say-hello", settings)


def test_shipped_checks_render_to_analysis_specs() -> None:
    loaded = load_runbook(SHIPPED / "scale-service.yaml")
    params = validate_params(loaded.spec, {"service": "checkout", "replicas": "3"})
    spec = loaded.spec.postchecks[0].to_analysis(params)
    assert spec.query == 'count(up{service="checkout", track="stable"} == 1) - 3'
    assert spec.success is not None and spec.success.greater_than_or_equal == 0
    steps = render_steps(loaded.spec, params)
    assert [s.action for s in steps] == ["notify", "scale"]
    assert steps[1].args == {"service": "checkout", "replicas": 3}
    assert steps[1].timeout == timedelta(seconds=90) and steps[1].retries == 1


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "colour: blue\n", r"say-hello\.yaml: colour: is not a known field"),
        (lambda t: t.replace("action: notify", "action: shell"), r"say-hello\.yaml: steps\.0\.action: Input should be 'scale'"),
        (lambda t: t.replace("params.service", "params.region"), r"steps\.0\.with refers to parameter 'region'"),
        (lambda t: t.replace('version: "1.0.0"', "version: [1]"), r"say-hello\.yaml: version: Input should be a valid string"),
        (lambda t: t.replace("owners: [carol@example.com]", "owners: [carol]"), r"say-hello\.yaml: owners: must be an email address"),
        (lambda t: t.replace("type: string, enum", "type: strang, enum"), r"say-hello\.yaml: parameters: is not a valid JSON Schema"),
        (lambda t: t.replace("text:", "txt:"), r"say-hello\.yaml: steps\.0\.with: text: Field required \(and 1 more problem\)"),
        (lambda t: t.replace("name: say-hello", "name: other"), r"name is 'other' but the file is say-hello\.yaml"),
        (lambda t: t.replace("steps:", "steps: [\n"), r"say-hello\.yaml is not valid YAML at line"),
    ],
    ids=["unknown-field", "unregistered-action", "unknown-parameter", "wrong-type", "bad-owner", "bad-schema", "bad-action-argument", "name-mismatch", "bad-yaml"],
)
def test_invalid_runbooks_are_refused_naming_file_and_field(tmp_path: Path, edit: Any, expected: str) -> None:
    path = write_runbook(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(RunbookError, match=expected) as info:
        load_runbook(path)
    assert str(info.value).count(". ") == 0 or str(info.value).endswith(".")  # one sentence


def test_run_script_pin_must_be_literal(tmp_path: Path) -> None:
    body = MINIMAL.format(name="pinned", version="1") + (
        "  - name: script\n    action: run_script\n    with: {path: fix.sh, sha256: '{{ params.service }}'}\n"
    )
    with pytest.raises(RunbookError, match=r"steps\.1\.with\.sha256 must be written literally"):
        load_runbook(write_runbook(tmp_path, "pinned", body=body))


def test_step_arguments_are_type_checked_at_load(tmp_path: Path) -> None:
    """`replicas: "{{ params.service }}"` would only fail at 3 a.m.; it fails at load instead."""
    body = MINIMAL.format(name="scaler", version="1") + (
        "  - name: scale\n    action: scale\n    with: {service: checkout, replicas: '{{ params.service }}'}\n"
    )
    with pytest.raises(RunbookError, match=r"steps\.1\.with: replicas: Input should be a valid integer"):
        load_runbook(write_runbook(tmp_path, "scaler", body=body))


def test_templating_substitutes_whole_tokens_only() -> None:
    params = {"service": "checkout", "replicas": 3, "on": True}
    assert render_value("{{ params.replicas }}", params) == 3  # a whole token keeps its type
    assert render_value("x-{{params.service}}-{{ params.on }}", params) == "x-checkout-true"
    assert render_value({"a": ["{{ params.service }}"]}, params) == {"a": ["checkout"]}
    for bad in ("{{ params.service | upper }}", "{{ __import__('os') }}", "{{ params.service }"):
        with pytest.raises(ValueError, match="uses a template other than"):
            render_value(bad, params)


def test_missing_runbook_is_unknown(tmp_path: Path) -> None:
    write_runbook(tmp_path / "runbooks")
    with pytest.raises(UnknownRunbook, match=r"no runbook named 'restart-everything'.*known: say-hello") as info:
        runbook_path("restart-everything", tmp_path / "runbooks")
    assert isinstance(info.value, Refused)
    with pytest.raises(UnknownRunbook, match="not a runbook name"):
        runbook_path("../etc/passwd", tmp_path / "runbooks")
    with pytest.raises(UnknownRunbook, match="no runbook file"):
        check_certified(tmp_path / "runbooks" / "gone.yaml", tmp_path / "runbooks" / "certified.lock", directory=shipped_directory())


# --------------------------------------------------------------------------- certification


def test_certify_then_run_then_one_byte_edit_is_refused(settings: Settings) -> None:
    path = write_runbook(settings.runbook_dir)
    lock = settings.runbook_dir / "certified.lock"
    entry = certify(path, "Carol@Example.com", lock, key_path=key_of("carol@example.com"))
    assert entry.certified_by == "carol@example.com" and entry.version == "1.0.0"
    # Verifies with the key the approver directory registers for carol.
    loaded, found = certified_runbook("say-hello", settings)
    assert found == entry and loaded.sha256 == entry.sha256

    data = path.read_bytes()
    path.write_bytes(data.replace(b"Say something.", b"Say something!"))  # one byte
    with pytest.raises(NotCertified, match=r"was edited after certification: .*version 1\.0\.0 was certified as .* by carol@example\.com"):
        certified_runbook("say-hello", settings)
    path.write_bytes(data)
    assert certified_runbook("say-hello", settings)[1] == entry


def test_uncertified_runbooks_are_refused(settings: Settings) -> None:
    lock = settings.runbook_dir / "certified.lock"
    certified = write_runbook(settings.runbook_dir, "certified-one")
    certify(certified, "carol@example.com", lock, key_path=key_of("carol@example.com"))
    write_runbook(settings.runbook_dir, "never-certified")
    with pytest.raises(NotCertified, match="never-certified has never been certified"):
        certified_runbook("never-certified", settings)
    # A new version of a certified runbook is not covered by the old version's entry.
    write_runbook(settings.runbook_dir, "certified-one", version="1.1.0")
    with pytest.raises(NotCertified, match=r"version 1\.1\.0 of runbook certified-one is not certified \(certified versions: 1\.0\.0\)"):
        certified_runbook("certified-one", settings)


def test_no_lock_at_all_is_refused(settings: Settings) -> None:
    write_runbook(settings.runbook_dir)
    with pytest.raises(NotCertified, match="there is no certification lock"):
        certified_runbook("say-hello", settings)


def test_a_forged_lock_entry_is_refused(settings: Settings) -> None:
    """Editing the lock to match edited bytes does not help: the signature covers the hash."""
    path = write_runbook(settings.runbook_dir)
    lock = settings.runbook_dir / "certified.lock"
    certify(path, "carol@example.com", lock, key_path=key_of("carol@example.com"))
    path.write_text(path.read_text().replace('"hello ', '"goodbye '))
    document = json.loads(lock.read_text())
    document["entries"][0]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    lock.write_text(json.dumps(document))
    with pytest.raises(NotCertified, match="signature does not verify"):
        certified_runbook("say-hello", settings)
    # And a garbage signature is refused the same way, not crashed on.
    document["entries"][0]["signature"] = base64.b64encode(b"x" * 64).decode()
    lock.write_text(json.dumps(document))
    with pytest.raises(NotCertified, match="signature does not verify"):
        certified_runbook("say-hello", settings)


def test_versions_are_immutable_and_certify_is_idempotent(settings: Settings) -> None:
    path = write_runbook(settings.runbook_dir)
    lock = settings.runbook_dir / "certified.lock"
    carol, alice = key_of("carol@example.com"), key_of("alice@example.com")
    first = certify(path, "carol@example.com", lock, key_path=carol)
    assert certify(path, "carol@example.com", lock, key_path=carol) == first  # idempotent
    co = certify(path, "alice@example.com", lock, key_path=alice)  # a second person co-certifies
    assert co.certified_by == "alice@example.com" and co.sha256 == first.sha256
    assert len(read_lock(lock)) == 2
    path.write_text(path.read_text().replace('"hello ', '"hi '))
    with pytest.raises(Refused, match=r"version 1\.0\.0 is already certified with different content.*bump version"):
        certify(path, "carol@example.com", lock, key_path=carol)
    path.write_text(path.read_text().replace('"1.0.0"', '"1.0.1"'))
    second = certify(path, "carol@example.com", lock, key_path=carol)
    assert [e.version for e in read_lock(lock)] == ["1.0.0", "1.0.0", "1.0.1"] and second.version == "1.0.1"
    with pytest.raises(Refused, match="not an email address"):
        certify(path, "carol", lock, key_path=carol)


# --------------------------------------------------------------------------- parameters


def test_parameters_are_converted_to_schema_types() -> None:
    spec = load_runbook(SHIPPED / "scale-service.yaml").spec
    assert validate_params(spec, {"service": "checkout", "replicas": "4"}) == {"service": "checkout", "replicas": 4}
    assert validate_params(spec, {"service": "checkout"}) == {"service": "checkout", "replicas": 2}  # default


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "payments"}, r"parameter service='payments' is not accepted by runbook scale-service .*give one of checkout"),
        ({"service": "checkout", "replicas": "many"}, r"parameter replicas='many' of runbook scale-service is not a integer"),
        ({"service": "checkout", "replicas": "9"}, r"parameter replicas=9 is not accepted .*9 is greater than the maximum of 5"),
        ({"service": "checkout", "region": "eu"}, r"runbook scale-service has no parameter 'region' \(it takes: replicas, service\)"),
        ({"replicas": "2"}, r"runbook scale-service needs parameter service; add -p service=VALUE"),
    ],
    ids=["not-in-enum", "not-an-integer", "above-maximum", "unknown", "missing"],
)
def test_bad_parameters_are_refused_naming_the_parameter(params: dict[str, str], expected: str) -> None:
    spec = load_runbook(SHIPPED / "scale-service.yaml").spec
    with pytest.raises(RunbookParameterError, match=expected) as info:
        validate_params(spec, params)
    assert isinstance(info.value, Refused) and isinstance(info.value, SignoffError)


# --------------------------------------------------------------------------- actions


def step(action: str, args: dict[str, Any], *, dry_run: bool = False, runbook_dir: Path | None = None, timeout: float = 30) -> StepRequest:
    return StepRequest(
        run_id="rb-test-1",
        runbook="test",
        step=RenderedStep(name=action.replace("_", "-"), action=action, args=args, timeout=timedelta(seconds=timeout)),  # type: ignore[arg-type]
        dry_run=dry_run,
        runbook_dir=str(runbook_dir or ""),
        target=DeploySpec(target="local", settings={"rate": 0}),
    )


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return resp.status == 200


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def deployed(settings: Settings, tmp_path: Path) -> Iterator[tuple[RunbookActivities, LocalTarget, dict[str, str]]]:
    """checkout on the real local target: the good build was stable, the bad build is stable now."""
    store = store_for(settings.state_dir)
    digests = {}
    for flavour in ("good", "bad"):
        example_build.build(flavour, tmp_path / f"checkout-{flavour}.pyz")
        digests[flavour] = store.put(tmp_path / f"checkout-{flavour}.pyz")
    target = LocalTarget(settings, {"rate": 0})
    try:
        target.deploy("checkout", digests["good"], 100, release_id="rel-1")
        target.deploy("checkout", digests["bad"], 100, release_id="rel-2")
        yield RunbookActivities(settings), target, digests
    finally:
        stop_all(settings.state_dir)


def test_rollback_action_and_its_dry_run(deployed: tuple[RunbookActivities, LocalTarget, dict[str, str]], settings: Settings) -> None:
    acts, target, digests = deployed
    before = _snapshot(settings.state_dir / "deploy")
    preview = acts.run_step(step("rollback", {"service": "checkout", "to": "previous"}, dry_run=True))
    assert preview.state == "dry_run" and not preview.changed
    assert preview.detail == f"dry run: would roll checkout back from {digests['bad']} to {digests['good']}"
    assert _snapshot(settings.state_dir / "deploy") == before  # nothing touched
    assert target.current("checkout").stable == digests["bad"]

    done = acts.run_step(step("rollback", {"service": "checkout", "to": "previous"}))
    assert done.state == "succeeded" and done.changed
    state = target.current("checkout")
    assert state.stable == digests["good"] and state.detail["previous"] == digests["bad"]
    assert _healthy(state.detail["stable"]["port"])
    assert target.actions("checkout").entries()[-1]["action"] == "rollback"


def test_restart_action_restarts_the_processes(deployed: tuple[RunbookActivities, LocalTarget, dict[str, str]], settings: Settings) -> None:
    acts, target, digests = deployed
    pid = target.current("checkout").detail["stable"]["pid"]
    preview = acts.run_step(step("restart", {"service": "checkout"}, dry_run=True))
    assert preview.detail.startswith("dry run: would restart the stable processes of checkout")
    assert target.current("checkout").detail["stable"]["pid"] == pid

    done = acts.run_step(step("restart", {"service": "checkout"}))
    assert done.before == {"stable": pid} and done.after["stable"] != pid
    state = target.current("checkout")
    assert state.stable == digests["bad"] and state.detail["stable"]["pid"] == done.after["stable"]
    assert _healthy(state.detail["stable"]["port"])
    assert any(e["action"] == "restart" for e in target.actions("checkout").entries())


def test_scale_action_runs_real_replicas(deployed: tuple[RunbookActivities, LocalTarget, dict[str, str]], settings: Settings) -> None:
    acts, target, digests = deployed
    replicas_file = settings.state_dir / "deploy" / "checkout.replicas.json"
    preview = acts.run_step(step("scale", {"service": "checkout", "replicas": 2}, dry_run=True))
    assert preview.detail == f"dry run: would scale checkout from 1 to 2 replicas of {digests['bad']}"
    assert not replicas_file.exists()

    done = acts.run_step(step("scale", {"service": "checkout", "replicas": 2}))
    assert done.before == {"replicas": 1} and done.after == {"replicas": 2}
    extras = json.loads(replicas_file.read_text())["replicas"]
    assert len(extras) == 1 and extras[0]["digest"] == digests["bad"] and _healthy(extras[0]["port"])
    sd = json.loads((settings.state_dir / "prometheus" / "targets" / "checkout-replicas.json").read_text())
    assert sd[0]["labels"]["track"] == "stable" and sd[0]["targets"] == [f"127.0.0.1:{extras[0]['port']}"]

    # A rollback keeps the extra replicas on the stable digest.
    acts.run_step(step("rollback", {"service": "checkout"}))
    extras = json.loads(replicas_file.read_text())["replicas"]
    assert [r["digest"] for r in extras] == [digests["good"]] and _healthy(extras[0]["port"])

    down = acts.run_step(step("scale", {"service": "checkout", "replicas": 1}))
    assert down.after == {"replicas": 1} and json.loads(replicas_file.read_text())["replicas"] == []


def test_set_weight_action(deployed: tuple[RunbookActivities, LocalTarget, dict[str, str]]) -> None:
    acts, target, digests = deployed
    with pytest.raises(ApplicationError, match="has no canary running") as info:
        acts.run_step(step("set_weight", {"service": "checkout", "weight": 50}))
    assert info.value.non_retryable and info.value.type == "NoCanary"
    target.rollback("checkout", digests["good"])
    target.deploy("checkout", digests["bad"], 10)
    preview = acts.run_step(step("set_weight", {"service": "checkout", "weight": 50}, dry_run=True))
    assert "from 10% to 50%" in preview.detail and target.current("checkout").weight == 10
    acts.run_step(step("set_weight", {"service": "checkout", "weight": 50}))
    state = target.current("checkout")
    assert (state.stable, state.canary, state.weight) == (digests["good"], digests["bad"], 50)


def test_toggle_flag_writes_a_flagd_file(settings: Settings) -> None:
    acts = RunbookActivities(settings)
    path = settings.state_dir / "flags" / "checkout.json"
    preview = acts.run_step(step("toggle_flag", {"service": "checkout", "flag": "new-cart", "enabled": True}, dry_run=True))
    assert preview.state == "dry_run" and preview.detail == f"dry run: would set flag new-cart of checkout to on in {path} (now unset)"
    assert not path.parent.exists()  # a dry run creates nothing, not even the directory or a lock
    on = acts.run_step(step("toggle_flag", {"service": "checkout", "flag": "new-cart", "enabled": True}))
    assert on.changed and on.before == {"new-cart": None} and on.after == {"new-cart": True}
    flag = json.loads(path.read_text())["flags"]["new-cart"]
    assert flag["defaultVariant"] == "on" and flag["variants"] == {"on": True, "off": False} and flag["state"] == "ENABLED"
    again = acts.run_step(step("toggle_flag", {"service": "checkout", "flag": "new-cart", "enabled": True}))
    assert not again.changed
    acts.run_step(step("toggle_flag", {"service": "checkout", "flag": "new-cart", "enabled": False}))
    assert json.loads(path.read_text())["flags"]["new-cart"]["defaultVariant"] == "off"


def test_wait_heartbeats_and_dry_run_does_not_wait(settings: Settings) -> None:
    acts = RunbookActivities(settings)
    started = time.monotonic()
    assert acts.run_step(step("wait", {"seconds": 30}, dry_run=True)).detail == "dry run: would wait 30 seconds"
    assert time.monotonic() - started < 1
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    started = time.monotonic()
    result = env.run(acts.run_runbook_step, step("wait", {"seconds": 1.5}))
    assert 1.4 < time.monotonic() - started < 5 and result.detail == "waited 1.5 seconds"
    assert len(beats) >= 2


def test_notify_returns_the_text(settings: Settings) -> None:
    result = RunbookActivities(settings).run_step(step("notify", {"text": "restarting checkout"}))
    assert result.text == "restarting checkout" and result.state == "succeeded"


def test_run_script_runs_only_the_pinned_script(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-worker-secret")  # must not reach the script
    scripts = tmp_path / "runbooks"
    scripts.mkdir(exist_ok=True)
    marker = tmp_path / "ran.txt"  # outside the sandbox: a script must not be able to write it
    script = scripts / "purge.py"
    script.write_text(
        "import os, sys, pathlib\n"
        f"try:\n    pathlib.Path({str(marker)!r}).write_text('escaped')\nexcept OSError:\n    pass\n"
        "print('purged', ' '.join(sys.argv[1:]) + '|' + os.environ.get('RUNBOOK_RUN_ID', '') + '|' + os.environ.get('SLACK_BOT_TOKEN', 'none'))\n"
    )
    pinned = hashlib.sha256(script.read_bytes()).hexdigest()
    acts = RunbookActivities(settings)

    preview = acts.run_step(step("run_script", {"path": "purge.py", "sha256": pinned, "args": ["cache"]}, dry_run=True, runbook_dir=scripts))
    assert "would run purge.py" in preview.detail and not marker.exists()

    done = acts.run_step(step("run_script", {"path": "purge.py", "sha256": pinned, "args": ["cache"]}, runbook_dir=scripts))
    assert "purged cache|rb-test-1|none" in done.detail  # its arguments and run id, no worker secret
    assert not marker.exists()  # it ran confined: nothing outside its workspace was written

    script.write_text(script.read_text() + "# changed\n")
    for dry_run in (True, False):
        with pytest.raises(ApplicationError, match=r"purge\.py has sha256 [0-9a-f]{64} but the runbook pins") as info:
            acts.run_step(step("run_script", {"path": "purge.py", "sha256": pinned}, dry_run=dry_run, runbook_dir=scripts))
        assert info.value.non_retryable and info.value.type == "ScriptHashMismatch"
    assert not marker.exists()

    with pytest.raises(ApplicationError, match="does not exist"):
        acts.run_step(step("run_script", {"path": "missing.sh", "sha256": pinned}, runbook_dir=scripts))
    failing = scripts / "fail.sh"
    failing.write_text("echo broken >&2\nexit 3\n")
    with pytest.raises(ApplicationError, match="exited with code 3: broken") as info:
        acts.run_step(step("run_script", {"path": "fail.sh", "sha256": hashlib.sha256(failing.read_bytes()).hexdigest()}, runbook_dir=scripts))
    assert not info.value.non_retryable  # the step's retries apply


def test_actions_reject_arguments_outside_the_registry(settings: Settings) -> None:
    acts = RunbookActivities(settings)
    with pytest.raises(ApplicationError, match=r"step toggle-flag \(toggle_flag\) has bad arguments: service: String should match pattern") as info:
        acts.run_step(step("toggle_flag", {"service": "../../etc", "flag": "x", "enabled": True}))
    assert info.value.non_retryable and info.value.type == "BadStepArguments"
    assert not (settings.state_dir.parent / "etc.json").exists()
    with pytest.raises(ApplicationError, match="not a registered runbook action"):
        acts.run_step(StepRequest.model_construct(**{**step("notify", {"text": "x"}).__dict__, "step": RenderedStep.model_construct(name="x", action="shell", args={})}))


def test_a_script_that_runs_too_long_is_killed(settings: Settings, tmp_path: Path) -> None:
    scripts = tmp_path / "runbooks"
    scripts.mkdir(exist_ok=True)
    script = scripts / "hang.sh"
    script.write_text("i=0\nwhile [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done\nsleep 30\n")  # fills the pipe, then hangs
    started = time.monotonic()
    with pytest.raises(ApplicationError, match=r"did not finish within 1\.5 seconds and was killed") as info:
        RunbookActivities(settings).run_step(
            step("run_script", {"path": "hang.sh", "sha256": hashlib.sha256(script.read_bytes()).hexdigest()}, runbook_dir=scripts, timeout=1.5)
        )
    assert info.value.type == "ScriptTimeout" and time.monotonic() - started < 10


# --------------------------------------------------------------------------- prepare / catalogue


def test_prepare_runbook_activity_returns_everything_the_workflow_needs(settings: Settings) -> None:
    shipped = dataclasses.replace(settings, runbook_dir=SHIPPED)
    acts = RunbookActivities(shipped)
    prepared = ActivityEnvironment().run(acts.prepare_runbook, PrepareRunbook(run_id="rb-1", runbook="restart-service", params={"service": "checkout"}))
    assert prepared.refused is None and prepared.certified_by == "carol@example.com"
    assert prepared.sha256 == hashlib.sha256((SHIPPED / "restart-service.yaml").read_bytes()).hexdigest()
    assert prepared.allowed_groups == ["on-call", "automation"] and prepared.target.target == "local"
    assert [s.name for s in prepared.steps] == ["announce", "restart", "settle"]
    assert prepared.steps[1].args == {"service": "checkout"} and prepared.steps[1].retries == 1
    assert prepared.prechecks[0].spec.query == 'count(up{service="checkout"})'
    assert prepared.postchecks[0].spec.success is not None and prepared.postchecks[0].spec.success.equals == 1
    assert Path(prepared.runbook_dir) == SHIPPED


def test_prepare_runbook_refusals(settings: Settings) -> None:
    shutil.copytree(SHIPPED, settings.runbook_dir)
    acts = RunbookActivities(settings)
    bad = acts.prepare_runbook(PrepareRunbook(run_id="rb-2", runbook="restart-service", params={"service": "payments"}))
    assert bad.refusal_kind == "bad_parameters" and "parameter service='payments'" in (bad.refused or "") and not bad.steps
    unknown = acts.prepare_runbook(PrepareRunbook(run_id="rb-3", runbook="reboot-datacenter", params={}))
    assert unknown.refusal_kind == "unknown" and "no runbook named 'reboot-datacenter'" in (unknown.refused or "")
    path = settings.runbook_dir / "restart-service.yaml"
    path.write_bytes(path.read_bytes().replace(b"seconds: 5", b"seconds: 6"))
    edited = acts.prepare_runbook(PrepareRunbook(run_id="rb-4", runbook="restart-service", params={"service": "checkout"}))
    assert edited.refusal_kind == "not_certified" and "edited after certification" in (edited.refused or "") and not edited.steps


def test_catalogue_lists_runbooks_with_their_certification(settings: Settings) -> None:
    shutil.copytree(SHIPPED, settings.runbook_dir)
    write_runbook(settings.runbook_dir, "say-hello")
    items = {i["name"]: i for i in catalogue(settings)}
    assert set(items) == {*SHIPPED_NAMES, "say-hello"}
    assert all(items[n]["certified"] and items[n]["certified_by"] == "carol@example.com" for n in SHIPPED_NAMES)
    assert items["scale-service"]["parameters"]["replicas"] == {"type": "integer", "minimum": 1, "maximum": 5, "default": 2, "description": "how many stable processes should serve"}
    assert not items["say-hello"]["certified"] and "never been certified" in items["say-hello"]["reason"]


# --------------------------------------------------------------------------- through Temporal


@workflow.defn(sandboxed=False)
class _StepsThroughTemporal:
    """Test-only: the payloads survive the real data converter and a real worker (the
    RunbookWorkflow itself is the lead's, in workflows/runbook.py)."""

    @workflow.run
    async def run(self, request: PrepareRunbook) -> list[StepResult]:
        prepared: PreparedRunbook = await workflow.execute_activity(
            "prepare_runbook", request, result_type=PreparedRunbook, start_to_close_timeout=timedelta(seconds=30)
        )
        results = []
        for rendered in prepared.steps:
            results.append(
                await workflow.execute_activity(
                    "run_runbook_step",
                    StepRequest(run_id=request.run_id, runbook=prepared.name, version=prepared.version, step=rendered, dry_run=True, runbook_dir=prepared.runbook_dir, target=prepared.target),
                    result_type=StepResult,
                    start_to_close_timeout=rendered.timeout,
                )
            )
        return results


async def test_activities_run_on_a_real_worker(
    dev_env: WorkflowEnvironment, task_queue: str, settings: Settings, deployed: tuple[RunbookActivities, LocalTarget, dict[str, str]]
) -> None:
    _, target, digests = deployed
    shipped = dataclasses.replace(settings, runbook_dir=SHIPPED)
    before = _snapshot(settings.state_dir / "deploy")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(
            dev_env.client,
            task_queue=task_queue,
            workflows=[_StepsThroughTemporal],
            activities=activities_from_settings(shipped),
            activity_executor=pool,
        ):
            results = await dev_env.client.execute_workflow(
                _StepsThroughTemporal.run,
                PrepareRunbook(run_id="rb-temporal", runbook="restart-service", params={"service": "checkout"}),
                id=f"rb-{task_queue}",
                task_queue=task_queue,
                result_type=list[StepResult],
            )
    assert [(r.name, r.state) for r in results] == [("announce", "dry_run"), ("restart", "dry_run"), ("settle", "dry_run")]
    assert results[0].text == "Restarting checkout (runbook restart-service)."
    assert results[1].detail == f"dry run: would restart the stable processes of checkout ({digests['bad']})"
    assert results[2].detail == "dry run: would wait 5 seconds"
    assert _snapshot(settings.state_dir / "deploy") == before  # a dry run changed nothing


# --------------------------------------------------------------------------- two-person rule


def test_policy_requires_two_certifiers_for_risky_runbooks(tmp_path: Path) -> None:
    """policies/runbook.rego: a rollback runbook needs two distinct certifiers; the same person
    twice does not count; a notify-only runbook needs one."""
    from signoff.runbooks import NotCertified, certifiers_required, certify, check_certified, load_runbook

    risky = tmp_path / "roll-it-back.yaml"
    risky.write_text(yaml.safe_dump({
        "name": "roll-it-back", "version": "1.0.0", "description": "d", "owners": ["carol@example.com"],
        "allowed_groups": ["on-call"], "parameters": {"type": "object", "properties": {"service": {"type": "string"}}},
        "steps": [{"name": "back", "action": "rollback", "with": {"service": "{{ params.service }}"}}],
    }))
    calm = tmp_path / "say-hi.yaml"
    calm.write_text(yaml.safe_dump({
        "name": "say-hi", "version": "1.0.0", "description": "d", "owners": ["carol@example.com"],
        "allowed_groups": ["on-call"], "steps": [{"name": "hi", "action": "notify", "with": {"text": "hi"}}],
    }))
    from signoff.directory import load_directory

    directory = load_directory(Settings.from_env().directory_path)
    lock = tmp_path / "certified.lock"
    carol, alice = key_of("carol@example.com"), key_of("alice@example.com")
    assert certifiers_required(load_runbook(risky)) == 2 and certifiers_required(load_runbook(calm)) == 1
    certify(calm, "carol@example.com", lock, key_path=carol)
    assert check_certified(calm, lock, directory=directory).certified_by == "carol@example.com"
    certify(risky, "carol@example.com", lock, key_path=carol)
    certify(risky, "carol@example.com", lock, key_path=carol)  # the same person again is not a second person
    with pytest.raises(NotCertified, match="needs 2 distinct certifiers by policy but has 1 \\(carol@example.com\\)"):
        check_certified(risky, lock, directory=directory)
    certify(risky, "alice@example.com", lock, key_path=alice)
    entry = check_certified(risky, lock, directory=directory)
    assert entry.certified_by == "carol@example.com" and entry.co_certified_by == ["alice@example.com"]
