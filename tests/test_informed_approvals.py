"""Informed approvals: the request people approve shows what will run (Slack, Jira-equal rows,
`release status`), and every approval binds the plan hash (release spec + artifact digest), so a
changed plan needs approving again — in the gate and again at the actuator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from signoff.config import Settings
from signoff.models import ApprovalAttempt, ApprovalEvidence, DeployRequest, DeploySpec, Evidence
from signoff.trust.evidence import plan_sha256, start_body
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase, worker_slack
from tests.test_change_facts import built, repo_with
from tests.test_trust_boundary import ALICE, BOB, DANA, RogueRelease, approve_proof, signed

def block_text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


async def test_slack_request_names_target_command_paths_and_rules(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with worker_slack(monkeypatch, token="xoxb-t") as stub:
        repo, commit = repo_with(tmp_path, {"deploy/k8s.yaml": "replicas: 3\n", "src/cart.py": "x = 1\n"})
        spec = built(repo, commit)
        deploy = {"target": "command", "settings": {"deploy": "kubectl-apply --context prod-eu {service} {digest} {weight}", "current": "true", "rollback": "true"}}
        spec = spec.model_copy(update={"deploy": DeploySpec.model_validate(deploy)})
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as sc:
            rid = f"inf-{uuid.uuid4().hex[:6]}"
            await sc.start_release(spec, release_id=rid, base_dir=repo)
            status = await wait_phase(sc, rid, "awaiting_approval", timeout=90)
            [post] = await stub.until("chat.postMessage", 1, timeout=30)
            env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
            shown = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", "from signoff.cli import main; main()", "release", "status", rid], env=env, capture_output=True, text=True, timeout=60
            )
            await sc.abort(rid, identity=DANA, reason="test over")
        blocks = post.body["blocks"] if isinstance(post.body["blocks"], list) else json.loads(post.body["blocks"])
        text = block_text(blocks)
        assert "Deploy target" in text and "command" in text
        assert "kubectl-apply --context prod-eu" in text  # the command that will run
        assert "deploy/k8s.yaml" in text and "src/cart.py" in text  # paths derived from git
        assert "touches deploy manifests: deploy/k8s.yaml" in text  # the rule that fired
        assert "printf built &gt; out.bin" in text  # the build command (escaped for Slack)
        assert "Rollback target" in text and status.plan_sha256 and status.plan_sha256 in text
        approve = next(e for b in blocks if b.get("type") == "actions" for e in b["elements"] if e["action_id"] == "signoff_approve")
        assert json.loads(approve["value"])["plan"] == status.plan_sha256  # a click approves exactly this plan
        assert shown.returncode == 0, shown.stderr
        for words in ("kubectl-apply --context prod-eu", "deploy/k8s.yaml", "touches deploy manifests", "printf built > out.bin", status.plan_sha256):
            assert words in shown.stdout, (words, shown.stdout)


async def test_changed_deploy_settings_make_an_old_approval_not_count(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        first, second = f"plan-{uuid.uuid4().hex[:6]}", f"plan-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=first)
        seen = await wait_phase(sc, first, "awaiting_approval")
        # a new start of the same service, deploying with other settings: another plan
        changed = gated_spec().model_copy(update={"deploy": DeploySpec(target="command", settings={"deploy": "true --region us", "current": "true", "rollback": "true"})})
        await sc.start_release(changed, release_id=second)
        now = await wait_phase(sc, second, "awaiting_approval")
        assert seen.artifact_digest == now.artifact_digest and seen.plan_sha256 != now.plan_sha256

        # alice reviewed the first plan; her approval of the second release names that plan
        stale = ApprovalAttempt(release_id=second, identity=ALICE, channel="cli", digest=DIGEST_A, plan=seen.plan_sha256)
        result = await sc.submit_approval(stale)
        assert not result.accepted and "review the current plan and decide again" in result.reason
        # an approval that names no plan at all is refused too
        bare = ApprovalAttempt(release_id=second, identity=ALICE, channel="cli", digest=DIGEST_A)
        bare = bare.model_copy(update={"proof": sc.sign("person", ALICE, action="approve", subject=second, digest=DIGEST_A, channel="cli", body={"reason": ""})})
        result = await sc.submit_approval(bare)
        assert not result.accepted and "must name the plan hash" in result.reason
        # a proof made for the first release (its plan) cannot be moved to the second
        moved = await sc.signed_attempt(ApprovalAttempt(release_id=first, identity=BOB, channel="cli"))
        result = await sc.submit_approval(moved.model_copy(update={"release_id": second}))
        assert not result.accepted and "proof was made for subject" in result.reason
        status = await sc.status(second)
        assert status.gates[0].approvals == [] and status.phase.value == "awaiting_approval"
        # approving what is shown now counts
        for who in (ALICE, BOB):
            assert (await sc.submit_approval(ApprovalAttempt(release_id=second, identity=who, channel="cli"))).accepted
        await wait_phase(sc, second, "succeeded")
        await sc.abort(first, identity=DANA, reason="test over")


async def test_actuator_refuses_approvals_given_for_another_plan(client: Client, task_queue: str, tmp_path: Path) -> None:
    """A hijacked gate that counted approvals of another plan still ships nothing."""
    from workers.worker import build_worker

    marker = tmp_path / "shipped.log"
    target = DeploySpec(target="command", settings={"deploy": f"echo {{digest}} {{weight}} >> {marker}", "current": "true", "rollback": "true"})
    spec = gated_spec().model_copy(update={"deploy": target})
    other = spec.model_copy(update={"deploy": DeploySpec(target="command", settings={"deploy": "true", "current": "true", "rollback": "true"})})
    r = f"rel-plan-{uuid.uuid4().hex[:6]}"
    start = signed(DANA, action="start_release", subject=r, body=start_body(spec, "/checkout"), channel="api")
    plan, other_plan = plan_sha256(spec, DIGEST_A), plan_sha256(other, DIGEST_A)

    def evidence(approved_plan: str) -> Evidence:
        approvals = [ApprovalEvidence(gate="production", identity=who, proof=approve_proof(r, who, plan=approved_plan)) for who in (ALICE, BOB)]
        return Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=start, approvals=approvals, plan_sha256=plan)

    async with build_worker(client, Settings.from_env(), task_queue=task_queue, workflows=[RogueRelease]):
        async def ship(ev: Evidence) -> str:
            request = DeployRequest(release_id=r, service="checkout", digest=DIGEST_A, weight=100, target=target, evidence=ev)
            return await client.execute_workflow("RogueRelease", request, id=f"rogue-{uuid.uuid4().hex[:8]}", task_queue=task_queue, result_type=str)

        refused = await ship(evidence(other_plan))
        assert refused.startswith("refused to ship") and "not the plan being shipped" in refused, refused
        assert not marker.exists()
        assert await ship(evidence(plan)) == "shipped"
        assert marker.read_text().split() == [DIGEST_A, "100"]


def test_canary_without_the_new_settings_hashes_as_before() -> None:
    """A release file that does not use on_failure/hold_deadline signs and plans exactly as before
    they existed, so releases in flight across an upgrade keep their start proof and approvals."""
    from signoff.trust.proofs import body_digest

    spec = gated_spec().model_copy(update={"canary": None})
    with_canary = spec.model_validate({**spec.model_dump(mode="json"), "canary": {"steps": [{"set_weight": 10}]}})
    dumped = with_canary.model_dump(mode="json")
    assert "on_failure" not in dumped["canary"] and "hold_deadline" not in dumped["canary"]
    held = with_canary.model_validate({**dumped, "canary": {**dumped["canary"], "on_failure": "hold"}})
    assert held.model_dump(mode="json")["canary"]["on_failure"] == "hold"
    assert plan_sha256(with_canary, DIGEST_A) != plan_sha256(held, DIGEST_A)
    assert body_digest(dumped) == body_digest(with_canary.model_validate(dumped).model_dump(mode="json"))


def test_the_remembered_spec_digest_is_never_another_specs() -> None:
    """spec_sha256 remembers digests by the spec's JSON (a rebuilt release does not recompute
    it): every change of the spec, however small, still gets its own digest, the same one the
    uncached computation gives, and asking again after other specs returns the first one."""
    from signoff.models import ReleaseFile
    from signoff.trust.evidence import spec_sha256
    from signoff.trust.proofs import body_digest

    def uncached(spec: ReleaseFile) -> str:
        return body_digest(ReleaseFile.model_validate(spec.model_dump(mode="json")).model_dump(mode="json"))

    base = gated_spec()
    first = spec_sha256(base)
    variants = [
        base.model_copy(update={"service": base.service + "-2"}),
        base.model_copy(update={"environment": "production" if base.environment != "production" else "staging"}),
        base.model_validate({**base.model_dump(mode="json"), "gates": [{**base.gates[0].model_dump(mode="json"), "required": 3}]}),
    ]
    digests = [spec_sha256(v) for v in variants]
    assert digests == [uncached(v) for v in variants]
    assert len({first, *digests}) == 4
    assert spec_sha256(base) == first == uncached(base)


def test_jira_ticket_shows_the_plan_and_its_labels_carry_the_plan_hash() -> None:
    """The Jira request shows the same rows as Slack, and an approval from the ticket binds the
    plan its labels name; a ticket whose plan label was tampered with is refused."""
    from activities.jira import PLAN_LABEL_PREFIX, approval_ticket, gate_labels
    from approvals.jira.parse import JiraWebhookConfig, Refusal, attempt_from_webhook
    from signoff.directory import load_directory
    from signoff.models import GateStatus, PlanSummary, PolicyDecision, ReleaseStatus
    from signoff.config import REPO_ROOT

    plan = "sha256:" + "ab" * 32
    status = ReleaseStatus(
        release_id="rel-j",
        service="checkout",
        requested_by=DANA,
        artifact_digest=DIGEST_A,
        policy=PolicyDecision(tier="high", reasons=["touches deploy manifests: deploy/k8s.yaml"]),
        plan_sha256=plan,
        plan=PlanSummary(build_command="make dist", deploy_target="command", deploy_settings={"deploy": "kubectl-apply " + "x" * 400}, canary=["weight 10%"], rollback_target=DIGEST_A),
    )
    _, description = approval_ticket(status, GateStatus(name="production", required=2), ui_url="http://ui", namespace="default")
    for words in ("touches deploy manifests: deploy/k8s.yaml", "make dist", "kubectl-apply", "weight 10%", plan, "(cut; full: signoff release status rel-j --json)"):
        assert words in description, words
    labels = gate_labels("rel-j", "production", DIGEST_A, plan)
    assert PLAN_LABEL_PREFIX + "ab" * 32 in labels

    def comment(on: list[str]) -> object:
        payload = {"webhookEvent": "comment_created", "comment": {"id": "1", "body": "/approve", "author": {"accountId": "jira-alice-0001"}},
                   "issue": {"id": "1", "key": "REL-1", "fields": {"labels": on, "status": {"name": "To Do"}}}}
        return attempt_from_webhook(payload, directory=load_directory(REPO_ROOT / "examples" / "approvers.yaml"), config=JiraWebhookConfig(), delivery_id="d")

    attempt = comment(labels)
    assert not isinstance(attempt, Refusal) and attempt.plan == plan  # type: ignore[union-attr]
    tampered = comment(labels + [PLAN_LABEL_PREFIX + "cd" * 32])
    assert isinstance(tampered, Refusal) and "signoff-plan" in tampered.reason
