"""Cron schedules: validate an expression and compute its ticks in a time zone.

Pure functions over journal timestamps (integer microseconds since the epoch, see `clock`):
no clock reads, no sleeping, no asyncio. The only I/O is tzlocal reading the machine's zone
for ``tz=None`` (tzlocal caches it for the process). cronsim parses and iterates the
expressions; this module never parses cron itself.

Expressions have five fields (minute hour day-of-month month day-of-week) with cronsim's
extensions (names, ``L``, ``LW``, ``MON#2``, ``5L``). Its optional leading seconds field is
refused: cronsim skips the Debian DST handling for it, and a durable timer does not need
sub-minute ticks.

Daylight saving time follows Debian cron, as cronsim implements it (its README, "DST
Transitions", and ``CronSim.__init__``/``__next__``). When neither the minute nor the hour
field starts with ``*`` (a fixed time of day: ``30 2 * * *``, ``0 9,17 * * 1-5``), ticks are
matched on local wall-clock time: ticks that fall in a spring-forward gap fire once, at the
first existing minute after it (02:30 in Berlin fires at 03:00 CEST; ``0,30 2 * * *`` also
fires once), and a wall time that the fall-back repeats fires once, on its first (summer
time) occurrence. Every other expression (``*/15 * * * *``, ``0 * * * *``, ``0 */2 * * *``)
is matched on real instants: its ticks in the gap do not exist, and its ticks in the
repeated hour fire on both passes. On top of cronsim, `next_tick_us` drops any tick not
strictly after its start, so resuming inside the repeated hour cannot fire a fixed-time
job a second time (cronsim alone would return the earlier, first-pass instant).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal
from cronsim import CronSim, CronSimError

from orchestrator.errors import DefinitionError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_FIELDS = "minute hour day-of-month month day-of-week, e.g. '30 2 * * *' for 02:30 daily"
_FIRST_WINDOW_US = 3_600_000_000  # due_ticks_us looks back one hour first, then 8x wider


def resolve_zone(tz: str | None) -> tzinfo:
    """The zone a schedule runs in: the IANA zone `tz`, or the machine's zone for None."""
    return tzlocal.get_localzone() if tz is None else ZoneInfo(tz)


def validate(cron: str, tz: str | None, *, label: str) -> None:
    """Check a schedule's cron expression and time zone.

    Args:
        cron: A five-field cron expression.
        tz: An IANA zone name, or None for the machine's local zone.
        label: What the schedule belongs to, for the message (e.g. "workflow 'orders'").

    Raises:
        DefinitionError: The zone is unknown, the field count is wrong, or a field is bad.
    """
    try:
        resolve_zone(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise DefinitionError(
            f"{label}: unknown time zone {tz!r} (cron {cron!r}); use an IANA name such as "
            "'Europe/Berlin' or 'UTC', or tz=None for the machine's local time"
        ) from exc
    count = len(cron.split())
    if count != 5:
        seconds = " (a leading seconds field is not supported)" if count == 6 else ""
        raise DefinitionError(
            f"{label}: cron expression {cron!r} has {count} field(s){seconds}; "
            f"write exactly five: {_FIELDS}"
        )
    try:
        CronSim(cron, _EPOCH)
    except CronSimError as exc:
        raise DefinitionError(
            f"{label}: invalid cron expression {cron!r}: {exc}; fix that field ({_FIELDS})"
        ) from exc


def next_tick_us(cron: str, tz: str | None, after_us: int) -> int:
    """The first tick strictly after `after_us`, in epoch microseconds.

    Raises:
        DefinitionError: The expression has no tick in the 50 years after `after_us`.
    """
    tick = next(_ticks(cron, resolve_zone(tz), after_us), None)
    if tick is None:
        raise DefinitionError(f"cron expression {cron!r} never fires after {to_iso(after_us, tz)}")
    return tick


def due_ticks_us(
    cron: str, tz: str | None, *, last_us: int, now_us: int, catch_up: bool, limit: int = 1000
) -> list[int]:
    """The ticks to fire now: those `t` with ``last_us < t <= now_us``, oldest first.

    The search looks back from `now_us` over a window that grows eightfold until it holds
    enough ticks or reaches `last_us`, so a year of downtime costs about as much as the
    ticks returned, not one step per missed tick.

    Args:
        cron: A five-field cron expression.
        tz: An IANA zone name, or None for the machine's local zone.
        last_us: The last tick already fired (or the schedule's start).
        now_us: The current time.
        catch_up: False: at most one tick, the latest missed one (the missed window fires
            once). True: every missed tick, but only the most recent `limit` of them.
        limit: The most ticks returned with `catch_up`; older missed ticks are dropped.

    Raises:
        ValueError: `limit` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    zone, keep, window = resolve_zone(tz), limit if catch_up else 1, _FIRST_WINDOW_US
    while True:
        start = max(last_us, now_us - window)
        recent: deque[int] = deque(maxlen=keep)
        for tick in _ticks(cron, zone, start):
            if tick > now_us:
                break
            recent.append(tick)
        if len(recent) == keep or start == last_us:
            return list(recent)
        window *= 8


def to_iso(us: int, tz: str | None) -> str:
    """Epoch microseconds as ISO-8601 in the zone, with its offset (millisecond precision)."""
    return _to_datetime(us, resolve_zone(tz)).isoformat(timespec="milliseconds")


def _ticks(cron: str, zone: tzinfo, after_us: int) -> Iterator[int]:
    """Ticks strictly after `after_us`, oldest first, in epoch microseconds."""
    for moment in CronSim(cron, _to_datetime(after_us, zone)):
        tick = (moment - _EPOCH) // _ONE_US
        # Invariant: strictly increasing and > after_us. cronsim matches fixed-time jobs on
        # naive wall time, so from inside a repeated hour it can return an earlier instant.
        if tick > after_us:
            yield tick


def _to_datetime(us: int, zone: tzinfo) -> datetime:
    """Epoch microseconds as an aware datetime in `zone`, exactly (no float rounding)."""
    return (_EPOCH + us * _ONE_US).astimezone(zone)
