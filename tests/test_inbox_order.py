"""Events and commands written by other processes are applied in the order they were written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from procs import query

from orchestrator import JournalError, Runtime, Trigger, Workflow
from orchestrator.engine import inbox
from orchestrator.engine.events import EventBus
from orchestrator.engine.inbox import InboxPoller
from orchestrator.journal import EventRecord, JournalQueries, open_journal
from orchestrator.journal.sqlite.commands import emit_event, queue_command
from orchestrator.journal.sqlite.reader import JournalReader


def hold(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="release", where={"key": ("==", state["key"])}, into="release")


def done(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "done": True}


HELD = Workflow(id="held", triggers={"go": Trigger(event="go")}, pipelines={"go": [hold, done]})


async def test_a_signal_written_before_the_event_that_resumes_the_run_is_applied_first(
    db: Path,
) -> None:
    async with Runtime(db, workflows=[HELD]) as rt:
        await rt.emit("go", {"key": 1})
        await rt.idle()
        (paused,) = await rt.list_runs(status="paused")
        run_id = paused.run_id

    # Written while no daemon runs, as two CLI calls would: the signal, then the event.
    queue_command(db, "signal", run_id, {"priority": "high"})
    emit_event(db, "release", {"key": 1})

    async with Runtime(db, workflows=[HELD]) as rt:
        await rt.idle()  # the signal and the event are taken from the inbox and applied
        info = await rt.watch("held", run_id)
        assert info is not None and info.status == "completed"
        assert info.state["priority"] == "high"  # the signal was not lost
        assert info.state["release"] == {"key": 1}
    assert query(db, "SELECT command, outcome FROM inbox") == [("signal", "ok")]


async def test_the_inbox_is_read_as_of_one_moment(db: Path) -> None:
    journal = open_journal(db)
    first = journal.commands.emit_event("a", {"n": 1})
    journal.commands.queue_switch("disable", "w")
    second = journal.commands.emit_event("b", {"n": 2})
    reader = await journal.open_reader()
    try:
        events, commands = await reader.inbox(0, 0, 10)
        assert [e.event_id for e in events] == [first, second]
        assert [(c.command, c.workflow_id) for c in commands] == [("disable", "w")]
        assert events[0].created_at < commands[0].created_at < events[1].created_at
        events, commands = await reader.inbox(events[0].id, 0, 1)  # past ids, and a limit
        assert ([e.event_id for e in events], len(commands)) == ([second], 1)
    finally:
        await reader.close()


async def test_data_version_moves_on_each_commit_elsewhere_and_when_its_probe_is_dropped(
    db: Path,
) -> None:
    async with Runtime(db):
        pass
    reader = await JournalReader.open(db)
    try:
        first = await reader.data_version()
        assert await reader.data_version() == first, "no commit: no change"
        emit_event(db, "go", {"key": 1})  # another connection commits
        second = await reader.data_version()
        assert second != first
        reader._close_probe()  # as when the probe cannot answer: a new one counts afresh
        third = await reader.data_version()
        assert third not in (first, second)
        assert await reader.data_version() == third
    finally:
        await reader.close()


async def test_a_closed_reader_opens_no_probe_again_so_it_holds_no_file_open(db: Path) -> None:
    async with Runtime(db):
        pass
    reader = await JournalReader.open(db)
    await reader.data_version()  # its probe is open: the -wal and -shm files are in use
    await reader.close()
    with pytest.raises(JournalError, match="the reader is closed"):
        await reader.data_version()
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]  # the last one out


class QuietReader:
    """An inbox with nothing in it, then (at the tick `pending_at`) one pending row."""

    def __init__(self, pending_at: int) -> None:
        self.ticks = 0
        self.pending_at = pending_at

    async def data_version(self) -> int:
        self.ticks += 1
        return self.ticks if self.ticks == self.pending_at else 0

    async def has_pending(self, after_event: int, after_command: int) -> bool:
        return self.ticks == self.pending_at

    async def inbox(
        self, after_event: int, after_command: int, limit: int
    ) -> tuple[list[Any], ...]:
        return [], []


async def test_the_inbox_poller_backs_off_when_idle_and_speeds_up_on_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gaps: list[float] = []

    async def sleep(seconds: float) -> None:
        gaps.append(seconds)
        if len(gaps) == 40:
            raise asyncio.CancelledError

    async def apply(command: Any) -> None:
        raise AssertionError("no command is pending")

    monkeypatch.setattr(inbox, "asyncio", SimpleNamespace(sleep=sleep))
    bus = cast(EventBus, None)  # nothing reaches it: no row is ever taken
    poller = InboxPoller(cast(JournalQueries, QuietReader(pending_at=20)), bus, apply)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert gaps[0] == pytest.approx(inbox.POLL_SECONDS * 1.25)
    assert gaps[:19] == sorted(gaps[:19]) and gaps[18] == inbox.IDLE_POLL_SECONDS
    assert max(gaps) == inbox.IDLE_POLL_SECONDS  # the worst-case delay of a row
    assert gaps[19] == pytest.approx(inbox.POLL_SECONDS), "a row found: fast again"
    assert gaps[20] > gaps[19] and gaps[-1] == inbox.IDLE_POLL_SECONDS


def _open_files(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(str(fd.readlink()))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(path))]


async def test_a_query_cancelled_after_it_ran_leaves_nothing_open(db: Path) -> None:
    """A query's task may be cancelled just as the query answered (a runtime stopping).

    Its statement must not outlive it: an unfinished one keeps the connection's read
    transaction, so every later query of that reader reads the old snapshot (a join read
    a child as still running), WAL checkpoints are held back, and `close` cannot close
    the file until the garbage collector frees the cursor.
    """
    async with Runtime(db):
        pass
    reader = await JournalReader.open(db)
    query = asyncio.create_task(reader.fetch("SELECT * FROM sqlite_schema"))
    await asyncio.sleep(0)  # the task now awaits the connection thread's answer
    answer = query._fut_waiter  # type: ignore[attr-defined]  # asyncio's: what it awaits
    # Polled, not awaited through a done callback: that would run after the task's own
    # wake-up, and the task would take its answer before it could be cancelled.
    while not answer.done():  # noqa: ASYNC110
        await asyncio.sleep(0)
    assert not query.done()  # answered, and the task has not run since: cancel it now
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query
    # Nothing of it holds a read transaction: the reader sees what commits next.
    emit_event(db, "go", {"n": 1})
    assert [tuple(r) for r in await reader.fetch("SELECT type FROM events")] == [("go",)]
    await reader.close()
    assert _open_files(db) == []


class OutOfOrderReader:
    """Unrouted events whose ids and times disagree, as concurrent writers can commit them."""

    def __init__(self, rows: list[EventRecord]) -> None:
        self.rows = rows
        self.asked_after: list[int] = []

    async def inbox(
        self, after_event: int, after_command: int, limit: int = 1000
    ) -> tuple[list[EventRecord], list[Any]]:
        self.asked_after.append(after_event)
        return [row for row in self.rows if row.id > after_event], []


async def test_an_event_with_a_lower_id_but_a_later_time_takes_no_event_twice() -> None:
    accepted: list[str] = []
    bus = SimpleNamespace(accept=lambda event_id, *args, **kwargs: accepted.append(event_id))
    rows = [
        EventRecord(id=8, event_id="e8", type="t", data={}, source="cli", created_at=100),
        EventRecord(id=7, event_id="e7", type="t", data={}, source="cli", created_at=200),
    ]
    reader = OutOfOrderReader(rows)

    async def apply(command: Any) -> None:
        raise AssertionError("no command is pending")

    poller = InboxPoller(cast(JournalQueries, reader), cast(EventBus, bus), apply)
    await poller.drain()
    await poller.drain()
    assert accepted == ["e8", "e7"], "each once, in the order of their times"
    assert reader.asked_after == [0, 8], "the cursor never moves back to a lower id"
