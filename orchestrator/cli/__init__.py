"""Entry points: the ``orchestrator`` command, its output, the daemon, ``invoke --wait``.

The only layer that brings the engine and the dashboard (`tui`) together, and it imports
the dashboard lazily, when a command shows it.
"""
