"""Deploy windows and freezes: when a release may be promoted. Pure rules, no Temporal, no I/O.

A window is an RFC 5545 RRULE (python-dateutil) or a cron expression (croniter), each with an
explicit time zone and a duration. The semantics are those of Argo CD sync windows and
Spinnaker/Harness deploy windows: a deny window that is active closes promotion (deny wins);
if any allow window applies to the service, every moment outside the allow windows is closed.
A freeze (signoff freeze start) closes promotion like a deny window until it ends.

The workflow calls `window_state` with `workflow.now()`, so it is deterministic: the rules only
look at the moment given, the time zone database and the windows the worker configured.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from dateutil.rrule import rrulestr
from pydantic import Field, PrivateAttr, field_validator, model_validator

from signoff.errors import ConfigError
from signoff.models import Duration, Freeze, Open, Strict, WindowState

#: Occurrences are counted from here (local time in the window's zone): a rule without its own
#: DTSTART starts at midnight of this Monday, so BYHOUR/BYMINUTE give the time of day.
ANCHOR = datetime(2020, 1, 6)

#: The workflow id of the freeze keeper (workflows/freeze.py) of the default task queue.
FREEZES_ID = "signoff-freezes"


def freezes_id(task_queue: str) -> str:
    """One keeper per task queue: the workers of a queue are the ones that run its releases."""
    return FREEZES_ID if task_queue == "signoff" else f"{FREEZES_ID}-{task_queue}"

#: How far and over how many boundaries `window_state` looks for the next opening; past that
#: `next_open` is None and the release waits for its deadline (or a person).
HORIZON = timedelta(days=366)
MAX_STEPS = 200


class WindowSpec(Strict):
    """One allow or deny window, as the worker's windows file (SIGNOFF_WINDOWS) lists it."""

    name: str
    kind: Literal["allow", "deny"]
    rrule: str | None = Field(default=None, description="RFC 5545 RRULE (optionally with its DTSTART line), e.g. FREQ=WEEKLY;BYDAY=FR;BYHOUR=16")
    cron: str | None = Field(default=None, description="five-field cron expression of the window's start")
    tzid: str = Field(description="the IANA time zone the rule's times are in, e.g. Europe/Berlin")
    duration: Duration
    services: list[str] = Field(default_factory=list, description="services it applies to (empty: all)")
    environments: list[str] = Field(default_factory=list, description="environments it applies to (empty: all)")
    _compiled: object = PrivateAttr(default=None)

    @field_validator("tzid")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from e
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> "WindowSpec":
        if (self.rrule is None) == (self.cron is None):
            raise ValueError(f"window {self.name} needs exactly one of rrule or cron")
        if self.duration <= timedelta(0):
            raise ValueError(f"window {self.name} needs a positive duration")
        self.last_start(ANCHOR.replace(tzinfo=timezone.utc) + timedelta(days=400))  # a bad rule fails here, at load
        return self

    def applies(self, service: str, environment: str) -> bool:
        return (not self.services or service in self.services) and (not self.environments or environment in self.environments)

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tzid)

    def last_start(self, at: datetime) -> datetime | None:
        """The latest occurrence start at or before `at` (aware, UTC)."""
        local = at.astimezone(self._zone())
        if self.cron is not None:
            try:
                start = croniter(self.cron, local + timedelta(seconds=1)).get_prev(datetime)
            except (ValueError, KeyError) as e:
                raise ValueError(f"window {self.name}: {self.cron!r} is not a cron expression ({e})") from e
        else:
            start = self._rule().before(local, inc=True)
        return None if start is None else start.astimezone(timezone.utc)

    def next_start(self, at: datetime) -> datetime | None:
        """The first occurrence start strictly after `at` (aware, UTC)."""
        local = at.astimezone(self._zone())
        if self.cron is not None:
            start = croniter(self.cron, local).get_next(datetime)
        else:
            start = self._rule().after(local, inc=False)
        return None if start is None else start.astimezone(timezone.utc)

    def _rule(self):  # type: ignore[no-untyped-def]
        """The parsed rule, built once per window with dateutil's occurrence cache: a release
        re-checks its window many times, inside a workflow task that must stay fast."""
        if self._compiled is not None:
            return self._compiled
        text = self.rrule or ""
        try:
            if "DTSTART" in text.upper():
                rule = rrulestr(text, tzinfos=lambda _name, _offset: self._zone(), cache=True)
            else:
                rule = rrulestr(text.removeprefix("RRULE:"), dtstart=ANCHOR.replace(tzinfo=self._zone()), cache=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"window {self.name}: {text!r} is not an RFC 5545 RRULE ({e})") from e
        self._compiled = rule
        return rule

    def active(self, at: datetime) -> datetime | None:
        """When the occurrence that covers `at` ends, or None when `at` is outside the window."""
        start = self.last_start(at)
        if start is None:
            return None
        end = start + self.duration
        return end if start <= at < end else None


