"""bench/bench_cache_miss.py's arithmetic: the CPU one workflow-cache miss costs and the memory one
cached waiting release holds, from a run that misses and one that does not."""

from __future__ import annotations

import pytest

from bench.bench_cache_miss import holding_all, medians, miss_cost, misses_per_release


def run(worker: float, server: float, rss: float) -> dict:
    return {"drain_cpu": {"worker": {"cpu_ms_per_release": worker}, "server": {"cpu_ms_per_release": server}}, "worker_rss_all_waiting_mib": rss}


def test_a_miss_costs_the_difference_over_the_misses() -> None:
    # 800 releases: a cache of 50 misses 2 × 750/800 = 1.875 approvals per release, 1,000 none.
    assert misses_per_release(800, 50) == 1.875 and misses_per_release(800, 1000) == 0.0
    cost = miss_cost(run(73.4, 77.3, 250.9), run(50.5, 68.3, 376.0), releases=800, small_cache=50, big_cache=1000)
    assert cost["misses_per_release"] == 1.875
    assert cost["worker_ms_per_miss"] == round(22.9 / 1.875, 2) == 12.21
    assert cost["server_ms_per_miss"] == round(9.0 / 1.875, 2)
    # 750 more releases cached for 125.1 MiB more RSS
    assert cost["kib_per_cached_release"] == round(125.1 * 1024 / 750, 1)


def test_holding_all_says_whether_it_fits_and_what_would() -> None:
    h = holding_all({"kib_per_cached_release": 170.8}, 214.0, 10_000)
    assert h["rss_mib"] == round(214.0 + 10_000 * 170.8 / 1024) and not h["fits_1_gib"]
    assert h["kib_per_release_to_fit_1_gib"] == round(810 * 1024 / 10_000, 1)
    assert holding_all({"kib_per_cached_release": 40.0}, 214.0, 10_000)["fits_1_gib"]
    assert holding_all({"kib_per_cached_release": None}, 214.0, 10_000) == {}


def test_caches_that_do_not_differ_are_refused() -> None:
    with pytest.raises(ValueError, match="do not differ"):
        miss_cost(run(1, 1, 1), run(1, 1, 1), releases=800, small_cache=900, big_cache=1000)


def test_a_run_without_figures_gives_none_not_a_number() -> None:
    cost = miss_cost({}, run(50.5, 68.3, 376.0), releases=800, small_cache=50, big_cache=1000)
    assert cost["worker_ms_per_miss"] is None and cost["kib_per_cached_release"] is None


def test_rounds_are_summed_up_by_their_medians() -> None:
    rounds = [{"worker_ms_per_miss": 8.9, "server_ms_per_miss": -0.5}, {"worker_ms_per_miss": 12.2, "server_ms_per_miss": 4.7}, {"worker_ms_per_miss": 10.0, "server_ms_per_miss": None}]
    assert medians(rounds) == {"worker_ms_per_miss": 10.0, "server_ms_per_miss": 2.1}
    assert medians([{"worker_ms_per_miss": None}]) == {"worker_ms_per_miss": None}
    assert medians([]) == {}
