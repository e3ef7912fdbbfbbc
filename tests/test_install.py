"""`scripts/install` and `scripts/quickstart` on a fresh copy of the repository, with a python3
that refuses system-wide pip installs (PEP 668, as on stock Debian 12 and Ubuntu 24.04).

The refusing interpreter is the distribution's own `/usr/bin/python3` with its
`EXTERNALLY-MANAGED` marker; the test first shows that it really refuses what the old install
did (`pip install -e .`), then that the quick start installs into `.venv`, runs the demo to its
expected ends, never prints pip's root warning, and leaves the system interpreter untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.prom import free_ports, prometheus_available
from tests.test_readme import section_block

SYSTEM_PYTHON = Path("/usr/bin/python3")
ROOT_WARNING = "Running pip as the 'root' user"


def refuses_system_installs(python: Path) -> bool:
    """True when `python` is a distribution interpreter marked EXTERNALLY-MANAGED (PEP 668)."""
    if not python.exists():
        return False
    stdlib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"], capture_output=True, text=True)
    return stdlib.returncode == 0 and (Path(stdlib.stdout.strip()) / "EXTERNALLY-MANAGED").exists()


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, none of its state)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without this test run's Python settings (PYTHONPATH would
    import the checkout under test instead of the copy's install)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.skipif(not refuses_system_installs(SYSTEM_PYTHON), reason="needs a distribution python3 with PEP 668's EXTERNALLY-MANAGED marker (Debian 12, Ubuntu 24.04)")
@pytest.mark.skipif(not prometheus_available(), reason="the demo's canary needs Debian's prometheus (scripts/install installs it)")
def test_quickstart_installs_into_a_venv_where_system_pip_installs_are_refused(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "clone")
    refused = subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "pip", "install", "-q", "-e", ".[test]"], cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr[-2000:]

    temporal, ui, gateway, prometheus, metrics = free_ports(5)
    env = clean_env(
        SIGNOFF_PYTHON=str(SYSTEM_PYTHON),
        SIGNOFF_STATE_DIR=str(tmp_path / "state"),
        SIGNOFF_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal}",
        SIGNOFF_UI_PORT=str(ui),
        SIGNOFF_GATEWAY_PORT=str(gateway),
        SIGNOFF_PROMETHEUS_URL=f"http://127.0.0.1:{prometheus}",
        SIGNOFF_WORKER_METRICS=f"127.0.0.1:{metrics}",
    )
    run = subprocess.run(["bash", "scripts/quickstart"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert ROOT_WARNING not in out
    assert "succeeded (as expected)" in out and "rolled_back (as expected)" in out
    assert "Traceback" not in out

    venv_python = repo / ".venv" / "bin" / "python"
    base = subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True)
    assert base.stdout.strip() == subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True).stdout.strip()
    assert (repo / ".venv" / "bin" / "signoff").exists() and (repo / ".venv" / "bin" / "temporal").exists()
    # The README's line that puts the environment on PATH finds this `signoff`.
    path_line = section_block("put the environment on your PATH", "bash")
    found = subprocess.run(["bash", "-c", f"{path_line}\ncommand -v signoff && signoff --version"], cwd=repo, env=clean_env(), capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.splitlines() == [str(repo / ".venv" / "bin" / "signoff"), "signoff, version 0.1.0"], found.stderr
    untouched = subprocess.run([str(SYSTEM_PYTHON), "-c", "import signoff"], cwd="/", env=clean_env(), capture_output=True, text=True)
    assert untouched.returncode != 0 and "No module named 'signoff'" in untouched.stderr  # nothing went into the system

    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"


def test_install_with_a_missing_interpreter_says_so_in_one_sentence(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "clone")
    missing = tmp_path / "no-such-python3"
    tools = {"prometheus", "git", "ssh-keygen", "bwrap", "setpriv"}
    if not all(shutil.which(t) for t in tools):
        pytest.skip("the Debian packages are not all installed, so the script would first call apt-get")
    run = subprocess.run(["bash", "scripts/install"], cwd=repo, env=clean_env(SIGNOFF_PYTHON=str(missing)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip() == f"error: signoff needs Python 3.11 or newer, and {missing} is missing; set SIGNOFF_PYTHON to a newer python3."
    assert not (repo / ".venv").exists()

