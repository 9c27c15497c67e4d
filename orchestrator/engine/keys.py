"""Idempotency keys of `emit` and `invoke`: a key seen before makes nothing new.

A runtime claims a key the way the CLI does, through the journal's commands: the key and
what it makes (an unrouted event, or an invoke command) commit in one ``BEGIN IMMEDIATE``
transaction, so any number of processes racing on one key write one row, and a crash
keeps both or neither. The runtime then routes that event, or applies that command, itself
(its effects and the routed or done mark in one batch); the inbox poller leaves the ids in
`here` alone. After a crash in between, the poller of the next start takes the row once.

A key lives as long as what it made: a prune deletes the key with its run or event, and
the key may then start a new one. So keys are looked up in the journal every time, never
remembered here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..clock import new_id
from ..journal import JournalCommands, JournalQueries


class Keys:
    """The idempotency keys this process knows, and the rows it applies itself."""

    def __init__(self, commands: JournalCommands, reader: JournalQueries) -> None:
        self._commands, self._reader = commands, reader
        # Invariant: an event or run id claimed here is in `here` before its row commits,
        # and stays (a poller read begun before its routing committed may return it late).
        self.here: set[str] = set()

    async def lookup(self, kind: str, key: str) -> str | None:
        """What `key` of `kind` made first, as the journal says now, or None."""
        return await self._reader.keyed(kind, key)

    async def claim_event(
        self, event_type: str, data: dict[str, Any], source: str, key: str
    ) -> tuple[str, bool]:
        """Journal an unrouted event under `key`; returns its id and whether it is new."""
        first = await self.lookup("emit", key)
        if first is not None:
            return first, False
        event_id = new_id()
        self.here.add(event_id)
        first = await self._claim(
            lambda: self._commands.emit_event(
                event_type, data, source=source, key=key, event_id=event_id
            ),
            event_id,
        )
        return first, first == event_id

    async def claim_invoke(
        self, workflow_id: str, trigger_id: str, data: dict[str, Any], key: str
    ) -> tuple[str, int | None]:
        """Queue an invoke command under `key`; returns the run id and the new command's id."""
        first = await self.lookup("invoke", key)
        if first is not None:
            return first, None
        run_id = new_id()
        self.here.add(run_id)
        claimed: list[int | None] = []

        def write() -> str:
            first, command = self._commands.claim_invoke(
                run_id, workflow_id, trigger_id, data, key=key
            )
            claimed.append(command)
            return first

        first = await self._claim(write, run_id)
        return first, claimed[0]

    async def _claim(self, write: Any, target: str) -> str:
        try:
            first: str = await asyncio.to_thread(write)
        except BaseException:
            self.here.discard(target)  # nothing committed: there is no row to leave alone
            raise
        if first != target:
            self.here.discard(target)
        return first
