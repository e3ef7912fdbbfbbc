"""Deploy windows: the pure rules (RRULE and cron, time zones, deny wins, allow windows) and, on
the time-skipping server, a release approved on Friday 17:00 Europe/Berlin that waits in
`waiting_for_window` until Monday 08:00, and the signed override that promotes it at once."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
import yaml
from temporalio.service import RPCError

from signoff.audit import show, store_from_settings
from signoff.config import Settings
from signoff.errors import ConfigError, Refused
from signoff.models import ApprovalAttempt, Freeze
from signoff.windows import WindowSpec, freezes_id, read_windows_file, window_state
from tests.helpers import DIGEST_A, gated_spec, running_worker, wait_phase

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND = {"name": "weekend", "kind": "deny", "rrule": "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0;BYSECOND=0", "tzid": "Europe/Berlin", "duration": "64h"}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(timezone.utc)


def state(windows: list[dict], at: datetime, freezes: list[Freeze] | None = None, service: str = "checkout"):  # type: ignore[no-untyped-def]
    return window_state([WindowSpec.model_validate(w) for w in windows], freezes or [], service=service, environment="production", at=at)


# ------------------------------------------------------------------ the rules


def test_deny_window_friday_to_monday_berlin() -> None:
    closed = state([WEEKEND], berlin(2026, 12, 4, 17))
    assert not closed.open and closed.reasons[0].startswith("deny window weekend")
    assert closed.next_open == berlin(2026, 12, 7, 8)
    assert state([WEEKEND], berlin(2026, 12, 4, 15, 59)).open
    assert not state([WEEKEND], berlin(2026, 12, 7, 7, 59)).open
    assert state([WEEKEND], berlin(2026, 12, 7, 8)).open


def test_cron_window_is_the_same_window() -> None:
    cron = {**WEEKEND, "rrule": None, "cron": "0 16 * * 5"}
    for at in (berlin(2026, 12, 4, 17), berlin(2026, 12, 6, 12), berlin(2026, 12, 7, 8), berlin(2026, 12, 3, 9)):
        assert state([cron], at).open == state([WEEKEND], at).open


def test_time_zone_is_explicit_and_daylight_saving_is_local_time() -> None:
    """16:00 in Berlin is 15:00 UTC in winter and 14:00 UTC in summer; the window follows the wall clock."""
    assert not state([WEEKEND], datetime(2026, 7, 3, 14, 30, tzinfo=timezone.utc)).open  # 16:30 CEST
    assert state([WEEKEND], datetime(2026, 12, 4, 14, 30, tzinfo=timezone.utc)).open  # 15:30 CET
    tokyo = {**WEEKEND, "tzid": "Asia/Tokyo"}
    assert not state([tokyo], berlin(2026, 12, 4, 9)).open  # 17:00 in Tokyo


def test_allow_windows_close_everything_outside_them_and_deny_wins() -> None:
    business = {"name": "business", "kind": "allow", "cron": "0 8 * * 1-5", "tzid": "Europe/Berlin", "duration": "10h"}
    assert state([business], berlin(2026, 12, 2, 10)).open
    night = state([business], berlin(2026, 12, 2, 20))
    assert not night.open and "outside the allow windows" in night.reasons[0]
    assert night.next_open == berlin(2026, 12, 3, 8)
    # Friday 17:00 is outside the allow window anyway; Friday 16:30 is inside it but denied.
    both = state([business, WEEKEND], berlin(2026, 12, 4, 16, 30))
    assert not both.open and any("deny window weekend" in r for r in both.reasons)
    assert both.next_open == berlin(2026, 12, 7, 8)


def test_windows_apply_per_service_and_environment() -> None:
    only_payments = {**WEEKEND, "services": ["payments"]}
    assert state([only_payments], berlin(2026, 12, 4, 17)).open
    assert not state([only_payments], berlin(2026, 12, 4, 17), service="payments").open
    staging_only = {**WEEKEND, "environments": ["staging"]}
    assert state([staging_only], berlin(2026, 12, 4, 17)).open


def test_a_window_that_never_opens_has_no_next_opening() -> None:
    """Overlapping daily deny windows never open: the search gives up at its horizon, and the
    release waits for its deadline or a person (next_open None)."""
    always = {**WEEKEND, "rrule": "FREQ=DAILY;BYHOUR=0;BYMINUTE=0;BYSECOND=0", "duration": "25h"}
    closed = state([always], berlin(2026, 12, 8, 12))
    assert not closed.open and closed.next_open is None


def test_freeze_closes_until_it_ends_or_expires() -> None:
    now = berlin(2026, 12, 2, 10)
    open_ended = Freeze(id="f1", by="carol@example.com", reason="incident", started_at=now - timedelta(hours=1))
    closed = state([], now, [open_ended])
    assert not closed.open and closed.next_open is None and closed.freezes == ["f1"]
    timed = open_ended.model_copy(update={"until": now + timedelta(hours=2)})
    assert state([], now, [timed]).next_open == now + timedelta(hours=2)
    assert state([], now, [open_ended.model_copy(update={"service": "payments"})]).open
    assert state([], now, [open_ended.model_copy(update={"ended_at": now})]).open


@pytest.mark.parametrize(
    "window, words",
    [
        ({**WEEKEND, "tzid": "Europe/Nowhere"}, "unknown time zone"),
        ({**WEEKEND, "rrule": "FREQ=SOMETIMES"}, "not an RFC 5545 RRULE"),
        ({**WEEKEND, "rrule": None, "cron": "every friday"}, "not a cron expression"),
        ({**WEEKEND, "cron": "0 16 * * 5"}, "exactly one of rrule or cron"),
    ],
)
def test_bad_windows_file_is_one_sentence(tmp_path: Path, window: dict, words: str) -> None:
    path = tmp_path / "windows.yaml"
    path.write_text(yaml.safe_dump({"windows": [window]}))
    with pytest.raises(ConfigError) as e:
        read_windows_file(path)
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ the workflow, over a weekend


def next_friday_17(now: datetime) -> datetime:
    local = now.astimezone(BERLIN)
    days = (4 - local.weekday()) % 7
    target = (local + timedelta(days=days)).replace(hour=17, minute=0, second=0, microsecond=0)
    if target <= local:
        target += timedelta(days=7)
    return target.astimezone(timezone.utc)


async def approval_at(sc, rid: str, who: str, at: datetime) -> ApprovalAttempt:  # type: ignore[no-untyped-def]
    """An approval signed at `at`: the gate checks proofs against the workflow's (skipped) clock."""
    plan = (await sc.status(rid)).plan_sha256
    proof = sc.sign("person", who, action="approve", subject=rid, gate=None, digest=DIGEST_A, plan=plan, channel="cli", body={"reason": ""}, now=at)
    return ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A, plan=plan, proof=proof)