class WindowsFile(Strict):
    """The worker's windows file: `windows: [WindowSpec, ...]`."""

    windows: list[WindowSpec] = Field(default_factory=list)


class WindowRequest(Open):
    """What a release asks before promotion: the windows and freezes for its service."""

    release_id: str
    service: str
    environment: str
    watch: bool = Field(default=False, description="ask the freeze keeper to signal this release when freezes change")


class WindowConfig(Open):
    """The worker's windows for one service and the freezes in force, as read just now."""

    windows: list[WindowSpec] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)


def read_windows_file(path: Path | None) -> WindowsFile:
    """The worker's windows file (SIGNOFF_WINDOWS); no file means no windows."""
    if path is None:
        return WindowsFile()
    import yaml
    from pydantic import ValidationError

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return WindowsFile.model_validate(doc)
    except OSError as e:
        raise ConfigError(f"the windows file {path} cannot be read ({e.__class__.__name__}); fix SIGNOFF_WINDOWS or the file's permissions.") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"the windows file {path} is not valid YAML ({str(e).splitlines()[0]}); fix it and restart the worker.") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"the windows file {path} is invalid at {where}: {first['msg']}; fix it (see docs in README, Deploy windows).") from e


def freezes_for(freezes: Iterable[Freeze], service: str, environment: str, at: datetime) -> list[Freeze]:
    """The freezes in force for this service and environment at `at`."""
    return [
        f
        for f in freezes
        if f.ended_at is None
        and (f.service is None or f.service == service)
        and (f.environment is None or f.environment == environment)
        and (f.until is None or at < f.until)
    ]


def _closed_by(windows: list[WindowSpec], freezes: list[Freeze], at: datetime) -> list[str]:
    """Why promotion is closed at `at` (empty: open)."""
    reasons = [f"deny window {w.name} until {end.isoformat()}" for w in windows if w.kind == "deny" and (end := w.active(at))]
    reasons += [f"freeze by {f.by}: {f.reason}" for f in freezes if f.started_at <= at and (f.until is None or at < f.until) and f.ended_at is None]
    allows = [w for w in windows if w.kind == "allow"]
    if allows and not any(w.active(at) for w in allows):
        reasons.append(f"outside the allow windows ({', '.join(w.name for w in allows)})")
    return reasons


def _next_boundary(windows: list[WindowSpec], freezes: list[Freeze], at: datetime) -> datetime | None:
    """The next moment after `at` at which any window opens or closes, or a freeze expires."""
    moments: list[datetime] = []
    for w in windows:
        end = w.active(at)
        if end is not None:
            moments.append(end)
        start = w.next_start(at)
        if start is not None:
            moments.append(start)
    moments += [f.until for f in freezes if f.until is not None and f.until > at]
    later = [m for m in moments if m > at]
    return min(later) if later else None


def window_state(windows: list[WindowSpec], freezes: list[Freeze], *, service: str, environment: str, at: datetime) -> WindowState:
    """Whether promotion is open for this service at `at`, why not, and when it next opens.

    `next_open` is None when only a person can open it (a freeze without an end) or when no
    opening is found within MAX_STEPS boundaries.
    """
    mine = [w for w in windows if w.applies(service, environment)]
    frozen = freezes_for(freezes, service, environment, at)
    reasons = _closed_by(mine, frozen, at)
    state = WindowState(open=not reasons, reasons=reasons, windows=[w.name for w in mine], freezes=[f.id for f in frozen], at=at)
    if state.open or any(f.until is None for f in frozen):
        return state
    moment = at
    for _ in range(MAX_STEPS):
        nxt = _next_boundary(mine, frozen, moment)
        if nxt is None or nxt > at + HORIZON:
            break
        if not _closed_by(mine, freezes_for(frozen, service, environment, nxt), nxt):
            return state.model_copy(update={"next_open": nxt})
        moment = nxt
    return state


def until_time(text: str | None, now: datetime) -> datetime | None:
    """`freeze start --until` as people write it: an ISO time, or a span from now (2h, 1d)."""
    if not text:
        return None
    from signoff.models import parse_duration

    span = parse_duration(text)
    if isinstance(span, timedelta):
        return now + span
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--until {text!r} is neither an ISO time (2026-12-24T18:00:00+01:00) nor a span (2h, 1d); give one of those") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
