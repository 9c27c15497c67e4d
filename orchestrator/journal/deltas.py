"""Checkpoints as deltas: a run's journal grows with what its steps change, not its state.

A checkpoint row holds either a whole state (a snapshot) or a JSON merge patch (RFC 7396)
against one snapshot of the same run, the checkpoint at position ``base``:

- ``base`` NULL: ``state`` is the whole state (every checkpoint written before deltas);
- ``base`` = its own position: a snapshot too large for the row, kept whole in
  ``snapshots`` under id `snapshot_id` (run, position); ``state`` is empty. On SQLite,
  checkpoints are a WITHOUT ROWID table, whose rows keep about 1 KB on their page and move
  the rest to an overflow page of its own: a 2 KB state cost 4 KB there, 2 KB in
  ``snapshots``;
- ``base`` < its position: ``state`` is a patch against that checkpoint, itself whole.

This module is the backend-neutral part: every backend's writer makes the same rows
(`Deltas`), so a journal copied between backends reads the same. Reading a checkpoint is
one snapshot and one patch, in each backend's SQL (SQLite: `sqlite.deltas.state_of`).

The writer makes the patches (`Deltas`): it keeps the text of each run's last
snapshot it committed, and writes a new checkpoint as a patch against it when the patch is
much smaller than the state; otherwise the checkpoint is a new snapshot. A patch is only
written when applying it gives back exactly the state's text (same keys in the same order,
same number literals: states are written in the compact encoding of `state.encode_state`),
so a reader sees what was journaled before this change. What the cache lacks (a restart, a
run evicted, a small state) is written whole: a miss costs bytes, never correctness.
Snapshots are never rewritten while patches name them: checkpoint positions of a run only
grow (`ops.checkpoint`, `ops.state_change`), and a row written at or below the cached
snapshot's position is written whole. A run's snapshots go with its row (a trigger).
"""

from __future__ import annotations

import json
from typing import Any

# States shorter than this (characters of their JSON) are always written whole, in their
# row: a patch could save little, and small states cost the writer no parsing and no cache.
MIN_DELTA_CHARS = 512
# States longer than this are written whole: parsing them for a patch would hold the
# writer's thread longer than writing them does.
MAX_DELTA_CHARS = 4 * 1024 * 1024
# Whole states at least this long go to `snapshots` (a row keeps ~1,000 bytes on its page).
SPILL_CHARS = 800
# A patch is written only if it is at most this fraction of the state's length.
MAX_DELTA_RATIO = 0.5
# The writer keeps at most this many characters of snapshot text (oldest runs evicted).
CACHE_CHARS = 64 * 1024 * 1024
# Snapshot ids: the run's row times this, plus the position (positions below it spill).
SPAN = 1 << 24


def snapshot_id(run: int, position: int) -> int:
    """The id in ``snapshots`` of the whole state of a run's checkpoint."""
    return run * SPAN + position


def _same(a: Any, b: Any) -> bool:
    """Whether two decoded JSON values encode to the same text (1, 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)  # 0.0 and -0.0 are equal but are written differently
    return bool(a == b)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns `old` into exactly `new`, or None if none can.

    A merge patch cannot set a value to null (null removes a key), and ``json_patch`` keeps
    kept keys in place and appends new ones: a `new` that needs anything else has no patch.
    """
    patch: dict[str, Any] = {}
    kept = [key for key in old if key in new]
    if kept + [key for key in new if key not in old] != list(new):
        return None  # the keys moved: a patch would give them in another order
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key in old:
            before = old[key]
            if _same(before, value):
                continue
            if isinstance(before, dict) and isinstance(value, dict):
                inner = merge_patch(before, value)
                if inner is None:
                    return None
                patch[key] = inner
                continue
        if not _patchable(value):
            return None
        patch[key] = value
    return patch


def _patchable(value: Any) -> bool:
    """Whether `value` comes out of ``json_patch`` as itself: no null in any object of it."""
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_patchable(v) for v in value.values())
    # Lists replace the old value whole, nulls and objects inside them included.
    return True


def _encode(value: dict[str, Any]) -> str:
    """A patch in the state encoding (`state.encode_state`'s separators and characters)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Deltas:
    """The writer's snapshots per run and the patches made against them.

    Used on the writer thread only. `encode` rewrites a batch's checkpoint rows; what it
    learns is kept only once that batch commits (`commit`), and forgotten if it does not
    (`discard`), so the cache only ever names committed snapshots.
    """

    def __init__(self, *, cache_chars: int = CACHE_CHARS) -> None:
        # Run row -> (position, text) of its last committed snapshot; oldest first.
        self._bases: dict[int, tuple[int, str]] = {}
        self._chars = 0
        self._limit = cache_chars
        # What the batch being applied changes: run row -> new snapshot (None: dropped).
        self._staged: dict[int, tuple[int, str] | None] = {}

    def encode(
        self, rows: list[tuple[Any, ...]]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
        """Checkpoint rows ``(run, position, step, started, ended, state, kind)`` as written.

        Each comes back with its ``base`` appended (see the module), and with the
        ``snapshots`` rows ``(id, state)`` to write beside them.
        """
        written, spilled = [], []
        staged, bases = self._staged, self._bases
        for row in rows:
            run, position, state = row[0], row[1], row[5]
            if len(state) < MIN_DELTA_CHARS:  # whole, in its row (`SPILL_CHARS` is more)
                if run in staged or run in bases:  # its snapshot is no base any more
                    staged[run] = None
                written.append((*row, None))
                continue
            base = staged[run] if run in staged else bases.get(run)
            patchable = MIN_DELTA_CHARS <= len(state) <= MAX_DELTA_CHARS
            if patchable and base is not None and base[0] < position:
                patch = _patch_text(base[1], state)
                if patch is not None:
                    written.append((*row[:5], patch, row[6], base[0]))
                    continue
            # Whole: the run's next snapshot, if its next states may be patches against it.
            self._staged[run] = (position, state) if patchable else None
            if len(state) >= SPILL_CHARS and 0 <= position < SPAN:
                spilled.append((snapshot_id(run, position), state))
                written.append((*row[:5], "", row[6], position))
            else:
                written.append((*row, None))
        return written, spilled

    def forget(self, runs: list[int]) -> None:
        """Runs that ended: their snapshots leave the cache when this batch commits."""
        for run in runs:
            self._staged[run] = None

    def commit(self) -> None:
        """The batch committed: keep what it wrote."""
        for run, base in self._staged.items():
            old = self._bases.pop(run, None)
            if old is not None:
                self._chars -= len(old[1])
            if base is not None:
                self._bases[run] = base
                self._chars += len(base[1])
        self._staged.clear()
        while self._chars > self._limit and self._bases:
            oldest = next(iter(self._bases))
            self._chars -= len(self._bases.pop(oldest)[1])

    def discard(self) -> None:
        """The batch did not commit: forget what it would have written."""
        self._staged.clear()

    def __len__(self) -> int:
        return len(self._bases)


def _patch_text(base: str, state: str) -> str | None:
    """`state` as a patch against `base` if that is much shorter, else None."""
    try:
        old, new = json.loads(base), json.loads(state)
    except (ValueError, RecursionError):
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    patch = merge_patch(old, new)
    if patch is None:
        return None
    text = _encode(patch)
    return text if len(text) <= len(state) * MAX_DELTA_RATIO else None
