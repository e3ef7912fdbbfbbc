"""Policy and provenance inside the real ReleaseWorkflow (real regorus, real sigstore)."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.conftest import FIXTURES
from tests.helpers import DIGEST_A, release_spec, running_worker, wait_for, wait_phase

pytestmark = pytest.mark.asyncio

SIG = FIXTURES / "sigstore"
WHEEL = SIG / "rfc8785-0.1.2-py3-none-any.whl"
IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
ISSUER = "https://token.actions.githubusercontent.com"


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def recording_deploy(tmp_path: Path) -> dict[str, Any]:
    log = tmp_path / "deploys.log"
    return {"target": "command", "settings": {"deploy": f"echo {{digest}} {{weight}} >> {log}", "current": "true", "rollback": f"echo rollback {{digest}} >> {log}"}}


async def test_verified_artifact_is_promoted(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            artifact=digest_of(WHEEL),
            provenance={"bundle": str(WHEEL) + ".sigstore", "artifact": str(WHEEL), "identity": IDENTITY, "issuer": ISSUER, "offline": True},
            deploy=recording_deploy(tmp_path),
        )
        rid = f"prov-ok-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=120)
        assert done.phase.value == "succeeded", done.reason
        assert done.provenance is not None and done.provenance.verified and done.provenance.identity == IDENTITY
        assert "verifying" in [h["phase"] for h in done.history]
        assert (tmp_path / "deploys.log").read_text().split() == [digest_of(WHEEL), "100"]


async def test_tampered_artifact_is_denied_and_nothing_deployed(client: Client, task_queue: str, tmp_path: Path) -> None:
    tampered = tmp_path / WHEEL.name
    data = bytearray(WHEEL.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            artifact=digest_of(tampered),
            provenance={"bundle": str(WHEEL) + ".sigstore", "artifact": str(tampered), "identity": IDENTITY, "issuer": ISSUER, "offline": True},
            deploy=recording_deploy(tmp_path),
        )
        rid = f"prov-bad-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=120)
        assert done.phase.value == "denied"
        assert done.provenance is not None and not done.provenance.verified
        assert "provenance did not verify" in (done.reason or "")
        assert not (tmp_path / "deploys.log").exists()


async def test_wrong_identity_is_denied(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            artifact=digest_of(WHEEL),
            provenance={"bundle": str(WHEEL) + ".sigstore", "artifact": str(WHEEL), "identity": IDENTITY.replace("trailofbits", "mallory"), "issuer": ISSUER},
            deploy=recording_deploy(tmp_path),
        )
        rid = f"prov-id-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=120)
        assert done.phase.value == "denied" and "expected identity" in (done.reason or "")
        assert not (tmp_path / "deploys.log").exists()


async def test_high_risk_agent_change_gets_two_approver_gate(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            environment="production",
            agent={"id": "release-bot", "model": "m", "prompt_sha256": "ab" * 32},
            change={"summary": "new pricing", "paths": ["src/checkout/pricing.py"]},
            artifact=None,
            build={"command": "printf pricing > out.bin", "output": "out.bin"},  # built by signoff: signed provenance
        )
        rid = f"risk-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid, base_dir=tmp_path)
        status = await wait_phase(sc, rid, "awaiting_approval")
        assert status.tier == "high"
        (gate,) = status.gates
        assert gate.required == 2 and gate.quotas == {"sre": 1}
        assert status.policy is not None and len(status.policy.policy_sha256) == 64
        two_rms = [await sc.submit_approval(_approve(rid, who)) for who in ("alice@example.com", "bob@example.com")]
        assert all(r.accepted for r in two_rms) and two_rms[-1].gate is not None and two_rms[-1].gate.state == "open"
        final = await sc.submit_approval(_approve(rid, "carol@example.com"))
        assert final.gate is not None and final.gate.state == "approved"
        await wait_phase(sc, rid, "succeeded")


async def test_docs_only_change_needs_no_gate(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        rid = f"docs-{uuid.uuid4().hex[:6]}"
        await sc.start_release(release_spec(change={"summary": "typo", "paths": ["docs/a.md", "README.md"]}), release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final)
        assert done.phase.value == "succeeded" and done.tier == "low" and done.gates == []
        assert "awaiting_approval" not in [h["phase"] for h in done.history]


async def test_policy_denial_ends_denied(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            agent={"id": "release-bot"},
            change={"summary": "speed up CI", "paths": [".github/workflows/ci.yml"]},
            deploy=recording_deploy(tmp_path),
        )
        rid = f"deny-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid)
        done = await wait_for(sc, rid, lambda s: s.phase.is_final)
        assert done.phase.value == "denied" and "co-requester" in (done.reason or "").lower()
        assert not (tmp_path / "deploys.log").exists()


async def test_release_file_cannot_loosen_policy_gate(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(
            environment="production",
            agent={"id": "release-bot"},
            change={"summary": "x", "paths": ["src/x.py"]},
            artifact=None,
            build={"command": "printf x > out.bin", "output": "out.bin"},
            gates=[{"name": "production", "required": 1, "from_groups": ["developers"]}],
        )
        rid = f"loose-{uuid.uuid4().hex[:6]}"
        await sc.start_release(spec, release_id=rid, base_dir=tmp_path)
        status = await wait_phase(sc, rid, "awaiting_approval")
        (gate,) = status.gates
        assert gate.required == 2 and gate.quotas == {"sre": 1}
        assert "developers" not in gate.from_groups
        await sc.abort(rid, identity="dana@example.com", reason="test done")


def _approve(rid: str, who: str):  # type: ignore[no-untyped-def]
    from signoff.models import ApprovalAttempt

    return ApprovalAttempt(release_id=rid, identity=who, channel="cli")  # the client signs the digest the release ships
