"""Cron schedules: validation, next tick, missed ticks after downtime, DST, zones, ISO output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import cronsim
import pytest
import tzlocal

from orchestrator.define import schedules
from orchestrator.define.schedules import due_ticks_us, next_tick_us, resolve_zone, to_iso, validate
from orchestrator.errors import DefinitionError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BERLIN = "Europe/Berlin"


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: str = "UTC",
    fold: int = 0,
) -> int:
    """Epoch microseconds of a wall-clock time in `tz` (fold=1: the second of two)."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz), fold=fold)
    return (moment - EPOCH) // timedelta(microseconds=1)


def ticks(cron: str, tz: str | None, start_us: int, end_us: int) -> list[int]:
    """Every tick in (start_us, end_us], walked one `next_tick_us` at a time."""
    out, cursor = [], start_us
    while (cursor := next_tick_us(cron, tz, cursor)) <= end_us:
        out.append(cursor)
    return out


def per_local_day(instants: list[int], tz: str) -> dict[str, list[str]]:
    days: dict[str, list[str]] = {}
    for us in instants:
        local = datetime.fromtimestamp(us / 1e6, tz=ZoneInfo(tz))
        days.setdefault(local.date().isoformat(), []).append(local.strftime("%H:%M%z"))
    return days


# -- next tick ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        ("* * * * *", "UTC", at(2026, 1, 1, 0, 0), at(2026, 1, 1, 0, 1)),
        ("* * * * *", "UTC", at(2026, 1, 1, 0, 0, 30) + 1, at(2026, 1, 1, 0, 1)),
        ("*/15 * * * *", "UTC", at(2026, 1, 1, 10, 7), at(2026, 1, 1, 10, 15)),
        ("0 2 * * *", "UTC", at(2026, 1, 1, 1, 59, 59), at(2026, 1, 1, 2, 0)),
        ("0 2 * * *", "UTC", at(2026, 1, 1, 2, 0), at(2026, 1, 2, 2, 0)),  # strictly after
        ("0 2 * * *", "UTC", at(2026, 1, 1, 2, 0) - 1, at(2026, 1, 1, 2, 0)),
        ("0 9 * * 1-5", "UTC", at(2026, 1, 2, 10, 0), at(2026, 1, 5, 9, 0)),  # Fri -> Mon
        ("0 0 1 * *", "UTC", at(2026, 1, 15), at(2026, 2, 1)),
        ("0 0 L 2 *", "UTC", at(2028, 1, 1), at(2028, 2, 29)),
        ("30 8 * * *", BERLIN, at(2026, 1, 1), at(2026, 1, 1, 7, 30)),  # CET, UTC+1
        ("30 8 * * *", BERLIN, at(2026, 7, 1), at(2026, 7, 1, 6, 30)),  # CEST, UTC+2
        ("0 9 * * *", "America/New_York", at(2026, 1, 1), at(2026, 1, 1, 14, 0)),
    ],
)
def test_next_tick(cron: str, tz: str, after: int, expected: int) -> None:
    assert next_tick_us(cron, tz, after) == expected


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz"),
    [("0 2 * * *", None), ("*/5 9-17 * * MON-FRI", BERLIN), ("0 0 L * *", "UTC")],
)
def test_valid_schedules_pass(cron: str, tz: str | None) -> None:
    validate(cron, tz, label="workflow 'orders' trigger 'nightly'")


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * * *", "has 4 field(s); write exactly five: minute hour"),
        ("@daily", "has 1 field(s); write exactly five"),
        ("0 0 2 * * *", "has 6 field(s) (a leading seconds field is not supported)"),
        ("61 * * * *", "Bad minute; fix that field (minute hour"),
        ("*/0 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("0 0 * * MON#6", "Bad day-of-week"),
    ],
)
def test_bad_cron_expression_is_a_definition_error(cron: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as info:
        validate(cron, "UTC", label="workflow 'orders' trigger 'nightly'")
    message = str(info.value)
    assert message.startswith("workflow 'orders' trigger 'nightly': ")
    assert repr(cron) in message and reason in message and "'30 2 * * *'" in message
    assert info.value.code == "INVALID_DEFINITION"


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "europe/berlin", "Europe", "../etc/passwd"])
def test_unknown_time_zone_is_a_definition_error(tz: str) -> None:
    with pytest.raises(DefinitionError) as info:
        validate("0 2 * * *", tz, label="workflow 'orders'")
    message = str(info.value)
    assert message.startswith(f"workflow 'orders': unknown time zone {tz!r} (cron '0 2 * * *')")
    assert "IANA name such as 'Europe/Berlin'" in message and "tz=None" in message


# -- due ticks after downtime ---------------------------------------------------------------


