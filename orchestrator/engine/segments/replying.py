"""An executor's replies, written together: one flush of its writer, one transaction.

Every segment that ends queues its reply and waits for it; the first to find no batch in
flight writes all the replies queued meanwhile (group commit, as the journal writer does
with its writes). A reply is written only once the segment's own writes committed: the
batch flushes the writer after taking its replies, so every write made before a reply
was queued is in. Under load, one transaction per run was an executor's bottleneck.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...clock import Clock
from ...journal import JournalWriter, RunTask, RunTaskAnswer, RunTasks

_log = logging.getLogger(__name__)

_Queued = tuple[RunTaskAnswer, asyncio.Future[bool]]


class Replier:
    """Writes the replies of one executor (its token), batched."""

    def __init__(self, tasks: RunTasks, writer: JournalWriter, token: str, clock: Clock) -> None:
        self._tasks, self._writer, self._token, self._clock = tasks, writer, token, clock
        self._queued: list[_Queued] = []
        self._lock = asyncio.Lock()  # one batch at a time

    async def reply(self, task: RunTask, reply: dict[str, Any]) -> bool:
        """Answer `task` once its segment's writes committed; whether the answer was taken.

        False when the task is no longer this claim's or the executor was fenced.

        Raises:
            JournalError: The writer or the journal failed; the reply stays queued for the
                next batch (it may still be written).
        """
        answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((RunTaskAnswer(task.id, task.attempts, reply), answered))
        async with self._lock:
            if not answered.done():
                await self._write_queued()
        return answered.result()

    async def _write_queued(self) -> None:
        batch, self._queued = self._queued, []
        try:
            await self._writer.flush()
            answered = await self._write([answer for answer, _ in batch])
        except BaseException:
            # Not written, or not known to be: the next batch tries them again.
            self._queued[:0] = [(answer, future) for answer, future in batch if not future.done()]
            raise
        for answer, future in batch:
            if not future.done():
                future.set_result(answer.id in answered)

    async def _write(self, answers: list[RunTaskAnswer]) -> set[int]:
        now = self._clock.now_us()
        answered, unkept = await self._tasks.reply_all(answers, token=self._token, now=now)
        if not unkept:
            return answered
        # Text the journal cannot keep: the coordinator continues those runs from their
        # last checkpoint, as if their executor crashed.
        crashed = []
        for answer in answers:
            why = unkept.get(answer.id)
            if why is not None:
                _log.warning("run task %d: its reply cannot be kept: %s", answer.id, why)
                reply = {"crashed": f"its reply could not be kept: {why}"}
                crashed.append(RunTaskAnswer(answer.id, answer.attempts, reply))
        more, _ = await self._tasks.reply_all(crashed, token=self._token, now=now)
        return answered | more
