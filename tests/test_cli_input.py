"""Bad input on the command line: exit 2 and one line on stderr, never a traceback.

Each case here once ended in a traceback (exit 1). Arguments are passed as bytes, as a
shell passes them: on Linux an argument that is not valid UTF-8 reaches Python with each
bad byte as a lone surrogate.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from procs import query
from test_cli import ROOT, seed

from orchestrator import JournalPathInvalid, Runtime

DEEP = b"[" * 100_000
LONG_NUMBER = b'{"n": ' + b"1" * 5000 + b"}"


def run(
    *args: str | bytes, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def refused(out: subprocess.CompletedProcess[bytes]) -> str:
    """The one error line of a command refused as bad input."""
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["emit", "order.created", b'{"a": "\xff"}'], "JSON is not valid UTF-8 (byte 0xff"),
        (["emit", b"order.\xffcreated"], "TYPE is not valid UTF-8 (byte 0xff at character 7)"),
        (["abort", b"r\xfe"], "RUN_ID is not valid UTF-8 (byte 0xfe"),
        (["resume", b"r\xfe", "{}"], "RUN_ID is not valid UTF-8"),
        (["signal", "r", b'{"a": "\xc3"}'], "JSON is not valid UTF-8 (byte 0xc3"),
        (["show", b"r\xfe"], "RUN_ID is not valid UTF-8"),
        (["invoke", b"w\xff", "go"], "WORKFLOW is not valid UTF-8"),
        (["runs", "--workflow", b"w\xff"], "--workflow is not valid UTF-8"),
        (["emit", "t", r'{"a": "\udc80"}'], "lone surrogate"),
        (["emit", "t", LONG_NUMBER], "integer beyond 64 bits"),
        (["emit", "t" * 100_000], "an event type is at most 1024 characters, got 100,000"),
        (["emit", "t", DEEP], "nests deeper than 64 levels"),
        (["emit", "t", b'{"a": 1,\n,}'], "not valid JSON: Expecting property name"),
        (["runs", "--limit", b"1" * 5000 + b"x"], "argument --limit: expected a whole number"),
        (["runs", "--limit", "0"], "argument --limit: expected a number >= 1"),
        (["prune", "--older-than", "1e308s"], "at most 31,536,000,000 s (a thousand years)"),
        (["prune", "--older-than", "99999999999999999999d"], "a thousand years"),
        (["runs", "--status", "\x1b[2J"], r"invalid choice: '\x1b[2J'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["invoke", "w" * 100_000, "go"], "workflow id 'wwwww"),
        (["invoke", "w", "bad trigger"], "trigger id 'bad trigger' is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(db: Path, args: list[str | bytes], says: str) -> None:
    seed(db)
    before = query(db, "SELECT count(*) FROM events") + query(db, "SELECT count(*) FROM inbox")
    err = refused(run(*args, "--db", str(db)))
    assert says in err
    assert "\x1b" not in err
    after = query(db, "SELECT count(*) FROM events") + query(db, "SELECT count(*) FROM inbox")
    assert after == before, "nothing was written"


def test_a_limit_larger_than_sqlite_takes_lists_every_run(db: Path) -> None:
    ok, bad = seed(db)
    out = run("runs", "--limit", "99999999999999999999", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert ok.encode() in out.stdout and bad.encode() in out.stdout


@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["show", "RUN"], ["emit", "t"]])
def test_a_closed_stdout_is_quiet_and_exits_141(db: Path, command: list[str]) -> None:
    """`orchestrator runs | head -0`, or stdout closed: no "Exception ignored" noise."""
    ok, _ = seed(db)
    args = [ok if arg == "RUN" else arg for arg in command]
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the command writes
    try:
        out = run(*args, "--db", str(db), stdout=writer)
    finally:
        os.close(writer)
    assert (out.returncode, out.stderr) == (141, b"")
    closed = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert (closed.returncode, closed.stderr) == (141, b"")


def test_a_reader_that_stops_early_is_no_error(db: Path) -> None:
    seed(db)
    pipeline = subprocess.run(
        f"{sys.executable} -m orchestrator runs --db {db} | head -0",
        shell=True,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert pipeline.returncode == 0 and pipeline.stderr == b""


# -- the journal's path: each storage error named for what it is ----------------------------


def cli_as_user(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI without the power to ignore file permissions (root keeps its uid, not that)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        drop = [f"{setpriv}", "--bounding-set=-dac_override,-dac_read_search", "--"]
        if setpriv is None or subprocess.run([*drop, "true"], check=False).returncode != 0:
            pytest.skip("running as root, and cannot drop the capability to bypass permissions")
        prefix = drop
    return subprocess.run(
        [*prefix, sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


WRITING = [["emit", "t", "{}"], ["invoke", "w", "go"], ["abort", "r"], ["resume", "r"]]
READING = [["runs"], ["runs", "--json"], ["show", "r"], ["workflows"]]


@pytest.mark.parametrize("args", WRITING + READING)
def test_a_directory_is_no_journal(tmp_path: Path, args: list[str]) -> None:
    for _ in range(3):  # the aiosqlite traceback ("Event loop is closed") came now and then
        err = refused(run(*args, "--db", str(tmp_path)))
        assert "is a directory, not a file" in err and "JOURNAL_PATH_INVALID" in err
    assert list(tmp_path.iterdir()) == []


# Every other command that writes to the journal (`up` takes the folder of workflows too).
ALSO_WRITING = [
    ["signal", "r", "{}"],
    ["retry", "r"],
    ["fork", "r"],
    ["disable", "w"],
    ["enable", "w", "t"],
    ["up", "FOLDER", "--headless"],
]


@pytest.mark.parametrize("args", WRITING + ALSO_WRITING)
def test_writing_commands_create_no_missing_folder(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "nodir" / "deeper" / "j.db"
    args = [str(tmp_path) if arg == "FOLDER" else arg for arg in args]
    err = refused(run(*args, "--db", str(db)))
    assert f"its folder {db.parent} does not exist" in err and "JOURNAL_PATH_INVALID" in err
    assert list(tmp_path.iterdir()) == []
    assert run("runs", "--db", str(db)).stdout == b"no runs\n", "reading: an empty result"


# Every command that opens a journal path to read it, as well as `logs -f` and `prune`.
ALSO_READING = [["logs"], ["logs", "-f"], ["logs", "r"], ["prune", "--older-than", "1d"]]


@pytest.mark.parametrize("args", WRITING + ALSO_WRITING + READING + ALSO_READING)
def test_a_fifo_is_no_journal_and_is_never_waited_on(tmp_path: Path, args: list[str]) -> None:
    """`runs`, `workflows` and `logs` took a FIFO for a journal not made yet ("no runs", exit
    0; `logs -f` waited for ever), writers said "disk I/O error": each says what it is now."""
    db = tmp_path / "j.db"
    os.mkfifo(db, 0o600)
    (tmp_path / "flows").mkdir()
    args = [str(tmp_path / "flows") if arg == "FOLDER" else arg for arg in args]
    err = refused(run(*args, "--db", str(db)))
    assert f"journal {db} is a FIFO (named pipe), not a regular file" in err
    assert "JOURNAL_PATH_INVALID" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows", "j.db"]
    assert stat.S_ISFIFO(db.stat().st_mode)


def test_a_fifo_is_no_journal_to_copy(tmp_path: Path) -> None:
    """It was "empty: there is no journal to copy"; checked before any server is reached."""
    db = tmp_path / "j.db"
    os.mkfifo(db, 0o600)
    err = refused(run("journal", "copy", str(db), "postgresql://nobody@127.0.0.1:1/none"))
    assert "is a FIFO (named pipe), not a regular file" in err


def test_a_socket_is_no_journal(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(db))
        err = refused(run("runs", "--db", str(db)))
    assert f"journal {db} is a socket, not a regular file" in err


async def test_a_runtime_creates_no_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(JournalPathInvalid, match="does not exist"):
        async with Runtime(tmp_path / "nodir" / "j.db"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_folder_is_permission_denied_not_corruption(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "j.db"
    seed(db)
    # The premise: no -wal and -shm beside the journal, so SQLite must create them, which
    # the folder refuses. (Where they exist, the journal is read and written in a read-only
    # folder as anywhere.) A stopped runtime leaves none: its last connection removes them.
    assert sorted(p.name for p in folder.iterdir()) == ["j.db"]
    folder.chmod(0o555)
    try:
        for args in (["runs"], ["show", "r"], ["emit", "t"], ["abort", "r"]):
            out = cli_as_user(*args, "--db", str(db))
            err = refused(out)
            assert "JOURNAL_PERMISSION_DENIED" in err and f"its folder {folder} is not" in err
        out = cli_as_user("emit", "t", "--db", str(folder / "new.db"))
        assert "JOURNAL_PERMISSION_DENIED" in refused(out)
    finally:
        folder.chmod(0o755)


def test_an_unreadable_journal_is_permission_denied(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    seed(db)
    db.chmod(0o000)
    try:
        for args in (["runs"], ["show", "r"], ["emit", "t"]):
            for _ in range(3):
                err = refused(cli_as_user(*args, "--db", str(db)))
                assert "JOURNAL_PERMISSION_DENIED" in err and f"journal {db}" in err
    finally:
        db.chmod(0o600)


def test_a_damaged_journal_says_how_to_recover(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    db.write_bytes(b"not a database at all\n" * 50)
    for args in (["runs"], ["emit", "t"]):
        err = refused(run(*args, "--db", str(db)))
        assert "JOURNAL_CORRUPT" in err and "restore the journal from a backup" in err
        assert f"sqlite3 {db} .recover" in err


def test_a_damaged_schema_page_is_corruption_not_a_traceback(tmp_path: Path) -> None:
    """A table's name in the schema turned into bytes that are not UTF-8: SQLite quotes it
    in its error message, which Python cannot decode."""
    import sqlite3

    db = tmp_path / "j.db"
    assert run("emit", "t", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    data = bytearray(db.read_bytes())
    at = data.find(b"tableevents")
    assert at > 0
    data[at + len(b"table") + 1] = 0xFF
    db.write_bytes(bytes(data))
    for args in (["runs"], ["emit", "t"], ["workflows"], ["show", "abc"]):
        err = refused(run(*args, "--db", str(db)))
        assert "JOURNAL_CORRUPT" in err and "not UTF-8" in err, err
    (tmp_path / "flows").mkdir()
    err = refused(run("up", str(tmp_path / "flows"), "--headless", "--db", str(db)))
    assert "JOURNAL_CORRUPT" in err, err


@pytest.mark.parametrize("command", [["emit", "t", "{}"], ["runs"], ["up", ".", "--headless"]])
def test_an_orchestrator_db_that_is_not_utf8_is_refused_as_db_is(
    tmp_path: Path, command: list[str]
) -> None:
    env = {**os.environ, "ORCHESTRATOR_DB": os.fsdecode(bytes(tmp_path) + b"/j\xff.db")}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    err = refused(out)
    assert "$ORCHESTRATOR_DB is not valid UTF-8 (byte 0xff" in err
    assert os.listdir(tmp_path) == [], "no journal was created"


def test_up_refuses_a_folder_whose_path_is_not_utf8(tmp_path: Path) -> None:
    folder = os.fsdecode(bytes(tmp_path) + b"/flows-\xff")
    os.mkdir(folder)
    err = refused(run("up", folder, "--headless", "--db", str(tmp_path / "j.db")))
    assert "flows-\\xff has a path that is not valid UTF-8" in err
    assert "rename it" in err
    assert not (tmp_path / "j.db").exists()