@pytest.mark.parametrize("catch_up", [False, True])
def test_nothing_due_before_the_next_tick(catch_up: bool) -> None:
    last = at(2026, 1, 1, 10, 0)
    for now in (last, last + 59_999_999, last - 1):
        assert due_ticks_us("* * * * *", "UTC", last_us=last, now_us=now, catch_up=catch_up) == []


@pytest.mark.parametrize("catch_up", [False, True])
def test_one_missed_tick_is_due_at_its_exact_instant(catch_up: bool) -> None:
    last, now = at(2026, 1, 1, 10, 0), at(2026, 1, 1, 10, 1)
    assert due_ticks_us("* * * * *", "UTC", last_us=last, now_us=now, catch_up=catch_up) == [now]


def test_many_missed_ticks_fire_once_or_each() -> None:
    kw: dict[str, Any] = {"last_us": at(2026, 1, 1, 10, 0), "now_us": at(2026, 1, 1, 11, 20)}
    assert due_ticks_us("*/15 * * * *", "UTC", catch_up=False, **kw) == [at(2026, 1, 1, 11, 15)]
    every = [at(2026, 1, 1, 10, 15), at(2026, 1, 1, 10, 30), at(2026, 1, 1, 10, 45)]
    every += [at(2026, 1, 1, 11, 0), at(2026, 1, 1, 11, 15)]
    assert due_ticks_us("*/15 * * * *", "UTC", catch_up=True, **kw) == every
    assert due_ticks_us("*/15 * * * *", "UTC", catch_up=True, limit=3, **kw) == every[-3:]
    with pytest.raises(ValueError, match="limit"):
        due_ticks_us("*/15 * * * *", "UTC", catch_up=True, limit=0, **kw)


def test_sparse_schedule_searches_back_past_the_first_window() -> None:
    kw: dict[str, Any] = {"last_us": at(2020, 1, 1), "now_us": at(2026, 6, 1)}
    assert due_ticks_us("0 0 1 1 *", "UTC", catch_up=False, **kw) == [at(2026, 1, 1)]
    yearly = [at(year, 1, 1) for year in range(2021, 2027)]
    assert due_ticks_us("0 0 1 1 *", "UTC", catch_up=True, **kw) == yearly


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "0,30 2 * * *"])
@pytest.mark.parametrize(("month", "day"), [(3, 29), (10, 25)])
def test_due_ticks_match_the_next_tick_walk_across_dst(cron: str, month: int, day: int) -> None:
    last, now = at(2026, month, 24, tz=BERLIN), at(2026, month, 31, 12, tz=BERLIN)
    walked = ticks(cron, BERLIN, last, now)
    assert due_ticks_us(cron, BERLIN, last_us=last, now_us=now, catch_up=True) == walked
    assert due_ticks_us(cron, BERLIN, last_us=last, now_us=now, catch_up=False) == walked[-1:]
    for now in range(at(2026, month, day, 0, 50), at(2026, month, day, 3, 10), 5 * 60_000_000):
        expected = [t for t in walked if t <= now][-1:]
        assert due_ticks_us(cron, BERLIN, last_us=last, now_us=now, catch_up=False) == expected


class CountingCronSim(cronsim.CronSim):
    steps = 0

    def __next__(self) -> datetime:
        CountingCronSim.steps += 1
        return super().__next__()


def test_a_year_of_downtime_does_not_walk_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedules, "CronSim", CountingCronSim)
    CountingCronSim.steps = 0
    last, now = at(2025, 1, 1), at(2026, 1, 1, 0, 0, 30)
    due = due_ticks_us("* * * * *", "UTC", last_us=last, now_us=now, catch_up=False)
    assert due == [at(2026, 1, 1)] and CountingCronSim.steps < 200
    CountingCronSim.steps = 0
    due = due_ticks_us("* * * * *", BERLIN, last_us=last, now_us=now, catch_up=True)
    assert due == [at(2026, 1, 1) - m * 60_000_000 for m in range(999, -1, -1)]
    assert CountingCronSim.steps < 10_000  # a walk from `last` would take 525,600


# -- daylight saving time (Europe/Berlin, 2026: +1h on 29 March, -1h on 25 October) ---------


