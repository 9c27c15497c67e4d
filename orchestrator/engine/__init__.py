"""A started runtime: routing, admission under modes, execution, parking, timers, recovery.

`runtime.Runtime` is the composition root; everything it writes goes through the journal
seam (`orchestrator.journal`).
"""
