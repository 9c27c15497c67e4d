"""The import policy: static checks of source text, and loading it with a module home."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import orchestrator
from orchestrator.errors import ValidationError
from orchestrator.pipeline.sources import load_pipeline_source
from orchestrator.pipeline.validation import DEFAULT_BLOCKED, ImportPolicy, validate_source


def check(source: str, *, allow: list[str] | None = None, block: list[str] | None = None) -> None:
    validate_source(textwrap.dedent(source), allow=allow, block=block)


def rejected(source: str, **policy: list[str] | None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        check(source, **policy)
    return info.value


def load(source: str, home: Path | None = None, **policy: list[str] | None) -> list[object]:
    return load_pipeline_source(
        textwrap.dedent(source), policy=ImportPolicy.build(**policy), module_home=home
    )


# -- the policy object ------------------------------------------------------------------


@pytest.mark.parametrize("module", ["os", "os.path", "subprocess", "importlib.util", "sys"])
def test_default_block_list_covers_modules_and_submodules(module: str) -> None:
    reason = ImportPolicy.build().check(module)
    assert reason is not None and "default block list" in reason


@pytest.mark.parametrize("module", ["json", "math", "pathlib", "asyncio", "threading", "osx"])
def test_harmless_modules_pass_by_default(module: str) -> None:
    assert ImportPolicy.build().check(module) is None


def test_block_adds_to_the_defaults() -> None:
    policy = ImportPolicy.build(block=["requests"])
    assert "block list" in (policy.check("requests.adapters") or "")
    assert "default" not in (policy.check("requests") or "")
    assert policy.check("os") is not None


def test_allow_admits_only_matching_modules_and_never_a_blocked_one() -> None:
    policy = ImportPolicy.build(allow=[r"^json$", r"^adaptors\.", r"^os$"])
    assert policy.check("json") is None
    assert policy.check("adaptors.greet") is None
    assert "allow" in (policy.check("math") or "")
    assert "block" in (policy.check("os") or "")


def test_from_import_may_name_a_submodule_for_allow_and_block() -> None:
    policy = ImportPolicy.build(allow=[r"^json$", r"^adaptors\."], block=["json.decoder"])
    assert policy.check_from("adaptors", ["greet"]) is None
    assert policy.check_from("json", ["dumps"]) is None
    assert policy.check_from("json", ["decoder"]) is not None


@pytest.mark.parametrize(
    ("allow", "block"), [(["("], None), ("json", None), (None, "os"), (None, [""])]
)
def test_bad_policy_arguments_are_validation_errors(
    allow: list[str] | None, block: list[str] | None
) -> None:
    with pytest.raises(ValidationError):
        ImportPolicy.build(allow=allow, block=block)


def test_the_default_list_is_one_documented_constant() -> None:
    assert {"os", "sys", "subprocess", "socket", "importlib", "builtins", "ctypes"} <= (
        DEFAULT_BLOCKED
    )
    assert not {"pathlib", "threading", "asyncio", "json"} & DEFAULT_BLOCKED


# -- static checks ------------------------------------------------------------------------


def test_blocked_import_names_module_and_line() -> None:
    error = rejected("import json\n\nimport os\n")
    assert (error.module, error.line) == ("os", 3)
    assert str(error).startswith("line 3: import of 'os' is blocked (default block list")


def test_first_violation_in_source_order_is_reported() -> None:
    error = rejected("def f():\n    import subprocess\nimport os\n")
    assert (error.module, error.line) == ("subprocess", 2)


@pytest.mark.parametrize(
    "source",
    ["from os import path", "from os.path import join", "import os.path as p", "import json, os"],
)
def test_every_import_form_is_checked(source: str) -> None:
    assert rejected(source).module in {"os", "os.path"}


def test_extra_block_list() -> None:
    check("import requests")
    error = rejected("import requests.adapters", block=["requests"])
    assert error.module == "requests.adapters"
    assert "block list" in str(error)


def test_allow_list_rejects_unmatched_modules() -> None:
    check("import json\nfrom adaptors import greet\n", allow=[r"^json$", r"^adaptors\."])
    error = rejected("import json\nimport math\n", allow=[r"^json$"])
    assert (error.module, error.line) == ("math", 2)
    assert "allow pattern" in str(error)


def test_blocked_wins_over_allowed() -> None:
    assert rejected("import os", allow=[".*"]).module == "os"


def test_relative_import_is_rejected_in_pipeline_source() -> None:
    error = rejected("x = 1\nfrom . import helpers\n")
    assert error.line == 2
    assert "relative import" in str(error)


@pytest.mark.parametrize(
    "source",
    [
        "m = __import__('os')",
        "f = __import__",
        "b = __builtins__",
        "x = ().__class__.__base__.__subclasses__()",
        "g = (lambda: 0).__globals__",
        "g = getattr(len, '__globals__')",
        "d = {}\nv = d['__builtins__']",
        "eval('1')",
        "exec('x = 1')",
        "c = compile('1', 'f', 'eval')",
        "import json\nl = json.__loader__",
        "import json\ns = json.__spec__",
    ],
)
def test_builtins_tricks_are_rejected(source: str) -> None:
    error = rejected(source)
    assert error.line == source.count("\n") + 1


def test_dunder_import_call_names_its_module() -> None:
    error = rejected("x = 1\nm = __import__('os')\n")
    assert (error.module, error.line) == ("os", 2)
    assert "__import__" in str(error)


def test_open_and_pathlib_are_allowed() -> None:
    check("from pathlib import Path\ndef step(state):\n    return {'t': open('x').read()}\n")


def test_syntax_error_names_its_line() -> None:
    error = rejected("x = 1\ny = (\n\ndef f(:\n")
    assert error.line is not None and error.line >= 2
    assert "syntax error" in str(error)


# -- loading source text ------------------------------------------------------------------


def test_load_returns_the_pipeline_list() -> None:
    ops = load("import json\ndef a(state):\n    return state\npipeline = [a]\n")
    assert [getattr(op, "__name__", None) for op in ops] == ["a"]


def test_loaded_source_is_not_a_module_in_sys_modules() -> None:
    before = set(sys.modules)
    load("def a(state):\n    return state\npipeline = [a]\n")
    assert set(sys.modules) == before


@pytest.mark.parametrize(
    ("source", "expected"),
    [("x = 1\n", "defines no 'pipeline'"), ("pipeline = (1,)\n", "tuple, not a list")],
)
def test_missing_or_wrong_pipeline(source: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        load(source)


def test_exception_while_loading_names_the_line() -> None:
    with pytest.raises(ValidationError, match=r"^line 3: ZeroDivisionError") as info:
        load("x = 1\n\ny = 1 / 0\npipeline = []\n")
    assert info.value.line == 3


def test_system_exit_while_loading_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="SystemExit"):
        load("raise SystemExit(3)\n")


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "GeneratorExit"])
async def test_any_base_exception_while_loading_is_a_validation_error(raised: str) -> None:
    with pytest.raises(ValidationError, match=f"line 1: {raised}"):
        load(f"raise {raised}\n")
    with pytest.raises(ValidationError, match=raised):
        await orchestrator.run(f"raise {raised}\npipeline = []\n", {})


def test_nothing_runs_when_validation_fails(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    source = f"open({str(marker)!r}, 'w').write('ran')\nimport subprocess\npipeline = []\n"
    with pytest.raises(ValidationError):
        load(source)
    assert not marker.exists()


def test_dynamic_import_is_checked_at_run_time() -> None:
    # The static check cannot see this name; the guarded __import__ still refuses it.
    source = """
        imp = globals()["__buil" + "tins__"]["__imp" + "ort__"]
        def step(state):
            return {"m": imp("so" "cket").__name__}
        def harmless(state):
            return {"m": imp("json").__name__}
        pipeline = [step, harmless]
    """
    step, harmless = load(source)
    assert harmless({}) == {"m": "json"}  # type: ignore[operator]
    with pytest.raises(ValidationError, match="'socket' is blocked"):
        step({})  # type: ignore[operator]


def test_run_time_check_applies_the_allow_list() -> None:
    source = """
        imp = globals()["__buil" + "tins__"]["__imp" + "ort__"]
        def step(state):
            return {"m": imp("ma" "th").__name__}
        pipeline = [step]
    """
    (step,) = load(source, allow=[r"^json$"])
    with pytest.raises(ValidationError, match="allow"):
        step({})  # type: ignore[operator]


def test_guarded_builtins_lack_eval_and_exec() -> None:
    source = """
        b = globals()["__buil" + "tins__"]
        pipeline = [sorted(k for k in ("eval", "exec", "compile", "len") if k in b)]
    """
    assert load(source) == [["len"]]


# -- module home --------------------------------------------------------------------------


def write_adaptors(home: Path, greeting: str, extra: str = "") -> Path:
    package = home / "adaptors"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_words.py").write_text(f"GREETING = {greeting!r}\n")
    (package / "greet.py").write_text(
        f"from ._words import GREETING\n{extra}\ndef greet(name):\n    return GREETING + name\n"
    )
    return home


GREET_SOURCE = """
    from adaptors.greet import greet
    def hello(state):
        return {"text": greet(state["name"])}
    pipeline = [hello]
