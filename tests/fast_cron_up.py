"""``orchestrator`` with cron minutes lasting one second: ``python tests/fast_cron_up.py up ...``.

The chaos test (`tests/test_pg_chaos.py`) needs a schedule that ticks many times while it
runs, but a cron expression's finest tick is a minute. This runs the real command line
(`orchestrator.cli.main.main`, so ``up`` as users start it) with one change: every
schedule ticks on each whole second of the epoch, whatever its expression. Everything
else the scheduler does (its journaled last tick, catch-up after downtime, one run per
tick) is the daemon's own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import tzinfo

from orchestrator.cli.main import main
from orchestrator.define import schedules

SECOND_US = 1_000_000


def every_second(cron: str, zone: tzinfo, after_us: int) -> Iterator[int]:
    """Ticks strictly after `after_us`, one on each whole second (for `schedules._ticks`)."""
    tick = (after_us // SECOND_US + 1) * SECOND_US
    while True:
        yield tick
        tick += SECOND_US


schedules._ticks = every_second  # the one change this launcher makes

if __name__ == "__main__":
    main()
