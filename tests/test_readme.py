"""The README's examples of testing and trying workflow files run as written.

The pytest test it shows is run by pytest in a project of its own: that test file, the
``pyproject.toml`` lines it shows, and a copy of examples/ (the test names its file
relative to where pytest runs). The ``orchestrator try`` lines it shows run in a copy of
examples/ too (the examples write next to themselves).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from procs import ROOT, cli

README = (ROOT / "README.md").read_text()


def block(first_line: str) -> str:
    """The README's fenced code block whose first line is `first_line`."""
    found: list[str] = re.findall(r"^```\w*\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
    (text,) = [code for code in found if code.startswith(first_line + "\n")]
    return text


def test_the_pytest_example_passes_in_a_project_of_its_own(tmp_path: Path, examples: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_approval.py").write_text(block("# tests/test_approval.py"))
    (tmp_path / "pyproject.toml").write_text(block("# pyproject.toml"))
    assert examples == tmp_path / "examples"  # where the test looks for its file
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_the_try_lines_run(examples: Path) -> None:
    lines = block("orchestrator try examples/nightly_report.py now").splitlines()
    assert len(lines) == 2
    for line in lines:
        args = shlex.split(line)
        assert args[0] == "orchestrator"
        out = cli(*[arg.replace("examples/", f"{examples}/") for arg in args[1:]])
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("run ") and "timeline:" in out.stdout.splitlines()[0]
