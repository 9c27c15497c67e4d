from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
def db(tmp_path: Path) -> Path:
    """A fresh journal path in the test's own folder."""
    return tmp_path / "journal.db"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A private copy of examples/ (the examples write files next to themselves)."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=OUTPUTS)
    return copy
