"""The subprocess that imports a workflow file once before the daemon does.

``python -m orchestrator.probe FILE CONFIG`` reads the file's bytes on stdin (the exact
version the daemon read) and the folder's settings as JSON in CONFIG (those the daemon
loads the file with), imports them as the daemon would and prints one JSON line: ``{"ok":
true}`` or ``{"ok": false, "line": ..., "message": ...}``. A file that hangs or exits at
import ends this process, not the daemon.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    """Probe the file named on the command line."""
    from .loader import FolderConfig, LoadFailed, check, decode, digest_of, execute, workflows_of

    path = Path(sys.argv[1])
    sys.path.insert(0, str(path.parent))  # as in the daemon: helpers (`_*.py`) import by name
    data = sys.stdin.buffer.read()
    # Keep stdout for the report: what the file prints goes to stderr.
    report_to, sys.stdout = sys.stdout, sys.stderr
    try:
        config = FolderConfig(**json.loads(sys.argv[2]))
        source = decode(data)
        tree = check(source, path, config.policy)
        module = execute(path, digest_of(data), source, tree, config.policy)
        workflows_of(module, tree)
        report: dict[str, object] = {"ok": True}
    except LoadFailed as exc:
        report = {"ok": False, "line": exc.line, "message": exc.message}
    print(json.dumps(report), file=report_to, flush=True)
    # Threads or atexit handlers the file started must not keep the probe alive.
    os._exit(0)


if __name__ == "__main__":
    main()
