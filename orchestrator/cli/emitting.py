"""What ``orchestrator emit`` says about its event: the runs it started or resumed, or why none.

Blocking, without asyncio (the writing commands start in well under 100 ms). With a live
daemon, it polls the journal (``data_version``, then the event's row) until the daemon has
routed the event, at most `ROUTING_WAIT` seconds, and reports what routing journaled: one
line per run started, queued, resumed or buffered for, or that nothing matched, with the
nearest event types something listens to. Without a daemon (or with ``--no-wait``) it says
whether the loaded workflows' triggers (as the daemon last registered them) or a waiting
run listen to the event's type.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any

from ..journal import EventListeners, EventRoute, EventRouting, JournalCommands, RoutingReads

ROUTING_WAIT = 5.0  # seconds emit waits for a live daemon to route its event
POLL_SECONDS = 0.01  # one `data_version` a poll: cheap
LIVENESS_POLLS = 25  # polls between two looks at whether the daemon still holds the lease
SHOWN = 5  # names listed in a line before "and N more"
CLOSE = 0.8  # how alike a known type must be to be suggested (difflib ratio: a typo or two)
# What a trigger's dispatch did to its run (a waiting run's routes are resumed/buffered).
_DISPATCHES = ("started", "queued", "dropped", "rejected", "signalled")
_BUSY = {"queued", "dropped", "rejected"}


@dataclass(frozen=True)
class EmitReport:
    """What the journal says about one emitted event, a moment after it was written.

    Attributes:
        event_id: The event's id (an idempotent emit's: the first event's).
        event_type: Its type.
        daemon: Whether a live daemon held the journal.
        waited: How long emit waited for routing at most (0: it did not wait).
        routed: Whether the daemon has routed it; `routes` is then complete.
        routes: What routing did to runs.
        listeners: The event types the loaded triggers and the waiting runs listen to.
        reused_key: The ``--key`` given, when an earlier event holds it: nothing new was
            written, and this is that event (its type, its routes).
    """

    event_id: str
    event_type: str
    daemon: bool
    waited: float
    routed: bool
    routes: list[EventRoute]
    listeners: EventListeners
    reused_key: str | None = None

    @property
    def listened(self) -> bool:
        """Whether an enabled trigger or a waiting run listens to this type (data aside)."""
        kind = self.event_type
        return bool(self.listeners.triggers.get(kind) or self.listeners.waits.get(kind))

    @property
    def matched(self) -> bool:
        """Routed: whether something took it. Not yet: whether something listens to its type."""
        return bool(self.routes) if self.routed else self.listened

    @property
    def suggestions(self) -> list[str]:
        """The known event types nearest to an unknown one (none for a known type)."""
        known = self.listeners.types()
        if self.event_type in known:
            return []
        return difflib.get_close_matches(self.event_type, sorted(known), n=3, cutoff=CLOSE)

    def lines(self) -> list[str]:
        """The report for a human: one line per effect, or one saying why there is none."""
        if self.reused_key is None:
            return self._effects()
        said = (
            f"key {self.reused_key!r} was used before, by event {self.event_id} "
            f"({self.event_type!r}): nothing new was emitted; what that event did:"
        )
        return [said, *self._effects()]

    def _effects(self) -> list[str]:
        if self.routed:
            return [_route_line(route) for route in self.routes] or [self._unmatched()]
        if self.daemon and self.waited > 0:
            return [
                f"accepted; the daemon has not routed it within {self.waited:g} s "
                "(`orchestrator logs -f` shows what it does)"
            ]
        if not self.listened:
            return [self._unmatched()]
        return [f"{self.event_type!r} is taken by {self._who()}{self._as_loaded()}"]

    def document(self) -> dict[str, Any]:
        """``emit --json``: the event, what routing did, and the nearest types."""
        return {
            "event_id": self.event_id,
            "type": self.event_type,
            "routed": self.routed,
            "started": [_route_json(r) for r in self.routes if r.action in _DISPATCHES],
            "resumed": [_route_json(r) for r in self.routes if r.action == "resumed"],
            "buffered": [_route_json(r) for r in self.routes if r.action == "buffered"],
            "matched": self.matched,
            "listened": self.listened,
            "suggestions": self.suggestions,
            "reused": self.reused_key is not None,
        }

    def _unmatched(self) -> str:
        kind, off = self.event_type, self.listeners.disabled.get(self.event_type, [])
        verb = "matched" if self.routed else "listens to"
        head = f"no trigger or waiting run {verb} {kind!r}"
        if self.listened:  # routed, and nothing took it: its data met no condition
            return f"{head}: its data does not meet the conditions of {self._who()}"
        if off:
            return f"{head}: its triggers are disabled ({_names(off)})"
        nearest = self.suggestions
        if nearest:
            return f"{head}; did you mean {' or '.join(repr(t) for t in nearest)}?"
        known = sorted(self.listeners.types())
        if known:
            return f"{head}; the known event types: {_names(known)}"
        return f"{head}; nothing in this journal listens to events (no workflow loaded)"

    def _who(self) -> str:
        kind = self.event_type
        who = list(self.listeners.triggers.get(kind, []))
        waiting = self.listeners.waits.get(kind, 0)
        if waiting:
            who.append(f"{waiting} waiting run" + ("s" if waiting > 1 else ""))
        return _names(who)

    def _as_loaded(self) -> str:
        if not self.daemon:
            return " (as the daemon last loaded them); a daemon routes it when it starts"
        return " (not waiting for the daemon to route it)"


def report(
    commands: JournalCommands,
    event_id: str,
    event_type: str,
    *,
    wait: float,
    reused_key: str | None = None,
) -> EmitReport:
    """What the journal says about the event: waits up to `wait` s for a live daemon.

    `reused_key`: the event is an earlier one, which holds that key (its type may differ).
    """
    with commands.routing_reads() as reads:
        daemon = reads.daemon_live()
        waited = wait if daemon else 0.0
        routing = _routed(reads, event_id, waited)
        if routing is not None and not routing.routed and waited > 0:
            daemon = reads.daemon_live()  # it may have stopped meanwhile
        listeners = reads.event_listeners()
    return EmitReport(
        event_id=event_id,
        event_type=routing.event_type if routing is not None else event_type,
        daemon=daemon,
        waited=waited,
        routed=routing is not None and routing.routed,
        routes=routing.routes if routing is not None else [],
        listeners=listeners,
        reused_key=reused_key,
    )


def _routed(reads: RoutingReads, event_id: str, wait: float) -> EventRouting | None:
    """The event's routing once routed, or as it is after `wait` s (or once the daemon died)."""
    deadline, version, routing, polls = time.monotonic() + wait, None, None, 0
    while True:
        seen = reads.data_version()
        if seen != version:  # a commit landed: read the event again
            version, routing = seen, reads.event_routing(event_id)
        if routing is None or routing.routed or time.monotonic() >= deadline:
            return routing
        polls += 1
        if polls % LIVENESS_POLLS == 0 and not reads.daemon_live():
            return routing  # killed or stopped: nothing routes it before the next daemon
        time.sleep(POLL_SECONDS)


def _route_line(route: EventRoute) -> str:
    run = f"run {route.run_id}"
    if route.action == "resumed":
        return f"resumed {run} ({route.workflow_id})"
    if route.action == "buffered":
        return f"buffered for {run} ({route.workflow_id}): it takes it when it pauses for it"
    line = f"{route.action} {run} ({route.workflow_id}/{route.trigger_id})"
    return f"{line}: its workflow is busy" if route.action in _BUSY else line


def _route_json(route: EventRoute) -> dict[str, str]:
    return {
        "run_id": route.run_id,
        "workflow_id": route.workflow_id,
        "trigger_id": route.trigger_id,
        "action": route.action,
    }


def _names(names: list[str]) -> str:
    """`names` joined, the first `SHOWN` of them and how many more."""
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")
