"""Idle CPU of the headless daemon and of the dashboard: % of one core over N seconds.

Prints figures; it is not a test. Run: ``python bench/bench_idle.py [--seconds N] [--quick]
[--keys K]`` (`--keys 4`: the dashboards show the log pane; ``2``: the workflows and figures).

Each program is started as its own process, exactly as a user would: ``orchestrator up
FOLDER --headless`` on an empty folder, then ``orchestrator tui --db JOURNAL`` (inside a
pseudo-terminal, 120x40) on that daemon's journal while the daemon runs. After a warm-up
(the daemon's lease marked ready; 3 s for the dashboard's first paint) the script reads the
process's user + system CPU time from ``/proc/PID/stat``, sleeps N seconds (60 by default),
reads it again and prints the difference as a percentage of one core. Last, ``orchestrator
up FOLDER`` in a pseudo-terminal: the daemon and its dashboard in one process. Linux only.

Then the price of idling: with the daemon idle (its inbox poller backed off), the script
emits an event (as `orchestrator emit` does) after a random 0.2-1 s pause, 20 times, and
prints how long each took from its commit (`events.created_at`) until the daemon had routed
it (`events.routed_at`, committed by the daemon's writer).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import random
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from common import daemon, machine_line, read_journal

WARM_UP = 3.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc/PID/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, seconds: float) -> float:
    """% of one core that process `pid` used over the next `seconds`."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def start_on_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """`orchestrator ARGS` in a 120x40 pseudo-terminal; returns it and the terminal's end."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    return proc, master


def drain(master: int, seconds: float) -> int:
    """Read (and drop) what the dashboard paints, so it never blocks on a full terminal.

    Returns how many bytes it painted (0: it is not running).
    """
    painted = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                painted += len(os.read(master, 65536))
            except OSError:
                break
    return painted


def measure_dashboard(pid: int, master: int, seconds: float, keys: str = "") -> float:
    if not drain(master, WARM_UP):
        raise SystemExit("the dashboard painted nothing: it did not start")
    if keys:  # another screen (4: the log pane), shown before the window opens
        os.write(master, keys.encode())
        drain(master, 1.0)
    before, started = cpu_seconds(pid), time.monotonic()
    drain(master, seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def emit_latencies(db: Path, count: int) -> list[float]:
    """Milliseconds from an event's commit until the daemon routed it, `count` times."""
    from orchestrator.journal import open_journal

    commands = open_journal(str(db)).commands
    latencies = []
    for n in range(count):
        time.sleep(random.uniform(0.2, 1.0))
        event_id = commands.emit_event("bench.ping", {"n": n}, key=None)
        deadline = time.monotonic() + 30
        while True:
            ((created, routed),) = read_journal(
                db, "SELECT created_at, routed_at FROM events WHERE event_id = ?", (event_id,)
            )
            if routed is not None:
                latencies.append((routed - created) / 1000)
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"event {event_id} was not routed within 30 s")
            time.sleep(0.002)
    return latencies


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window (60)")
    parser.add_argument("--quick", action="store_true", help="10 s windows, for a smoke run")
    parser.add_argument(
        "--keys", default="", help="keys typed into each dashboard first (4: the log pane)"
    )
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds
    print(machine_line())
    print(f"idle CPU over {seconds:g} s, % of one core (goal: daemon < 1%, dashboard < 3%)")
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        folder, db = Path(tmp, "flows"), Path(tmp, "j.db")
        folder.mkdir()
        with daemon(folder, db) as up:
            daemon_pct = measure(up.pid, seconds)
            print(f"  headless daemon, empty folder   {daemon_pct:6.2f}%")
            latencies = emit_latencies(db, 5 if args.quick else 20)
            print(
                f"  emit -> routed by the idle daemon, ms: median "
                f"{statistics.median(latencies):.1f}, max {max(latencies):.1f} "
                f"({len(latencies)} events)"
            )
            dashboard, master = start_on_terminal("tui", "--db", str(db))
            try:
                dash_pct = measure_dashboard(dashboard.pid, master, seconds, args.keys)
            finally:
                dashboard.kill()  # it holds no lease: nothing to leave behind
                dashboard.wait()
                os.close(master)
            print(f"  dashboard (tui), idle journal   {dash_pct:6.2f}%")
        both, master = start_on_terminal("up", str(folder), "--db", str(Path(tmp, "up.db")))
        try:
            both_pct = measure_dashboard(both.pid, master, seconds, args.keys)
        finally:
            both.terminate()
            try:
                both.wait(timeout=30)
            except subprocess.TimeoutExpired:
                both.kill()
                both.wait()
            os.close(master)
        print(f"  up on a terminal (daemon + dashboard, one process) {both_pct:6.2f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
