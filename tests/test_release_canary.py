"""The whole release through the canary: real example service on the local target, real
Prometheus scraping it every second, the real ReleaseWorkflow on the dev server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from signoff.config import Settings
from signoff.models import ApprovalAttempt, ReleaseFile
from tests.helpers import REPO, running_worker, wait_for, wait_phase
from tests.prom import PrometheusServer

pytestmark = pytest.mark.asyncio

ERROR_RATE = (
    'sum(rate(http_requests_total{service="{service}",digest="{digest}",code=~"5.."}[10s]))'
    ' / sum(rate(http_requests_total{service="{service}",digest="{digest}"}[10s]))'
)


@pytest.fixture
def stack(local_stack: PrometheusServer) -> PrometheusServer:
    return local_stack


def build(tmp_path: Path, flavour: str) -> str:
    out = tmp_path / f"checkout-{flavour}.pyz"
    subprocess.run([sys.executable, str(REPO / "examples" / "service" / "build.py"), "--flavour", flavour, "--out", str(out)], check=True)
    return str(out)


def checkout(path: Path) -> Path:
    """A release checkout holding the example service (release commands see only their checkout)."""
    import shutil

    shutil.copytree(REPO / "examples" / "service", path / "service", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return path


def canary_release(flavour: str, **extra: Any) -> ReleaseFile:
    doc: dict[str, Any] = {
        "service": "checkout",
        "requested_by": "dana@example.com",
        "change": {"summary": f"ship {flavour}", "paths": ["docs/notes.md"]},
        "build": {"command": f"python3 service/build.py --flavour {flavour} --out dist/c.pyz", "output": "dist/c.pyz"},
        "deploy": {"target": "local"},
        "canary": {
            "steps": [{"set_weight": 30}, {"analysis": ["error-rate"]}, {"set_weight": 60}, {"analysis": ["error-rate"]}],
            "analyses": {
                "error-rate": {
                    "query": ERROR_RATE,
                    "initial_delay": "6s",
                    "interval": "2s",
                    "count": 3,
                    # Prometheus may discover a new canary target a few seconds late (file_sd);
                    # those empty answers are inconclusive, never success — tolerate a warm-up.
                    "inconclusive_limit": 5,
                    "success": {"less_than": 0.05},
                    "failure": {"greater_than_or_equal": 0.05},
                }
            },
        },
    }
    doc.update(extra)
    return ReleaseFile.model_validate(doc)


def serving(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return r.read().decode()


async def test_good_promoted_then_bad_rolled_back(client: Client, task_queue: str, stack: PrometheusServer, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        # The first release has nothing to canary against: it becomes the stable.
        (tmp_path / "a").mkdir()
        first = await sc.start_release(canary_release("good", canary=None), release_id=f"base-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "a"))
        base = await wait_phase(sc, first.release_id, "succeeded", timeout=120)
        good_digest = base.artifact_digest
        assert good_digest

        bad_id = f"bad-{uuid.uuid4().hex[:6]}"
        (tmp_path / "b").mkdir()
        await sc.start_release(canary_release("bad", remediation_runbook="restart-service"), release_id=bad_id, base_dir=checkout(tmp_path / "b"))
        done = await wait_for(sc, bad_id, lambda s: s.phase.is_final, timeout=180)
        assert done.phase.value == "rolled_back", done.reason
        assert done.previous_digest == good_digest
        assert done.canary is not None
        measured = [m for m in done.canary.analyses if m.verdict != "inconclusive"]
        assert measured and measured[0].verdict == "failed" and measured[0].step == 2  # the first analysis
        assert measured[0].value is not None and measured[0].value >= 0.05  # meets the failure condition (the bad build serves ~30% errors; early samples are noisy)
        assert "error-rate" in (done.reason or "")
        # the previous digest is serving again, and nothing else is
        from activities.deploy import target_for

        placement = target_for(Settings.from_env(), canary_release("good").deploy).current("checkout")
        assert placement.stable == good_digest and placement.canary is None
        assert done.remediation == f"{bad_id}-remediation"


async def test_good_goes_through_every_step(client: Client, task_queue: str, stack: PrometheusServer, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        base = await sc.start_release(canary_release("bad", canary=None), release_id=f"base-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "a"))
        await wait_phase(sc, base.release_id, "succeeded", timeout=120)
        good_id = f"good-{uuid.uuid4().hex[:6]}"
        await sc.start_release(canary_release("good"), release_id=good_id, base_dir=checkout(tmp_path / "b"))
        done = await wait_for(sc, good_id, lambda s: s.phase.is_final, timeout=180)
        assert done.phase.value == "succeeded", done.reason
        assert done.canary is not None
        verdicts = [(m.step, m.verdict) for m in done.canary.analyses]
        assert {v for _, v in verdicts} <= {"successful", "inconclusive"}, verdicts
        assert (2, "successful") in verdicts and (4, "successful") in verdicts
        measured = [m for m in done.canary.analyses if m.verdict == "successful"]
        assert all(m.value is not None and m.value < 0.05 for m in measured)
        phases = [h["phase"] for h in done.history]
        assert phases[:1] == ["building"] and "canary" in phases and phases[-1] == "succeeded"
        from activities.deploy import target_for

        placement = target_for(Settings.from_env(), canary_release("good").deploy).current("checkout")
        assert placement.stable == done.artifact_digest and placement.canary is None


STABLE = "sha256:" + "b" * 64


def paused_canary_file(deploys: Path) -> ReleaseFile:
    """A prebuilt artifact whose canary pauses at 20 % and at 50 % for a person; the command
    target appends each deploy ("digest weight") and rollback to `deploys`, and reports STABLE."""
    return ReleaseFile.model_validate({
        "service": "checkout", "requested_by": "dana@example.com", "change": {"summary": "x", "paths": ["docs/x.md"]},
        "artifact": "sha256:" + "c" * 64, "environment": "staging",
        "deploy": {"target": "command", "settings": {
            "deploy": f"echo {{digest}} {{weight}} >> {deploys}",
            "current": "echo '{\"stable\": \"%s\"}'" % STABLE,
            "rollback": f"echo rollback {{digest}} >> {deploys}",
        }},
        "canary": {"steps": [{"set_weight": 20}, {"pause": {}}, {"set_weight": 50}, {"pause": {}}], "analyses": {}},
    })


async def test_indefinite_pause_promoted_and_manual_abort(client: Client, task_queue: str, tmp_path: Path) -> None:
    """pause: {} waits for a person (never the requester); abort mid-canary rolls back."""
    async with running_worker(client, task_queue) as sc:
        rid = f"pause-{uuid.uuid4().hex[:6]}"
        spec_file = paused_canary_file(tmp_path / "deploys")
        await sc.start_release(spec_file, release_id=rid)
        await wait_for(sc, rid, lambda s: bool(s.canary and s.canary.paused))
        from signoff.errors import Refused

        with pytest.raises(Refused, match="requester"):
            await sc.promote(rid, identity="dana@example.com")
        await sc.promote(rid, identity="alice@example.com")
        status = await wait_for(sc, rid, lambda s: bool(s.canary and s.canary.paused and s.canary.weight == 50))
        assert status.phase.value == "canary"
        await sc.abort(rid, identity="carol@example.com", reason="customer reports")
        done = await wait_for(sc, rid, lambda s: s.phase.is_final)
        assert done.phase.value == "aborted" and "customer reports" in (done.reason or "")
        lines = (tmp_path / "deploys").read_text().split()
        assert lines.count("20") == 1 and lines.count("50") == 1  # each weight deployed once
        assert lines[-2:] == ["rollback", "sha256:" + "b" * 64]  # the abort rolled back to the stable
        assert done.previous_digest == "sha256:" + "b" * 64
