"""Which final runs a prune takes: cutoffs (µs since the epoch) by status, from durations.

Backend-neutral and free of asyncio: the CLI's ``prune`` and the runtime both start here,
then hand the cutoffs to `JournalCommands.prune`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..clock import parse_duration
from ..records import FINAL_STATUSES

FINAL = frozenset(str(status) for status in FINAL_STATUSES)
"""The statuses a prune may take: runs that have ended."""


def cutoffs_for(
    now_us: int, older_than: float | str, statuses: Iterable[str] | None
) -> tuple[dict[str, int], int | None]:
    """Cutoffs (µs) by status for `Runtime.prune`, and the event sweep's (all statuses only).

    Raises:
        ValueError: A bad duration, or a status that is not final.
    """
    seconds = parse_duration(older_than)
    chosen = FINAL if statuses is None else _final(statuses)
    cutoff = now_us - int(seconds * 1_000_000)
    return dict.fromkeys(sorted(chosen), cutoff), cutoff if chosen == FINAL else None


def retention_cutoffs(
    now_us: int, retention: Mapping[str, float]
) -> tuple[dict[str, int], int | None]:
    """Cutoffs by status from ``[retention]`` (per status, else ``default``).

    Events routed to no run are swept only when every final status has a duration, at the
    longest of them.
    """
    default = retention.get("default")
    cutoffs: dict[str, int] = {}
    for status in sorted(FINAL):
        seconds = retention.get(status, default)
        if seconds is not None:
            cutoffs[status] = now_us - int(seconds * 1_000_000)
    events = min(cutoffs.values()) if set(cutoffs) == FINAL else None
    return cutoffs, events


def _final(statuses: Iterable[str]) -> frozenset[str]:
    if isinstance(statuses, str):
        statuses = [statuses]
    chosen = frozenset(str(status) for status in statuses)
    wrong = sorted(chosen - FINAL)
    if wrong or not chosen:
        raise ValueError(
            f"prune takes final statuses ({', '.join(sorted(FINAL))}), got {sorted(chosen)}; "
            "runs that have not ended are never pruned"
        )
    return chosen
