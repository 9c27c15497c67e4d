"""Whole run segments executed by the daemons standing by (shared journals).

`offering` is the coordinator's side (the active daemon offers segments of its runs and
journals how each ends), `serving` an executor's (a standby claims them and executes them
with a writer of its own), `wire` what they tell each other through `run_tasks`.
"""
