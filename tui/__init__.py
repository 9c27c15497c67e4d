"""The Textual dashboard: live runs, one run in detail, workflows, events, and actions.

It reads a journal through its `DashboardViews` and writes through its `JournalCommands`
(both from `orchestrator.journal.open_journal`), never importing the runtime or a journal
backend, so it runs in the daemon's process (``orchestrator up``) or in another
(``orchestrator tui``). The core never imports this package. Start it with
``tui.app.DashboardApp(db).run()``.
"""
