from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh journal path in the test's own folder."""
    return tmp_path / "journal.db"
