from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres import Cluster, NoPostgres, start_cluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# What running the examples by hand leaves in examples/: never copied into a test.
OUTPUTS = shutil.ignore_patterns(
    "*.db",
    "*.db-*",
    "alerts",
    "batches",
    "inbox",
    "outbox",
    "reports",
    "queue",
    "releases",
    "__pycache__",
)


@pytest.fixture
def backend() -> str:
    """The journal backend of `db`: SQLite, unless the module runs on both (below)."""
    return "sqlite"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked ``both_backends`` runs each test taking `db` on SQLite and PostgreSQL.

    A test that reads the SQLite file itself (``sqlite3``, `procs.query`) is marked
    ``sqlite_only`` and keeps one backend.
    """
    node = metafunc.definition
    if (
        "db" in metafunc.fixturenames
        and node.get_closest_marker("both_backends") is not None
        and node.get_closest_marker("sqlite_only") is None
    ):
        metafunc.parametrize("backend", ["sqlite", "postgres"])


@pytest.fixture
def db(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Path | str:
    """A fresh journal: a path in the test's own folder, or a new PostgreSQL database's URL."""
    if backend == "postgres":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(request.node.name)
    return tmp_path / "journal.db"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A private copy of examples/ (the examples write files next to themselves)."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=OUTPUTS)
    return copy


_started: list[Cluster] = []


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session (see tests/postgres.py).

    Skipped only where no PostgreSQL is installed, and never in CI (``CI=true``), which
    must run these tests: `.ci/run` installs the server.
    """
    missing = None
    if importlib.util.find_spec("psycopg") is None:
        missing = "psycopg is not installed (pip install -e '.[dev,postgres]')"
    else:
        try:
            cluster = start_cluster()
        except NoPostgres as exc:
            missing = f"{exc}: install Debian's postgresql package"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}; CI must run the PostgreSQL tests")
        pytest.skip(missing)
    _started.append(cluster)
    atexit.register(cluster.stop)  # also when the session ends by Ctrl-C
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the session's PostgreSQL, for this test alone: its URL."""
    return pg_cluster.create_database(request.node.name)


@pytest.fixture
def own_cluster(pg_cluster: Cluster) -> Iterator[Cluster]:
    """A server of this test alone (it may stop it under its daemons); skipped as `pg_cluster`."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cluster in _started:
        terminalreporter.write_line(
            f"PostgreSQL for the tests: started in {cluster.start_seconds:.1f} s "
            f"({cluster.bindir.parent.name}, port {cluster.port})"
        )