async def approved_friday_17(skip_env, sc, rid: str, spec, who: str) -> datetime:  # type: ignore[no-untyped-def]
    """Start `rid` an hour before the next Friday 17:00 Berlin (on the shared skipped clock,
    wherever earlier tests left it), then have `who` approve it at 17:00 sharp."""
    friday = next_friday_17(await skip_env.get_current_time() + timedelta(hours=1))
    await skip_env.sleep(friday - timedelta(hours=1) - await skip_env.get_current_time())
    await sc.start_release(spec, release_id=rid)
    await wait_phase(sc, rid, "awaiting_approval")
    await skip_env.sleep(friday - await skip_env.get_current_time())
    result = await sc.submit_approval(await approval_at(sc, rid, who, friday))
    assert result.accepted, result.reason
    return friday


@pytest_asyncio.fixture
async def weekend_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip_env, task_queue: str) -> AsyncIterator[Path]:  # type: ignore[no-untyped-def]
    """The worker's windows file with the weekend deny window. Afterwards the freeze keeper the
    waiting release started is ended: its timers would otherwise stop the shared time-skipping
    server from skipping once this test's worker is gone."""
    path = tmp_path / "windows.yaml"
    path.write_text(yaml.safe_dump({"windows": [{**WEEKEND, "environments": ["staging"]}]}))
    monkeypatch.setenv("SIGNOFF_WINDOWS", str(path))
    yield path
    with contextlib.suppress(RPCError):  # a keeper idle for a (skipped) day has ended by itself
        await skip_env.client.get_workflow_handle(freezes_id(task_queue)).terminate("test over")


def records(rid: str) -> list[tuple[str, str, str]]:
    return [(r["kind"], r["outcome"], json.dumps(r)) for r in show(rid, store_from_settings(Settings.from_env()))]


