"""The Textual dashboard: live runs, one run in detail, workflows, events, and actions.

It reads a journal through `orchestrator.journal.views` and writes through
`orchestrator.journal.commands`, never importing the runtime, so it runs in the daemon's
process (``orchestrator up``) or in another (``orchestrator tui``). The core never imports
this package. Start it with ``tui.app.DashboardApp(db_path).run()``.
"""
