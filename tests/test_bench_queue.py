"""bench/bench_capacity.py's account of the approval line: the rate approvals went through and
the mean round trip Little's law gives its closed loop of approvers, which the README quotes to
say why the round trip depends on how many approvers the benchmark runs."""

from __future__ import annotations

from bench.bench_capacity import approval_queue, queue_line


def test_littles_law_mean_is_approvers_over_rate() -> None:
    q = approval_queue(6000, 400.0, 8)  # 15 approvals/s
    assert q == {"approvers": 8, "approvals_per_second": 15.0, "little_law_mean_ms": 533.3}
    # Four times the approvers at the same rate: four times the wait in line.
    assert approval_queue(6000, 400.0, 32)["little_law_mean_ms"] == 2133.3
    assert "8 approvers at 15.0 approvals/s" in queue_line(q) and "533 ms" in queue_line(q)


def test_no_approvals_is_said_not_divided_by_zero() -> None:
    for sent, seconds in ((0, 10.0), (10, 0.0)):
        q = approval_queue(sent, seconds, 8)
        assert q["approvals_per_second"] == 0.0 and q["little_law_mean_ms"] is None
        assert queue_line(q) == "no approvals went through"
    assert queue_line(None) == "no approvals went through"
