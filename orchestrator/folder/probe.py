"""The subprocess that imports a workflow file once before the daemon does.

``python -m orchestrator.probe FILE CONFIG`` reads the file's bytes on stdin (the exact
version the daemon read) and the folder's settings as JSON in CONFIG (those the daemon
loads the file with), imports them as the daemon would and prints one JSON line: ``{"ok":
true}`` or ``{"ok": false, "line": ..., "message": ...}``. A file that hangs or exits at
import ends this process, not the daemon. ``--batch CONFIG`` probes several files in one
process (most of a probe's time is starting Python), for a folder loaded at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FORKED = (
    "the file forked a process at import (os.fork, multiprocessing): the daemon imports it "
    "too and would go on as two daemons; start processes inside a step instead"
)
_forks = 0


def _forking() -> None:
    global _forks
    _forks += 1


def main() -> None:
    """Probe the file named on the command line, or (``--batch CONFIG``) several files."""
    # A fork at import is a load error; its child ends at once, before any more of the file.
    os.register_at_fork(before=_forking, after_in_child=lambda: os._exit(0))
    if sys.argv[1] == "--batch":
        _batch(sys.argv[2])
    path = Path(sys.argv[1])
    data = sys.stdin.buffer.read()
    _detach_stdin()
    # Keep stdout for the report: what the file prints goes to stderr.
    report_to, sys.stdout = sys.stdout, sys.stderr
    print(json.dumps(_probe_one(path, data, sys.argv[2])), file=report_to, flush=True)
    # Threads or atexit handlers the file started must not keep the probe alive.
    os._exit(0)


def _batch(config: str) -> None:
    """Probe files one after another, one report line (with its index) as each is done.

    Stdin holds a JSON line listing ``[path, size]`` pairs, then the files' bytes in that
    order. A file that exits or hangs ends the batch; the daemon probes the files not
    reported yet one by one.
    """
    listing = json.loads(sys.stdin.buffer.readline())
    # Every file's bytes before any import: a file reading stdin at import must not eat
    # the next file's (which would then be probed as something it is not).
    files = [(path, sys.stdin.buffer.read(size)) for path, size in listing]
    _detach_stdin()
    report_to, sys.stdout = sys.stdout, sys.stderr
    for index, (path, data) in enumerate(files):
        report = {"index": index, **_probe_one(Path(path), data, config)}
        print(json.dumps(report), file=report_to, flush=True)
    os._exit(0)


def _detach_stdin() -> None:
    """Stdin from /dev/null from now on: an import reading it gets nothing, at once."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin


def _probe_one(path: Path, data: bytes, config_json: str) -> dict[str, object]:
    from .loader import FolderConfig, LoadFailed, check, decode, digest_of, execute, workflows_of

    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as in the daemon: helpers import by name
    forks = _forks
    try:
        config = FolderConfig(**json.loads(config_json))
        source = decode(data)
        tree = check(source, path, config.policy)
        module = execute(path, digest_of(data), source, tree, config.policy)
        workflows_of(module, tree)
        if _forks != forks:
            raise LoadFailed(FORKED)
    except LoadFailed as exc:
        return {"ok": False, "line": exc.line, "message": exc.message}
    return {"ok": True}


if __name__ == "__main__":
    main()
