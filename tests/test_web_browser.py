"""The read-only view in a real browser: headless Chromium (Debian's `chromium`, driven by
Selenium through Debian's `chromedriver`) reads the pages of a real release that was gated,
canaried against real Prometheus, and rolled back — the demo's bad build.

The screenshots are test artifacts (under the test's tmp dir); with SIGNOFF_SCREENSHOT_DIR set
they are also copied there (`docs/` for the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import uvicorn
from temporalio.client import Client

from approvals.gateway import create_app
from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.models import ApprovalAttempt, ReleaseStatus
from tests.helpers import attested, running_worker, wait_for, wait_phase, with_plan
from tests.prom import PrometheusServer
from tests.test_release_canary import canary_release, checkout, stack  # noqa: F401 - stack: Prometheus scraping the local target

pytestmark = pytest.mark.asyncio

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "view-" + uuid.uuid4().hex
KEEP_SCREENSHOTS = os.environ.get("SIGNOFF_SCREENSHOT_DIR")  # read before the autouse fixture clears SIGNOFF_*
GATE = {"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["slack", "jira", "cli"]}


@contextlib.asynccontextmanager
async def serving_gateway(sc: SignoffClient) -> AsyncIterator[str]:
    """The gateway on a free port, in this event loop (the worker's), until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(Settings.from_env(), client=sc), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def keep(shot: Path) -> None:
    """Copy a screenshot to SIGNOFF_SCREENSHOT_DIR when set (how docs/ gets the README's)."""
    if KEEP_SCREENSHOTS:
        Path(KEEP_SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(KEEP_SCREENSHOTS) / shot.name)


async def gated_canaried_rolled_back(sc: SignoffClient, tmp_path: Path) -> ReleaseStatus:
    """The good build becomes stable; the bad one passes its gate (alice by key, bob through
    Slack, dana refused as the requester), then fails its canary analysis and is rolled back."""
    (tmp_path / "a").mkdir()
    first = await sc.start_release(canary_release("good", canary=None), release_id=f"stable-{uuid.uuid4().hex[:6]}", base_dir=checkout(tmp_path / "a"))
    await wait_phase(sc, first.release_id, "succeeded", timeout=120)
    rid = f"bad-{uuid.uuid4().hex[:6]}"
    (tmp_path / "b").mkdir()
    await sc.start_release(canary_release("bad", gates=[GATE], remediation_runbook="restart-service"), release_id=rid, base_dir=checkout(tmp_path / "b"))
    waiting = await wait_phase(sc, rid, "awaiting_approval", timeout=120)
    refused = await sc.submit_approval(ApprovalAttempt(release_id=rid, gate="production", identity="dana@example.com", channel="cli"))
    assert not refused.accepted
    assert (await sc.submit_approval(ApprovalAttempt(release_id=rid, gate="production", identity="alice@example.com", channel="cli"))).accepted
    click = ApprovalAttempt(release_id=rid, gate="production", identity="bob@example.com", channel="slack", digest=waiting.artifact_digest, external_ref="1700000000.000100")
    slack = attested(await with_plan(sc, click))  # a Slack button carries the plan hash it showed
    assert (await sc.submit_approval(slack)).accepted
    done = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=240)
    assert done.phase.value == "rolled_back", done.reason
    return done


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver; run scripts/install")
async def test_release_pages_in_chromium(
    client: Client, task_queue: str, stack: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    async with running_worker(client, task_queue) as sc:
        done = await gated_canaried_rolled_back(sc, tmp_path)
        assert done.canary is not None
        failed = [m for m in done.canary.analyses if m.verdict == "failed"]
        assert failed and failed[0].value is not None
        settings = Settings.from_env()
        await wait_for(sc, done.release_id, lambda _: '"release_outcome"' in settings.audit_log.read_text() and done.release_id in settings.audit_log.read_text())
        async with serving_gateway(sc) as base:
            seen = await asyncio.to_thread(browse, base, done, tmp_path / "screenshots")
    assert seen["failed_points"] == len(failed)


def browse(base: str, done: ReleaseStatus, shots: Path) -> dict[str, Any]:
    """What a person does: log in, filter the list, open the release, read it top to bottom."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        driver.get(f"{base}/view/releases/{done.release_id}")
        assert "Log in" in driver.title and done.release_id not in driver.page_source  # nothing before logging in
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        # The click only starts the login POST and its redirect to the full list; a page asked
        # for before that lands can be replaced by it (CI once saw unfiltered rows that way).
        WebDriverWait(driver, 60).until(lambda d: d.current_url.endswith("/view/") and d.find_elements(By.CSS_SELECTOR, "form.filters"))

        # Temporal's visibility (what the phase filter queries) is eventually consistent: a
        # release that just ended may take a moment to be listed under its final phase
        for _ in range(60):
            driver.get(f"{base}/view/?phase=rolled_back&service=checkout")
            assert "phase=rolled_back" in driver.current_url, driver.current_url
            rows = driver.find_elements(By.CSS_SELECTOR, "table.releases tbody tr")
            if any(done.release_id in r.text for r in rows):
                break
            time.sleep(0.5)
        assert any(done.release_id in r.text for r in rows), [r.text for r in rows]
        # each row's class names its phase; textContent does not depend on what is scrolled into view
        others = [(r.get_attribute("class"), (r.get_attribute("textContent") or "")[:120]) for r in rows if r.get_attribute("class") != "phase-rolled_back"]
        assert not others, others
        driver.save_screenshot(str(shots / "view-releases.png"))
        driver.find_element(By.LINK_TEXT, done.release_id).click()

        timeline = [li.find_element(By.CLASS_NAME, "phase-name").text for li in driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
        assert timeline == [h["phase"] for h in done.history]
        assert timeline[-1] == "rolled_back" and "awaiting_approval" in timeline and "canary" in timeline

        gate = driver.find_element(By.ID, "gate-production")
        approved = {row.find_element(By.CLASS_NAME, "who").text: row.text for row in gate.find_elements(By.CSS_SELECTOR, "tr.approved")}
        assert set(approved) == {"alice@example.com", "bob@example.com"}
        assert "cli" in approved["alice@example.com"] and "key:" in approved["alice@example.com"] and "verified" in approved["alice@example.com"]
        assert "slack" in approved["bob@example.com"] and "gateway:" in approved["bob@example.com"]
        refusals = [row.text for row in gate.find_elements(By.CSS_SELECTOR, "tr.refused")]
        assert any("dana@example.com" in text for text in refusals), refusals

        chart = driver.find_element(By.CSS_SELECTOR, "svg.chart[data-metric='error-rate']")
        threshold = chart.find_element(By.CSS_SELECTOR, "line.threshold[data-kind='failure']")
        assert float(threshold.get_attribute("data-threshold")) == 0.05
        line_y = threshold.rect["y"] + threshold.rect["height"] / 2
        points = chart.find_elements(By.CSS_SELECTOR, ".point")
        assert len(points) == len(done.canary.analyses) if done.canary else False
        failed_points = chart.find_elements(By.CSS_SELECTOR, ".point.failed")
        for point in failed_points:
            assert float(point.get_attribute("data-value")) >= 0.05
            centre_y = point.rect["y"] + point.rect["height"] / 2
            assert centre_y < line_y, (centre_y, line_y)  # drawn above its threshold, as a person sees it
        assert "rolled_back" in driver.find_element(By.ID, "rollback").text
        assert done.previous_digest and done.previous_digest in driver.find_element(By.ID, "rollback").text
        assert "records verify" in driver.find_element(By.ID, "verify-summary").text
        href = driver.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
        assert href.endswith(f"/view/releases/{done.release_id}/export")
        assert not driver.find_elements(By.CSS_SELECTOR, "main form, main button")  # read-only: nothing to click that acts

        driver.find_element(By.ID, "canary").screenshot(str(shots / "view-canary.png"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, int(height) + 120)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / "view-release.png"))
        driver.find_element(By.LINK_TEXT, str(done.remediation)).click()  # the remediation runbook run, shown the same way
        assert driver.find_elements(By.TAG_NAME, "h1"), driver.page_source[:2000]
        assert driver.find_element(By.TAG_NAME, "h1").text.startswith(str(done.remediation))
        assert "runbook restart-service" in driver.find_element(By.CLASS_NAME, "summary").text
        assert driver.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
        driver.get(f"{base}/view/runbooks")
        assert str(done.remediation) in driver.find_element(By.TAG_NAME, "main").text, driver.page_source[-1500:]
        for shot in shots.iterdir():
            assert shot.stat().st_size > 10_000, shot
            keep(shot)
        return {"failed_points": len(failed_points)}
    finally:
        driver.quit()
