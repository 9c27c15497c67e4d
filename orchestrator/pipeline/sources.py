"""Running validated pipeline source text as a fresh module, with a per-job module home.

The module gets a copy of the builtins whose ``__import__`` enforces the `ImportPolicy`
again at run time (dynamic imports, imports inside functions) and finds adaptor modules in
the job's `module_home` folder. Adaptors are loaded with importlib machinery into a cache
owned by the job: never into `sys.modules`, never by changing `sys.path`, so two jobs with
different module homes never see each other's adaptors. Everything else falls through to
the normal import after the policy check.

This module must not import the pipeline runner; it only turns text into a list.
"""

from __future__ import annotations

import builtins
import os
import threading
import traceback
import types
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from importlib.util import decode_source, module_from_spec
from pathlib import Path
from typing import Any

from ..errors import ValidationError, raise_if_cancelled
from .validation import ESCAPE_BUILTINS, ImportPolicy, check_source, location, resolve_relative

SOURCE_MODULE = "__pipeline__"


def load_pipeline_source(
    source: str,
    *,
    policy: ImportPolicy,
    module_home: str | os.PathLike[str] | None = None,
    filename: str = "<pipeline>",
) -> list[Any]:
    """Validate `source`, run it as a fresh module and return its ``pipeline`` list.

    Raises:
        ValidationError: The source breaks the policy (nothing of it ran), raised while it
            ran (naming the line), or binds no ``pipeline`` list.
    """
    tree = check_source(source, policy, filename=filename)
    guard = ImportGuard(policy, module_home)
    namespace: dict[str, Any] = {"__name__": SOURCE_MODULE, "__builtins__": guard.builtins}
    try:
        exec(compile(tree, filename, "exec"), namespace)
    except ValidationError as exc:
        if exc.line is not None:
            raise  # An adaptor broke the policy: the error names its file and line.
        raise _load_error(exc, filename) from exc
    except BaseException as exc:  # its code: whatever it raises is a load error
        raise_if_cancelled(exc)
        raise _load_error(exc, filename) from exc
    pipeline = namespace.get("pipeline")
    if not isinstance(pipeline, list):
        found = (
            "defines no 'pipeline'"
            if "pipeline" not in namespace
            else (f"binds 'pipeline' to {type(pipeline).__name__}, not a list")
        )
        raise ValidationError(f"{filename}: the source {found}")
    return pipeline


def _load_error(exc: BaseException, filename: str) -> ValidationError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    line = frames[-1].lineno if frames else None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = location(filename, line)
    return ValidationError(f"{where}: {text} while loading the pipeline source", line=line)


class ImportGuard:
    """One job's ``__import__``: the policy check, then its module home, then the normal import.

    Attributes:
        builtins: The builtins for the job's modules: a copy whose ``__import__`` is this
            guard and without ``eval``, ``exec``, ``compile`` and ``breakpoint``.
    """

    def __init__(self, policy: ImportPolicy, module_home: str | os.PathLike[str] | None) -> None:
        self._policy = policy
        self._home = _home_folder(module_home)
        # Invariant: a module is in `_cache` from just before it runs; `None` marks a
        # top-level name the home does not have, so the normal import handles it.
        self._cache: dict[str, types.ModuleType | None] = {}
        self._lock = threading.RLock()  # sync steps import from worker threads
        self.builtins = {k: v for k, v in vars(builtins).items() if k not in ESCAPE_BUILTINS}
        self.builtins["__import__"] = self.import_

    def import_(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        """Import `name` like ``__import__``, under the job's policy and module home."""
        fromlist = tuple(fromlist or ())
        if level:
            package = (globals or {}).get("__package__") or ""
            if not package or self._home_module(package.partition(".")[0]) is None:
                raise ImportError("attempted relative import with no known parent package")
            name = resolve_relative("." * level + name, package)
        reason = self._policy.check_from(name, fromlist) if fromlist else self._policy.check(name)
        if reason is not None:
            raise ValidationError(f"import of {name!r} {reason}", module=name)
        if self._home_module(name.partition(".")[0]) is None:
            return builtins.__import__(name, globals, locals, fromlist, 0)
        return self._import_home(name, fromlist)

    def _import_home(self, name: str, fromlist: tuple[str, ...]) -> types.ModuleType:
        with self._lock:
            module = self._load(name)
            for item in fromlist:
                if item != "*" and not hasattr(module, item) and hasattr(module, "__path__"):
                    self._find(f"{name}.{item}")
        return module if fromlist else self._cache[name.partition(".")[0]] or module

    def _home_module(self, top: str) -> types.ModuleType | None:
        if self._home is None:
            return None
        with self._lock:
            if top not in self._cache:
                self._cache[top] = self._find(top)
            return self._cache[top]

    def _load(self, name: str) -> types.ModuleType:
        module = self._find(name)
        if module is None:
            raise ModuleNotFoundError(f"No module named {name!r} in module_home", name=name)
        return module

    def _find(self, name: str) -> types.ModuleType | None:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        parent_name, _, child = name.rpartition(".")
        parent = self._load(parent_name) if parent_name else None
        path = getattr(parent, "__path__", None) if parent else [str(self._home)]
        spec = PathFinder.find_spec(name, path) if path is not None else None
        if spec is None:
            return None
        if spec.loader is None and spec.submodule_search_locations is not None:
            # A namespace package: a plain list keeps its path from following sys.path.
            spec.submodule_search_locations = list(spec.submodule_search_locations)
        module = module_from_spec(spec)
        vars(module)["__builtins__"] = self.builtins
        self._cache[name] = module
        try:
            self._exec(module, spec)
        except BaseException:
            del self._cache[name]
            raise
        if parent is not None:
            setattr(parent, child, module)
        return module

    def _exec(self, module: types.ModuleType, spec: ModuleSpec) -> None:
        if spec.origin is None or spec.loader is None:
            return  # A namespace package (a folder without __init__.py): nothing to run.
        if not spec.origin.endswith(".py"):
            raise ValidationError(f"adaptor {spec.origin!r} is not Python source", module=spec.name)
        source = decode_source(Path(spec.origin).read_bytes())
        check_source(source, self._policy, filename=spec.origin, package=module.__package__)
        spec.loader.exec_module(module)


def _home_folder(module_home: str | os.PathLike[str] | None) -> Path | None:
    if module_home is None:
        return None
    home = Path(module_home).resolve()
    if not home.is_dir():
        raise ValidationError(f"module_home {str(module_home)!r} is not a folder")
    return home
