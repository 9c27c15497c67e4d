"""``python -m orchestrator``: the same as the ``orchestrator`` command."""

from .cli.main import main

main()
