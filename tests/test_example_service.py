"""The checkout example service: reproducible artifacts, and the good/bad behaviour the canary
demos rely on, measured over real HTTP against the built zipapps."""

from __future__ import annotations

import hashlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SERVICE = REPO / "examples" / "service"


def build(flavour: str, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SERVICE / "build.py"), "--flavour", flavour, "--out", str(out)],
        check=True, capture_output=True, text=True,
    )
    return done.stdout.split()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read(), time.perf_counter() - started
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - started


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist")


def run_artifact(artifact: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(artifact), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                if get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def good_url(dist: Path) -> Iterator[str]:
    build("good", dist / "good.pyz")
    yield from run_artifact(dist / "good.pyz")


@pytest.fixture(scope="module")
def bad_url(dist: Path) -> Iterator[str]:
    build("bad", dist / "bad.pyz")
    yield from run_artifact(dist / "bad.pyz")


def test_builds_are_reproducible(tmp_path: Path) -> None:
    first = build("good", tmp_path / "a" / "checkout.pyz")
    time.sleep(1.1)  # a later build (different mtimes) must not change a byte
    second = build("good", tmp_path / "b" / "checkout.pyz")
    bad = build("bad", tmp_path / "c" / "checkout.pyz")
    assert first == second
    assert first == "sha256:" + hashlib.sha256((tmp_path / "a" / "checkout.pyz").read_bytes()).hexdigest()
    assert bad != first


def test_unknown_flavour_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SERVICE / "build.py"), "--flavour", "ugly", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr and not (tmp_path / "x").exists()


def fire(url: str, n: int) -> list[tuple[int, bytes, float]]:
    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(lambda _: get(url), range(n)))


def metrics(base: str) -> dict[str, float]:
    text = get(f"{base}/metrics")[1].decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def test_bad_artifact_answers_at_least_20_percent_5xx(bad_url: str) -> None:
    results = fire(f"{bad_url}/", 60)
    errors = sum(1 for code, _, _ in results if code >= 500)
    assert errors / len(results) >= 0.2, errors
    m = metrics(bad_url)
    assert m["http_requests_total{code=500}"] == errors
    assert m["http_requests_total{code=200}"] == len(results) - errors
    assert m["http_request_duration_seconds_count"] == len(results)
    # slower too: mean latency well above the good build's ~10 ms
    assert m["http_request_duration_seconds_sum"] / m["http_request_duration_seconds_count"] > 0.05


def test_good_artifact_is_fast_and_error_free(good_url: str) -> None:
    results = fire(f"{good_url}/", 60)
    assert all(code == 200 for code, _, _ in results)
    m = metrics(good_url)
    assert m["http_requests_total{code=500}"] == 0  # the error series exists from the start
    assert m["http_requests_total{code=200}"] == 60
    assert m["http_request_duration_seconds_sum"] / 60 < 0.05
    # the histogram has buckets Prometheus can compute quantiles from
    assert m["http_request_duration_seconds_bucket{le=+Inf}"] == 60
    flavour = [k for k in m if k.startswith("checkout_build_info")]
    assert len(flavour) == 1 and "flavour=good" in flavour[0] and "digest=sha256:" in flavour[0]
    assert get(f"{good_url}/nowhere")[0] == 404
    # /metrics and /healthz are not user traffic and are not counted
    assert metrics(good_url)["http_requests_total{code=200}"] == 60


def test_loadgen_splits_exactly_by_weight() -> None:
    spec = importlib.util.spec_from_file_location("loadgen", SERVICE / "loadgen.py")
    assert spec and spec.loader
    loadgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loadgen)
    for weight in (0, 10, 20, 50, 100):
        splitter = loadgen.Splitter()
        assert sum(splitter.pick_canary(weight) for _ in range(1000)) == weight * 10
