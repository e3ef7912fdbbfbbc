"""The worker's opt-in account of the garbage collector's pauses (workers/gc_stats.py), which
bench/bench_capacity.py reads to say how much of a drain's CPU went to collecting."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from workers import gc_stats

REPO = Path(__file__).resolve().parents[1]


def test_unset_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gc_stats.ENV, raising=False)
    before = list(gc.callbacks)
    assert gc_stats.install_from_env() is None
    assert gc.callbacks == before


def test_a_worker_process_writes_what_its_collections_cost(tmp_path: Path) -> None:
    """A process with the variable set counts each generation's collections and their time, and
    leaves the figures in the file when it exits; the reader takes them back."""
    out = tmp_path / "gc.json"
    code = (
        "from workers.gc_stats import install_from_env\n"
        "install_from_env()\n"
        "import gc\n"
        "class Node:\n    pass\n"
        "keep = []\n"
        "for i in range(200000):\n"
        "    n = Node(); n.me = n; keep.append(n) if i % 3 == 0 else None\n"
        "gc.collect()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO), gc_stats.ENV: str(out)}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    figures = gc_stats.read(out)
    assert figures is not None
    assert figures["collections"][0] > 10, "young collections were not counted"
    assert figures["collections"][2] >= 1, "the explicit full collection was not counted"
    assert figures["seconds"][2] > 0 and figures["longest_seconds"][2] > 0
    assert all(s >= 0 for s in figures["seconds"])


def test_reading_a_missing_or_torn_file_is_none(tmp_path: Path) -> None:
    assert gc_stats.read(tmp_path / "none.json") is None
    (tmp_path / "torn.json").write_text('{"collections": [1,')
    assert gc_stats.read(tmp_path / "torn.json") is None


def test_a_file_that_cannot_be_written_costs_the_process_nothing(tmp_path: Path) -> None:
    """A path in a directory that does not exist: the process runs and exits cleanly, with no
    traceback at exit."""
    out = tmp_path / "missing" / "gc.json"
    code = "from workers.gc_stats import install_from_env\nassert install_from_env() is not None\nimport gc\ngc.collect()\nprint('ran')\n"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO), gc_stats.ENV: str(out)}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ran", run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()