"""


def test_module_home_adaptors_are_imported_for_that_job(tmp_path: Path) -> None:
    home = write_adaptors(tmp_path / "a", "hi ")
    (hello,) = load(GREET_SOURCE, home, allow=[r"^adaptors\."])
    assert hello({"name": "ann"}) == {"text": "hi ann"}  # type: ignore[operator]


def test_two_jobs_see_their_own_adaptors_and_sys_modules_is_untouched(tmp_path: Path) -> None:
    first = write_adaptors(tmp_path / "one", "hello ")
    second = write_adaptors(tmp_path / "two", "bonjour ")
    before = dict(sys.modules)
    (one,) = load(GREET_SOURCE, first)
    (two,) = load(GREET_SOURCE, second)
    assert one({"name": "x"}) == {"text": "hello x"}  # type: ignore[operator]
    assert two({"name": "x"}) == {"text": "bonjour x"}  # type: ignore[operator]
    assert sys.modules == before
    assert str(tmp_path) not in "".join(sys.path)


def test_without_module_home_adaptors_are_not_found(tmp_path: Path) -> None:
    write_adaptors(tmp_path / "a", "hi ")
    with pytest.raises(ValidationError, match="ModuleNotFoundError"):
        load(GREET_SOURCE)


def test_adaptors_are_checked_against_the_policy(tmp_path: Path) -> None:
    home = write_adaptors(tmp_path / "a", "hi ", extra="import json\nimport subprocess\n")
    with pytest.raises(ValidationError) as info:
        load(GREET_SOURCE, home)
    assert info.value.module == "subprocess"
    assert info.value.line == 3
    assert str(info.value).startswith(str(home / "adaptors" / "greet.py") + ", line 3:")


def test_missing_module_home_folder(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a folder"):
        load(GREET_SOURCE, tmp_path / "nope")
