"""`signoff dev --demo --flags --exit`: the demo's good and bad releases delivered behind the
feature flag on the embedded stack (real Temporal, Prometheus, example service reading flagd)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_quickstart import free_port


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the demo's canary needs Debian's prometheus (scripts/install installs it)")
def test_flag_demo_turns_the_bad_release_off(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SIGNOFF_STATE_DIR": str(tmp_path / ".signoff"),
        "SIGNOFF_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "SIGNOFF_UI_PORT": str(free_port()),
        "SIGNOFF_GATEWAY_PORT": str(free_port()),
        "SIGNOFF_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "SIGNOFF_WORKER_METRICS": f"127.0.0.1:{free_port()}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from signoff.cli import main; main()", "dev", "--demo", "--flags", "--exit"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded (as expected)" in out and "rolled_back (as expected)" in out and "Traceback" not in out
    assert re.search(r"flag checkout-new-path at 0 % \d+\.\d{3} s after the failing verdict", out), out[-3000:]
    flag = json.loads((tmp_path / ".signoff" / "flags" / "checkout.flagd.json").read_text())["flags"]["checkout-new-path"]
    good = next(line for line in out.splitlines() if "is stable" in line).split("— ")[1].split(" ")[0]
    assert flag["defaultVariant"] == "off" and "targeting" not in flag and flag["metadata"]["signoffStable"] == good
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
