"""Isolated steps: worker processes that run steps a fault must not take the daemon with.

`plan` decides which steps are isolated and how a worker finds each; `pool` keeps the
warm workers on the daemon's side; `child` is a worker process; `wire` is what they say.
"""

from .plan import Plan, plan_isolation
from .pool import StepRef, WorkerCrashed, WorkerPool, Workers

__all__ = ["Plan", "StepRef", "WorkerCrashed", "WorkerPool", "Workers", "plan_isolation"]
