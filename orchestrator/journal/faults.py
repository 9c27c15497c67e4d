"""Named fault points where a test can make the journal writer crash, or fail for a while.

A crash test arms a point; when the writer reaches it, it raises `SimulatedCrash`, which
the writer treats like a power cut: the open transaction is dropped, nothing more is
written, and the lease is left behind as a dead process would leave it. `fail` makes the
next commits fail as a full disk would (`SimulatedDiskFull`): the writer keeps the batch
and retries it.
"""

from __future__ import annotations

import threading

BEFORE_COMMIT = "writer.before_commit"
AFTER_COMMIT = "writer.after_commit"
POINTS = frozenset({BEFORE_COMMIT, AFTER_COMMIT})


class SimulatedDiskFull(Exception):
    """Raised before a commit while `FaultPoints.fail` has failures left: a transient error."""


class SimulatedCrash(BaseException):
    """Raised at an armed fault point. A BaseException so no handler mistakes it for an error."""


class FaultPoints:
    """A set of armed points, each firing once after `after` passes."""

    def __init__(self) -> None:
        self._armed: dict[str, int] = {}
        self._failures = 0
        self._lock = threading.Lock()

    def fail(self, times: int) -> None:
        """Make the next `times` commits fail with "database or disk is full"."""
        with self._lock:
            self._failures = times

    @property
    def failures_left(self) -> int:
        """How many commits `fail` will still make fail."""
        return self._failures

    def arm(self, point: str, *, after: int = 0) -> None:
        """Fire at `point` once it has been passed `after` more times."""
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS)}")
        with self._lock:
            self._armed[point] = after

    def hit(self, point: str) -> None:
        """Called by the writer at `point`; raises if the point is armed and due."""
        with self._lock:
            if point == BEFORE_COMMIT and self._failures > 0:
                self._failures -= 1
                raise SimulatedDiskFull("database or disk is full (simulated)")
            remaining = self._armed.get(point)
            if remaining is None:
                return
            if remaining > 0:
                self._armed[point] = remaining - 1
                return
            del self._armed[point]
        raise SimulatedCrash(point)
