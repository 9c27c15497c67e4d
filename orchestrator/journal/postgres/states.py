"""Checkpoint states as read: a snapshot, or a merge patch applied to its base, in Python.

A checkpoint row holds its whole state (``base`` NULL), or its whole state in
``snapshots`` (``base`` its own position), or an RFC 7396 merge patch against the
checkpoint at ``base``, itself whole (the SQLite journal's `sqlite/deltas.py` explains
why). SQLite applies the patch in SQL (``json_patch``). PostgreSQL's ``jsonb`` would
reorder keys and rewrite numbers, so here a query selects two columns per checkpoint
(`parts`): the whole text it rests on and the patch, if any, and `state_text` applies the
patch as ``json_patch`` does: kept keys in place, new keys appended, null removes a key,
the result in the compact encoding states are journaled in. A patch is only ever written
when applying it gives back the state's exact text, so the text read is the one written.
"""

from __future__ import annotations

import json
from typing import Any

# The snapshot id of checkpoint (run, position): run * _SPAN + position (sqlite/deltas.py).
_SPAN = 1 << 24
# What a checkpoint whose snapshot is missing or damaged reads as (the SQLite reader's
# text): not JSON, so readers show it as unreadable instead of failing.
UNREADABLE = "unreadable: a delta checkpoint whose snapshot is missing or damaged"

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _whole(alias: str) -> str:
    """The whole state of `alias`, a checkpoint row known to be a snapshot (NULL: missing)."""
    return (
        f"CASE WHEN {alias}.base IS NULL THEN {alias}.state ELSE (SELECT s.state FROM"
        f" snapshots s WHERE s.id = {alias}.run * {_SPAN} + {alias}.position) END"
    )


def parts(alias: str, name: str = "state") -> str:
    """Two columns of checkpoint row `alias`: ``{name}_whole`` and ``{name}_patch``.

    ``_whole`` is the state the checkpoint rests on: its own, or its base's (NULL when
    missing); ``_patch`` is its merge patch, NULL when the checkpoint is whole.
    """
    return (
        f"CASE WHEN {alias}.base IS NULL THEN {alias}.state"
        f" WHEN {alias}.base = {alias}.position THEN ({_whole(alias)})"
        f" ELSE (SELECT {_whole('b')} FROM checkpoints b"
        f" WHERE b.run = {alias}.run AND b.position = {alias}.base"
        f" AND (b.base IS NULL OR b.base = b.position)) END AS {name}_whole,"
        f" CASE WHEN {alias}.base <> {alias}.position THEN {alias}.state END AS {name}_patch"
    )


def state_text(whole: str | None, patch: str | None) -> str:
    """The state's text from the two columns of `parts` (`UNREADABLE` if it cannot be made)."""
    if patch is None:
        return UNREADABLE if whole is None else whole
    if whole is None:
        return UNREADABLE
    try:
        merged = merge(_strict(whole), _strict(patch))
        return _ENCODER.encode(merged)
    except (ValueError, RecursionError):
        return UNREADABLE  # as json_valid() refusing either text


def merge(target: Any, patch: Any) -> Any:
    """RFC 7396 MergePatch, as SQLite's ``json_patch``: kept keys stay in place."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def _strict(text: str) -> Any:
    """`text` parsed as strict JSON (no NaN or Infinity, as SQLite's ``json_valid``)."""
    return json.loads(text, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
