"""The README's first command, as CI can run it: `signoff dev --demo --exit` brings up the
embedded stack (Temporal dev server on SQLite, worker, gateway, Prometheus) and the demo ends
with release-good `succeeded` and release-bad `rolled_back`. Ports are free ones so it never
collides with a developer's running stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.prom import free_ports


def dev_demo(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`signoff dev --demo [options] --exit` in `tmp_path`, on free ports."""
    temporal, ui, gateway, prometheus, metrics = free_ports(5)
    env = {
        **os.environ,
        "SIGNOFF_STATE_DIR": str(tmp_path / ".signoff"),
        "SIGNOFF_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal}",
        "SIGNOFF_UI_PORT": str(ui),
        "SIGNOFF_GATEWAY_PORT": str(gateway),
        "SIGNOFF_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus}",
        "SIGNOFF_WORKER_METRICS": f"127.0.0.1:{metrics}",
    }
    return subprocess.run(
        [sys.executable, "-c", "from signoff.cli import main; main()", "dev", "--demo", *options, "--exit"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420,
    )


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the demo's canary needs Debian's prometheus (scripts/install installs it)")
def test_signoff_dev_demo_runs_good_and_bad_release(tmp_path: Path) -> None:
    proc = dev_demo(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "dana@example.com tries to approve: refused" in out
    assert "succeeded (as expected)" in out and "rolled_back (as expected)" in out
    assert "Traceback" not in out
    # the good digest is what serves after the bad one was rolled back
    import json

    state = json.loads((tmp_path / ".signoff" / "deploy" / "checkout.json").read_text())
    good = next(line for line in out.splitlines() if "is stable" in line).split("— ")[1].split(" ")[0]
    assert state["stable"]["digest"] == good and state["canary"] is None
    # every process it started is gone
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