def test_spring_forward_fires_the_skipped_fixed_time_once_at_three() -> None:
    instants = ticks("30 2 * * *", BERLIN, at(2026, 3, 27, tz=BERLIN), at(2026, 4, 1, tz=BERLIN))
    assert instants == [
        at(2026, 3, 27, 1, 30),  # 02:30 CET
        at(2026, 3, 28, 1, 30),
        at(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, right after the gap
        at(2026, 3, 30, 0, 30),  # 02:30 CEST
        at(2026, 3, 31, 0, 30),
    ]
    assert per_local_day(instants, BERLIN)["2026-03-29"] == ["03:00+0200"]
    assert all(len(times) == 1 for times in per_local_day(instants, BERLIN).values())
    assert to_iso(instants[2], BERLIN) == "2026-03-29T03:00:00.000+02:00"
    # Two skipped ticks in the gap still fire once.
    assert ticks("0,30 2 * * *", BERLIN, at(2026, 3, 29), at(2026, 3, 29, 2)) == [
        at(2026, 3, 29, 1)
    ]


def test_fall_back_fires_the_repeated_fixed_time_once_on_the_first_pass() -> None:
    instants = ticks("30 2 * * *", BERLIN, at(2026, 10, 23, tz=BERLIN), at(2026, 10, 28, tz=BERLIN))
    assert instants == [
        at(2026, 10, 23, 0, 30),  # 02:30 CEST
        at(2026, 10, 24, 0, 30),
        at(2026, 10, 25, 0, 30),  # 02:30 CEST, first pass; not again at 02:30 CET (01:30Z)
        at(2026, 10, 26, 1, 30),  # 02:30 CET
        at(2026, 10, 27, 1, 30),
    ]
    assert all(len(times) == 1 for times in per_local_day(instants, BERLIN).values())
    assert to_iso(instants[2], BERLIN) == "2026-10-25T02:30:00.000+02:00"


def test_resuming_inside_the_repeated_hour_does_not_fire_the_fixed_time_again() -> None:
    second_pass = at(2026, 10, 25, 2, 15, tz=BERLIN, fold=1)
    assert second_pass == at(2026, 10, 25, 1, 15)  # 02:15 CET, after 02:30 CEST has fired
    assert next_tick_us("30 2 * * *", BERLIN, second_pass) == at(2026, 10, 26, 1, 30)
    fired = at(2026, 10, 25, 0, 30)
    for now in (second_pass, at(2026, 10, 25, 1, 30), at(2026, 10, 25, 1, 45)):
        due = due_ticks_us("30 2 * * *", BERLIN, last_us=fired, now_us=now, catch_up=True)
        assert due == []


def test_hourly_schedule_follows_real_instants_through_both_transitions() -> None:
    spring = ticks(
        "0 * * * *", BERLIN, at(2026, 3, 29, tz=BERLIN) - 1, at(2026, 3, 30, tz=BERLIN) - 1
    )
    fall = ticks(
        "0 * * * *", BERLIN, at(2026, 10, 25, tz=BERLIN) - 1, at(2026, 10, 26, tz=BERLIN) - 1
    )
    assert len(spring) == 23 and at(2026, 3, 29, 1, 0) in spring  # 02:00 skipped, 03:00 CEST
    assert len(fall) == 25 and {at(2026, 10, 25, 0, 0), at(2026, 10, 25, 1, 0)} <= set(fall)
    assert per_local_day(fall, BERLIN)["2026-10-25"][2:4] == ["02:00+0200", "02:00+0100"]


# -- zones and ISO output -------------------------------------------------------------------


@pytest.fixture
def local_tz() -> Iterator[Callable[[str], None]]:
    """Set the machine's zone through TZ, which tzlocal reads first (after a reload)."""
    with pytest.MonkeyPatch.context() as patch:

        def set_local(name: str) -> None:
            patch.setenv("TZ", name)
            tzlocal.reload_localzone()

        yield set_local
    tzlocal.reload_localzone()


def test_tz_none_is_the_machines_local_zone(local_tz: Callable[[str], None]) -> None:
    local_tz("America/New_York")
    assert resolve_zone(None) == ZoneInfo("America/New_York") == tzlocal.get_localzone()
    assert next_tick_us("0 9 * * *", None, at(2026, 7, 1)) == at(2026, 7, 1, 13, 0)  # EDT
    assert to_iso(at(2026, 7, 1, 13, 0), None) == "2026-07-01T09:00:00.000-04:00"
    local_tz("Asia/Tokyo")
    assert next_tick_us("0 9 * * *", None, at(2026, 7, 1)) == at(2026, 7, 2, 0, 0)


def test_to_iso_carries_the_zones_offset() -> None:
    assert to_iso(0, "UTC") == "1970-01-01T00:00:00.000+00:00"
    assert to_iso(at(2026, 1, 1, 7, 30) + 123_456, BERLIN) == "2026-01-01T08:30:00.123+01:00"
    assert to_iso(at(2026, 7, 1, 6, 30), BERLIN) == "2026-07-01T08:30:00.000+02:00"
    assert to_iso(at(2026, 1, 1), "Asia/Kolkata") == "2026-01-01T05:30:00.000+05:30"
    assert datetime.fromisoformat(to_iso(at(2026, 1, 1), BERLIN)) == datetime(
        2026, 1, 1, tzinfo=UTC
    )
