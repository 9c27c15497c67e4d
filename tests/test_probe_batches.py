"""Probes in batches: a folder loaded at once is probed in a few subprocesses, not one a file.

Each file's outcome must be what its own probe says, whatever the files before it in its
batch did: raise, exit the process, or hang. Real files and real subprocesses.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator import Runtime
from orchestrator.folder import loader
from orchestrator.folder.loader import FolderConfig, LoadFailed, ProbesAhead, digest_of, probe


def good(workflow_id: str) -> str:
    return textwrap.dedent(
        f"""\
        from orchestrator import Workflow

        def step(state):
            return state

        workflow = Workflow(id={workflow_id!r}, pipelines={{"go": [step]}})
        """
    )


BAD = {
    "raises": "raise RuntimeError('boom')\n",
    "exits": "import os\nos._exit(3)\n",
    "spins": "while True:\n    pass\n",
    "no_workflow": "x = 1\n",
    "prints": 'print(\'{"index": 7, "ok": true}\')\n' + good("printer"),
}


def outcome(ahead: ProbesAhead, path: Path, data: bytes) -> str:
    try:
        return "probed ok" if ahead.passed(path, digest_of(data)) else "not probed"
    except LoadFailed as exc:
        return f"{exc.line}: {exc.message}"


async def alone(path: Path, data: bytes, config: FolderConfig) -> str:
    try:
        await probe(path, data, config)
    except LoadFailed as exc:
        return f"{exc.line}: {exc.message}"
    return "probed ok"


@pytest.mark.slow
async def test_each_file_in_a_batch_gets_the_outcome_of_its_own_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "PARALLEL_PROBES", 2)
    config = FolderConfig(probe_timeout=3.0)  # a hang is cut off; a busy machine is not
    files: dict[Path, bytes] = {}
    for index, (name, source) in enumerate(BAD.items()):
        files[tmp_path / f"{name}.py"] = source.encode()
        files[tmp_path / f"after_{name}.py"] = good(f"after_{index}").encode()
    ahead = ProbesAhead(config)
    await ahead.run(files)
    outcomes = {path.name: outcome(ahead, path, data) for path, data in files.items()}
    for path, data in files.items():
        assert outcomes[path.name] == await alone(path, data, config), path.name
    assert outcomes["exits.py"].startswith("None: the file ended the process at import (exit")
    assert "did not finish within 3 s" in outcomes["spins.py"]
    assert outcomes["raises.py"] == "1: RuntimeError: boom"
    assert outcomes["prints.py"] == outcomes["after_prints.py"] == "probed ok"


async def test_a_folder_of_many_files_loads_each_once_with_batched_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "PARALLEL_PROBES", 2)
    probes: list[str] = []
    real = loader._probe_batch

    async def counted(batch: list[tuple[Path, bytes]], config: FolderConfig) -> object:
        probes.append(",".join(path.name for path, _ in batch))
        return await real(batch, config)

    monkeypatch.setattr(loader, "_probe_batch", counted)
    folder = tmp_path / "flows"
    folder.mkdir()
    for index in range(12):
        (folder / f"flow_{index:02}.py").write_text(good(f"flow_{index:02}"))
    (folder / "broken.py").write_text("raise ValueError('no')\n")
    async with Runtime(tmp_path / "journal.db", workflows_dir=folder) as rt:
        assert rt.list_workflows() == [f"flow_{index:02}" for index in range(12)]
    assert len(probes) == 2  # two subprocesses probed the 13 files
