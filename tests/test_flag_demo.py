"""`signoff dev --demo --flags --exit`: the demo's good and bad releases delivered behind the
feature flag on the embedded stack (real Temporal, Prometheus, example service reading flagd)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_quickstart import dev_demo


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the demo's canary needs Debian's prometheus (scripts/install installs it)")
def test_flag_demo_turns_the_bad_release_off(tmp_path: Path) -> None:
    proc = dev_demo(tmp_path, "--flags")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded (as expected)" in out and "rolled_back (as expected)" in out and "Traceback" not in out
    assert re.search(r"flag checkout-new-path at 0 % \d+\.\d{3} s after the failing verdict", out), out[-3000:]
    flag = json.loads((tmp_path / ".signoff" / "flags" / "checkout.flagd.json").read_text())["flags"]["checkout-new-path"]
    good = next(line for line in out.splitlines() if "is stable" in line).split("— ")[1].split(" ")[0]
    assert flag["defaultVariant"] == "off" and "targeting" not in flag and flag["metadata"]["signoffStable"] == good
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
