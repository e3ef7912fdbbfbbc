"""A new canary on the local target gets traffic only after Prometheus has scraped it.

Real processes (the example service's good and bad builds), the real traffic generator and a
real Prometheus reading the target's file_sd files. Without the wait, Prometheus discovered the
canary up to ~5 s after it started serving (file_sd changes apply at most every 5 s), and that
delay sat on the path from a breach to its rollback (bench/bench_rollback.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from signoff.config import Settings
from signoff.models import DeployRequest
from tests.prom import free_port, start_prometheus
from tests.test_deploy import LOCAL, DeployActivities, artifacts, call, digests, settings, total, wait_until  # noqa: F401 (fixtures)


def actions(settings: Settings) -> list[dict[str, object]]:
    path = Path(settings.state_dir) / "deploy" / "checkout.actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def requests_seen_by_first_scrape(prom: object, digest: str) -> float:
    """The canary's request count in the first sample Prometheus took of it."""
    [series] = prom.query(f'up{{digest="{digest}"}}[5m]')  # type: ignore[attr-defined]
    first_scrape = float(series["values"][0][0])
    counts = prom.query(f'sum(http_requests_total{{digest="{digest}"}} @ {first_scrape})')  # type: ignore[attr-defined]
    return float(counts[0]["value"][1]) if counts else 0.0


async def test_a_new_canary_is_scraped_before_it_gets_traffic(settings: Settings, digests: dict[str, str], tmp_path: Path) -> None:
    good, bad = digests["good"], digests["bad"]
    with start_prometheus(tmp_path, file_sd_dir=Path(settings.state_dir) / "prometheus" / "targets") as prom:
        acts = DeployActivities(dataclasses.replace(settings, prometheus_url=prom.url))
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=good, weight=100, target=LOCAL))
        state = await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=bad, weight=50, target=LOCAL))

        # When the deploy returns, Prometheus already scrapes the canary...
        up = [t for t in prom.targets() if t["labels"].get("digest") == bad]
        assert [t["health"] for t in up] == ["up"]
        # ...and its first sample was taken before any request reached it: weight 0 until then.
        assert requests_seen_by_first_scrape(prom, bad) == 0.0
        log = [a["action"] for a in actions(settings)]
        assert log.index("scraped") < len(log) - 1 and log[-1] == "deploy" and actions(settings)[-1]["weight"] == 50
        # Then it serves its share.
        port = int(state.detail["canary"]["port"])
        wait_until(lambda: total(port) > 0, 20, "the canary to get traffic after its first scrape")


@pytest.mark.parametrize("prometheus", ["reads other targets", "unreachable"])
async def test_a_prometheus_that_cannot_scrape_the_canary_is_not_waited_for(
    prometheus: str, settings: Settings, digests: dict[str, str], tmp_path: Path
) -> None:
    """Only a Prometheus that reads this state directory's targets can ever report the canary;
    waiting for any other (another stack's, or none) would only delay every deploy."""
    good, bad = digests["good"], digests["bad"]
    other = tmp_path / "other-targets"
    other.mkdir()
    with start_prometheus(tmp_path, file_sd_dir=other) as prom:
        url = prom.url if prometheus == "reads other targets" else f"http://127.0.0.1:{free_port()}"
        acts = DeployActivities(dataclasses.replace(settings, prometheus_url=url))
        await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=good, weight=100, target=LOCAL))
        started = time.monotonic()
        state = await call(acts.deploy, DeployRequest(release_id="r", service="checkout", digest=bad, weight=50, target=LOCAL))
        assert time.monotonic() - started < 10  # the 30 s scrape wait did not run
        assert not [a for a in actions(settings) if str(a["action"]).startswith("scrape")]
        wait_until(lambda: total(int(state.detail["canary"]["port"])) > 0, 20, "the canary to get traffic at once")
