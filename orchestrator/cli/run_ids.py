"""Run ids as users type them: the whole id, or a unique prefix of it.

A prefix needs `MIN_PREFIX` characters (the dashboard shows 8). A journal that cannot be
used is reported first, as for any command; then a prefix too short is bad input, one the
journal holds no run for is `RunNotFound` (as an unknown whole id is), and one that several
runs start with lists the first `SHOWN` of them, each with its workflow and status, and how
many more there are. The lookup is the journal's (`match_runs`): one range of its run id
index, so a prefix is resolved as fast among 1,000,000 runs as among ten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import RunNotFound
from .arguments import UsageError, excerpt

if TYPE_CHECKING:
    from ..journal import RunMatches

MIN_PREFIX = 4
SHOWN = 5


def resolved(text: str, found: RunMatches, location: str) -> str:
    """The one run id `text` names, given the runs whose id starts with it (`found`).

    Raises:
        UsageError: `text` is shorter than `MIN_PREFIX`; or several runs' ids start with
            it and none is `text` itself (the message lists them).
        RunNotFound: No run's id starts with `text`.
    """
    if len(text) < MIN_PREFIX:
        raise UsageError(
            f"RUN_ID {excerpt(text)} is too short: give the run id, or at least "
            f"{MIN_PREFIX} characters of it"
        )
    if found.runs and (found.total == 1 or found.runs[0].run_id == text):
        return found.runs[0].run_id  # sorted by id, a whole id comes before its extensions
    if not found.runs:
        raise RunNotFound(f"no run {text!r} in journal {location}")
    lines = [f"  {run.run_id}  {run.workflow_id}  {run.status}" for run in found.runs]
    if found.total > len(found.runs):
        lines.append(f"  and {found.total - len(found.runs)} more")
    raise UsageError(
        f"RUN_ID {excerpt(text)} is ambiguous: {found.total} runs start with it; "
        "give more characters of the one you mean:",
        *lines,
    )