async def test_friday_approval_waits_for_monday_0800_berlin(skip_env, task_queue: str, weekend_windows: Path) -> None:  # type: ignore[no-untyped-def]
    async with running_worker(skip_env.client, task_queue, visibility=False) as sc:
        rid = f"win-{uuid.uuid4().hex[:6]}"
        with skip_env.auto_time_skipping_disabled():
            friday = await approved_friday_17(skip_env, sc, rid, gated_spec(required=1, timeout="P5D"), "alice@example.com")
            status = await wait_phase(sc, rid, "waiting_for_window")
            assert status.window is not None and not status.window.open
            assert status.window.next_open == friday + timedelta(days=2, hours=15)  # Monday 08:00 Berlin
            await skip_env.sleep(friday + timedelta(days=2, hours=14, minutes=58) - await skip_env.get_current_time())
            assert (await sc.status(rid)).phase.value == "waiting_for_window"
            await skip_env.sleep(timedelta(minutes=5))
        status = await wait_phase(sc, rid, "succeeded")
        await sc.handle(rid).result()  # every record written
    promoted = next(datetime.fromisoformat(h["at"]) for h in status.history if h.get("phase") == "promoting")
    assert promoted.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 08:00", promoted
    assert status.window is not None and status.window.open and status.window_override is None
    kinds = [(k, o) for k, o, _ in records(rid)]
    assert ("window", "waiting") in kinds and ("window", "resumed") in kinds
    assert kinds.index(("window", "resumed")) < kinds.index(("promotion", "started"))


async def test_override_by_permitted_person_promotes_at_once_and_others_are_refused(skip_env, task_queue: str, weekend_windows: Path) -> None:  # type: ignore[no-untyped-def]
    async with running_worker(skip_env.client, task_queue, visibility=False) as sc:
        rid = f"win-{uuid.uuid4().hex[:6]}"
        with skip_env.auto_time_skipping_disabled():
            spec = gated_spec(required=1, timeout="P5D", from_groups=["checkout-owners", "sre"])
            friday = await approved_friday_17(skip_env, sc, rid, spec, "carol@example.com")
            await wait_phase(sc, rid, "waiting_for_window")
            # carol (sre, on-call) approved the gate but is not in the override groups the policy names
            with pytest.raises(Refused, match="not in the groups the policy lets override"):
                await sc.override_window(rid, identity="carol@example.com", reason="hotfix")
            # the requester cannot override her own release's window
            with pytest.raises(Refused, match="cannot override its window"):
                await sc.override_window(rid, identity="dana@example.com", reason="please")
            # a proof for another release does not carry over
            stolen = sc.sign("person", "alice@example.com", action="override_window", subject="some-other-release", channel="api", body={"reason": "x"})
            with pytest.raises(Refused, match="proof was made for subject"):
                await sc._control(rid, "override_window", {"identity": "alice@example.com", "reason": "x", "proof": stolen.model_dump(mode="json")})
            assert (await sc.status(rid)).phase.value == "waiting_for_window"
            accepted = await sc.override_window(rid, identity="alice@example.com", reason="payment outage fix")
            assert accepted["accepted"]
            status = await wait_phase(sc, rid, "succeeded")
            assert await skip_env.get_current_time() < friday + timedelta(hours=1)  # at once, not on Monday
        await sc.handle(rid).result()
    assert status.window_override is not None and status.window_override.by == "alice@example.com"
    assert status.window_override.reason == "payment outage fix"
    refused = {(r.by, r.decision) for r in status.refusals}
    assert {("carol@example.com", "override_window"), ("dana@example.com", "override_window")} <= refused
    rows = records(rid)
    overrides = [(o, doc) for k, o, doc in rows if k == "override_window"]
    assert [o for o, _ in overrides] == ["refused", "refused", "refused", "accepted"]
    assert "payment outage fix" in overrides[-1][1] and "alice@example.com" in overrides[-1][1]


async def test_a_window_that_does_not_open_before_the_gate_timeout_ends_the_release(skip_env, task_queue: str, weekend_windows: Path) -> None:  # type: ignore[no-untyped-def]
    async with running_worker(skip_env.client, task_queue, visibility=False) as sc:
        rid = f"win-{uuid.uuid4().hex[:6]}"
        with skip_env.auto_time_skipping_disabled():
            friday = await approved_friday_17(skip_env, sc, rid, gated_spec(required=1, timeout="P4D"), "alice@example.com")
            await wait_phase(sc, rid, "waiting_for_window")
            # the windows file now denies every day: it never opens before the gate's 4 days pass
            weekend_windows.write_text(yaml.safe_dump({"windows": [{**WEEKEND, "rrule": "FREQ=DAILY;BYHOUR=0;BYMINUTE=0;BYSECOND=0", "duration": "25h"}]}))
            await skip_env.sleep(friday + timedelta(days=4, minutes=30) - await skip_env.get_current_time())
            status = await wait_phase(sc, rid, "rejected")
        await sc.handle(rid).result()
    assert status.phase.value == "rejected"
    assert "did not open before the gate's timeout" in (status.reason or "")
    ended = datetime.fromisoformat(status.history[-1]["at"])
    assert timedelta(days=4) <= ended - friday < timedelta(days=4, hours=1)
