"""Execution modes: what happens when work arrives while a workflow is busy.

A mode is frozen data on the workflow; the engine's `Gate` (``engine/gate.py``) applies it
to one workflow's runs. Paused runs hold the slot of every mode but `Transient`, whose
resumed runs wait for a slot at the front of its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import DefinitionError


@dataclass(frozen=True)
class Transient:
    """At most `concurrency` runs executing; up to `capacity` wait; beyond that, dropped.

    ``None`` means no limit. Paused runs do not hold a slot.
    """

    concurrency: int | None = None
    capacity: int | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "capacity"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if name == "concurrency" else 0)
            ):
                raise DefinitionError(
                    f"Transient {name} must be a whole number or None, got {value!r}"
                )


@dataclass(frozen=True)
class Serialized:
    """First in, first out, one run at a time; a paused run keeps the slot."""


@dataclass(frozen=True)
class SingletonLoop:
    """At most one active run (running or paused).

    A new dispatch is dropped, signalled into the active run (its data merged into that
    run's state), or aborts the active run and replaces it.
    """

    on_busy: Literal["drop", "signal", "replace"] = "drop"

    def __post_init__(self) -> None:
        if self.on_busy not in ("drop", "signal", "replace"):
            raise DefinitionError(
                f"SingletonLoop on_busy must be 'drop', 'signal' or 'replace', got {self.on_busy!r}"
            )


@dataclass(frozen=True)
class Exclusive:
    """At most one active run (running or paused).

    A new dispatch is rejected, or kept as the single pending run (the latest wins; the
    one it supersedes ends dropped).
    """

    on_busy: Literal["reject", "queue_single"] = "reject"

    def __post_init__(self) -> None:
        if self.on_busy not in ("reject", "queue_single"):
            raise DefinitionError(
                f"Exclusive on_busy must be 'reject' or 'queue_single', got {self.on_busy!r}"
            )


Mode = Transient | Serialized | SingletonLoop | Exclusive


def describe(mode: Mode) -> str:
    """The mode as written in Python, for the journal and the dashboard."""
    return repr(mode)
