"""The SQLite backend of the journal: one file in WAL mode, the only aiosqlite import.

Nothing outside `orchestrator.journal` imports this package: the engine, the CLI and the
dashboard reach it through the journal's API (its protocols and its factory).
"""
