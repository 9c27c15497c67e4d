"""Idempotency keys of `emit` and `invoke`: a key seen before makes nothing new.

A runtime claims a key the way the CLI does, through the journal's commands: the key and
what it makes (an unrouted event, or an invoke command) commit in one ``BEGIN IMMEDIATE``
transaction, so any number of processes racing on one key write one row, and a crash
keeps both or neither. The runtime then routes that event, or applies that command, itself
(its effects and the routed or done mark in one batch); the inbox poller leaves the ids in
`here` alone. After a crash in between, the poller of the next start takes the row once.
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
        self._known: dict[tuple[str, str], str] = {}
        # Invariant: an event or run id claimed here is in `here` before its row commits,
        # and stays (a poller read begun before its routing committed may return it late).
        self.here: set[str] = set()

    def known(self, kind: str, key: str) -> str | None:
        """What `key` of `kind` made first, if this process remembers it (never waits)."""
        return self._known.get((kind, key))

    async def lookup(self, kind: str, key: str) -> str | None:
        """What `key` of `kind` made first (remembered, or in the journal), or None."""
        found = self._known.get((kind, key))
        if found is None:
            found = await self._reader.keyed(kind, key)
            if found is not None:
                self._known[kind, key] = found
        return found

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
        self._known["emit", key] = first
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
        self._known["invoke", key] = first
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
