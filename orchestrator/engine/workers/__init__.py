"""Isolated steps: worker processes that run steps a fault must not take the daemon with.

`plan` decides which steps are isolated and how a worker finds each; `pool` keeps the
warm workers on the daemon's side; `child` is a worker process; `wire` is what they say.
On a journal several daemons share, `spread` offers steps to the standbys, `serve` is a
standby running them, and `jobs` is what the two say through the journal.
"""

from .plan import Plan, plan_isolation
from .pool import StepRef, StepRunner, WorkerCrashed, WorkerPool, Workers
from .serve import StepServer
from .spread import SpreadPool

__all__ = [
    "Plan",
    "SpreadPool",
    "StepRef",
    "StepRunner",
    "StepServer",
    "WorkerCrashed",
    "WorkerPool",
    "Workers",
    "plan_isolation",
]
