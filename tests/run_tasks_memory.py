"""An in-memory `RunTasks` for unit tests of the coordinator and executor sides (one process).

It keeps the protocol's rules (claims by digest, patches merged and handed over, a reply only
for the claim it answers and from an executor not fenced, `held`, abandoned tasks requeued
and their executors fenced) without a server; `tests/test_pg_run_tasks.py` checks the
PostgreSQL table against the same rules. Its `held_in`-style fence is `held`: one process
has no transactions to share.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import JournalLocked
from orchestrator.journal import RunTask, RunTaskAnswer, RunTaskOffer, RunTaskReply
from orchestrator.journal.postgres.offered import json_text
from tests.step_jobs_memory import MemoryOffered, OfferedRows


@dataclass
class _Row:
    offer: RunTaskOffer
    offered_by: int
    claimed_by: str | None = None
    attempts: int = 0
    cancelled: bool = False
    patches: dict[str, Any] = field(default_factory=dict)
    reply: dict[str, Any] | None = None

    @property
    def open(self) -> bool:
        return self.reply is None and not self.cancelled


class MemoryRunTasks(MemoryOffered["MemoryTaskTable"]):
    """Tasks in a dict, shared by every `MemoryRunTasks` made with the same `table`."""

    async def offer(
        self, tasks: Sequence[RunTaskOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        if daemon_id in self.table.fenced_daemons:
            raise JournalLocked("fenced")
        ids = [self.table.add(_Row(task, daemon_id)) for task in tasks]
        self.table.notify()
        return ids

    async def patch(self, task_id: int, patch: dict[str, Any]) -> bool:
        row = self.table.rows.get(task_id)
        if row is None or not row.open:
            return False
        row.patches.update(patch)
        self.table.notify()
        return True

    async def take_replies(self, ids: Collection[int]) -> list[RunTaskReply]:
        taken = []
        for task_id in sorted(ids):
            row = self.table.rows.get(task_id)
            if row is not None and row.reply is not None:
                taken.append(RunTaskReply(task_id, row.reply))
                del self.table.rows[task_id]
        return taken

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        count = 0
        for row in self.table.rows.values():
            token = row.claimed_by
            gone = token is not None and not self.table.live(token)
            if row.offered_by == daemon_id and row.reply is None and gone:
                assert token is not None
                self.table.fence(token)
                count += 1
                row.claimed_by, row.attempts = None, row.attempts + 1
                if row.attempts >= max_attempts:
                    row.reply = {"crashed": f"the daemons serving it stopped {row.attempts} times"}
        if count:
            self.table.notify()
        return count

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[RunTask]:
        if not self.table.live(token):
            raise JournalLocked(f"standby {token} was fenced or is not registered")
        claimed = []
        for task_id, row in sorted(self.table.rows.items()):
            if len(claimed) >= limit:
                break
            live_daemon = row.offered_by not in self.table.fenced_daemons
            if row.open and row.claimed_by is None and row.offer.digest in digests and live_daemon:
                row.claimed_by = token
                o, patches, row.patches = row.offer, row.patches, {}
                claimed.append(
                    RunTask(
                        task_id,
                        o.run_row,
                        o.run_id,
                        o.digest,
                        o.request,
                        o.state,
                        patches,
                        row.attempts,
                    )
                )
        return claimed

    async def take_patches(self, ids: Collection[int], *, token: str) -> dict[int, dict[str, Any]]:
        if not self.table.live(token):
            return {}
        taken = {}
        for task_id in sorted(ids):
            row = self.table.rows.get(task_id)
            if row is not None and row.claimed_by == token and row.patches:
                taken[task_id], row.patches = row.patches, {}
        return taken

    async def held(self, claims: Mapping[int, int], *, token: str) -> set[int]:
        if not self.table.live(token):
            return set()
        rows = self.table.rows
        return {
            i
            for i, attempts in claims.items()
            if i in rows
            and rows[i].open
            and rows[i].claimed_by == token
            and rows[i].attempts == attempts
        }

    async def reply(
        self, task_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        row = self.table.rows.get(task_id)
        if not self.table.live(token) or row is None or row.claimed_by != token:
            return False
        if row.attempts != attempts or row.reply is not None:
            return False
        row.reply = reply
        self.table.notify()
        return True

    async def reply_all(
        self, answers: Sequence[RunTaskAnswer], *, token: str, now: int
    ) -> tuple[set[int], dict[int, str]]:
        answered: set[int] = set()
        unkept: dict[int, str] = {}
        for answer in answers:
            try:
                json_text(answer.reply, "a run task's reply")
            except ValueError as exc:
                unkept[answer.id] = str(exc)
                continue
            attempts = answer.attempts
            if await self.reply(
                answer.id, token=token, attempts=attempts, reply=answer.reply, now=now
            ):
                answered.add(answer.id)
        return answered, unkept


class MemoryTaskTable(OfferedRows[_Row]):
    """The shared table; the executors registered and those fenced; the daemons fenced.

    A test registers an executor's token in `standbys` and removes it to have it judged
    gone (the next `requeue_abandoned` fences it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.standbys: set[str] = set()
        self.fenced_standbys: set[str] = set()
        self.fenced_daemons: set[int] = set()

    def live(self, token: str) -> bool:
        return token in self.standbys and token not in self.fenced_standbys

    def fence(self, token: str) -> None:
        self.fenced_standbys.add(token)
