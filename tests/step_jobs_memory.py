"""An in-memory `StepJobs` for unit tests of the spread and serve sides (one process).

It keeps the protocol's rules (claims by digest, a reply only for the claim it answers,
withdrawn jobs, requeued abandoned ones) without a server; `tests/test_pg_step_jobs.py`
checks the PostgreSQL table against the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from orchestrator.errors import JournalLocked
from orchestrator.journal import StepJob, StepOffer, StepReply


class _Offered(Protocol):
    offered_by: int
    cancelled: bool


RowT = TypeVar("RowT", bound=_Offered)


class OfferedRows(Generic[RowT]):
    """What an in-memory table of offered work keeps: its rows by id and a notification."""

    def __init__(self) -> None:
        self.rows: dict[int, RowT] = {}
        self.next_id = 0
        self.news = asyncio.Event()

    def add(self, row: RowT) -> int:
        self.next_id += 1
        self.rows[self.next_id] = row
        return self.next_id

    def notify(self) -> None:
        self.news.set()
        self.news = asyncio.Event()


TableT = TypeVar("TableT", bound=OfferedRows[Any])


class MemoryOffered(Generic[TableT]):
    """What both in-memory doubles do alike over a `table` shared by the ones made with it."""

    def __init__(self, table: TableT) -> None:
        self.table = table

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def cancel(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            if row_id in self.table.rows:
                self.table.rows[row_id].cancelled = True
        self.table.notify()

    async def forget(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self.table.rows.pop(row_id, None)
        self.table.notify()

    async def clear(self, *, daemon_id: int) -> int:
        mine = {i: r for i, r in self.table.rows.items() if r.offered_by == daemon_id}
        count = len(self.table.rows) - len(mine)
        self.table.rows = mine
        return count

    async def wait(self, seconds: float) -> None:
        news = self.table.news
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(news.wait(), seconds)


@dataclass
class _Row:
    offer: StepOffer
    offered_by: int
    at: int = 0
    claimed_by: str | None = None
    attempts: int = 0
    cancelled: bool = False
    reply: dict[str, Any] | None = None


class MemoryStepJobs(MemoryOffered["MemoryTable"]):
    """Jobs in a dict, shared by every `MemoryStepJobs` made with the same `table`."""

    async def offer(
        self, offers: Sequence[StepOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        if daemon_id in self.table.fenced:
            raise JournalLocked("fenced")
        ids = [self.table.add(_Row(offer, daemon_id, now)) for offer in offers]
        self.table.notify()
        return ids

    async def take_replies(self, ids: Collection[int]) -> list[StepReply]:
        taken = []
        for job_id in ids:
            row = self.table.rows.get(job_id)
            if row is not None and row.reply is not None:
                taken.append(StepReply(job_id, row.reply))
                del self.table.rows[job_id]
        return taken

    async def take_back(self, ids: Collection[int], limit: int) -> list[int]:
        rows = self.table.rows
        free = [i for i in sorted(ids) if i in rows and rows[i].claimed_by is None]
        taken = [i for i in free if not rows[i].reply][:limit]
        for job_id in taken:
            del rows[job_id]
        return taken

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        count = 0
        for row in self.table.rows.values():
            gone = row.claimed_by is not None and row.claimed_by not in self.table.standbys
            if row.offered_by == daemon_id and row.reply is None and gone:
                count += 1
                row.claimed_by, row.attempts = None, row.attempts + 1
                if row.attempts >= max_attempts:
                    row.reply = {"crashed": f"the daemons serving it stopped {row.attempts} times"}
        return count

    async def missing(self, ids: Collection[int]) -> set[int]:
        return {job_id for job_id in ids if job_id not in self.table.rows}

    async def forget_strays(self, *, daemon_id: int, keep: Collection[int], before: int) -> int:
        strays = [
            i
            for i, r in self.table.rows.items()
            if r.offered_by == daemon_id and r.at < before and i not in keep
        ]
        for job_id in strays:
            del self.table.rows[job_id]
        return len(strays)

    async def unclaim_strays(self, *, token: str, keep: Collection[int]) -> int:
        strays = [
            r
            for i, r in self.table.rows.items()
            if r.claimed_by == token and r.reply is None and i not in keep
        ]
        for row in strays:
            row.claimed_by = None
        return len(strays)

    async def servers(self, *, now: int) -> int:
        return len(self.table.standbys)

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[StepJob]:
        claimed = []
        for job_id, row in self.table.rows.items():
            if len(claimed) >= limit:
                break
            open_job = row.claimed_by is None and not row.cancelled and row.reply is None
            if open_job and row.offer.digest in digests:
                row.claimed_by = token
                o = row.offer
                claimed.append(
                    StepJob(job_id, o.run_id, o.digest, o.request, o.state, row.attempts)
                )
        return claimed

    async def reply(
        self, job_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        # As PostgreSQL's: text the journal cannot keep (a lone surrogate) is refused.
        json.dumps(reply, ensure_ascii=False).encode("utf-8")
        row = self.table.rows.get(job_id)
        if row is None or row.claimed_by != token or row.attempts != attempts or row.reply:
            return False
        row.reply = reply
        self.table.notify()
        return True

    async def withdrawn(self, ids: Collection[int], *, token: str) -> set[int]:
        rows = self.table.rows
        return {i for i in ids if i not in rows or rows[i].cancelled or rows[i].claimed_by != token}


class MemoryTable(OfferedRows[_Row]):
    """The shared table, the tokens of the standbys alive, and the daemons fenced."""

    def __init__(self) -> None:
        super().__init__()
        self.standbys: set[str] = set()
        self.fenced: set[int] = set()
