"""The import policy for pipeline source text: blocked modules, an allow list, escape hatches.

`validate_source` parses source text with `ast` and rejects it before any line runs;
`ImportPolicy` is the same rule as an object, so the guarded ``__import__`` of
`orchestrator.sources` enforces it again at run time (dynamic imports).

This is a policy check, not a sandbox: it stops the obvious ways of reaching the process
(``import os``, ``__import__('os')``, ``().__class__.__base__.__subclasses__()``), not a
determined attacker (``getattr(json, "__buil" + "tins__")`` still reaches the real
builtins). Run untrusted code in a separate process or container.

File I/O through the ``open`` builtin and ``pathlib`` is allowed: it is not an import and
not an escape hatch, and pipelines legitimately read and write files.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import ValidationError

# fmt: off
#: Modules blocked by default, each with all its submodules. `block=` adds to this list and
#: `allow=` cannot re-admit any of them. They reach the process (os, posix, sys, signal,
#: subprocess, pty, multiprocessing, ctypes), the network (socket), the import system or
#: the interpreter's insides (importlib, pkgutil, zipimport, runpy, builtins, code, codeop,
#: pdb, gc, inspect), or run arbitrary code from data (pickle, shelve, marshal).
#: Not blocked: threading (no escape), pathlib and io (file I/O is allowed, as ``open`` is),
#: asyncio (async steps need it).
DEFAULT_BLOCKED: frozenset[str] = frozenset(
    {
        "_ctypes", "_multiprocessing", "_pickle", "_posixsubprocess", "_socket",
        "builtins", "code", "codeop", "ctypes", "gc", "importlib", "inspect", "marshal",
        "multiprocessing", "nt", "os", "pdb", "pickle", "pkgutil", "posix", "pty", "runpy",
        "shelve", "shutil", "signal", "socket", "subprocess", "sys", "zipimport",
    }
)

#: Builtins that compile or run code, or reach the import system: rejected as names.
ESCAPE_BUILTINS: frozenset[str] = frozenset(
    {"__import__", "breakpoint", "compile", "eval", "exec"}
)

#: Attributes that lead from any object to the real builtins, modules or frames: rejected as
#: names, as attributes and as string constants (``getattr(f, "__globals__")``).
ESCAPE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "__builtins__", "__code__", "__globals__", "__import__", "__loader__", "__spec__",
        "__subclasses__", "ag_frame", "cr_frame", "f_back", "f_builtins", "f_globals",
        "f_locals", "gi_frame", "tb_frame",
    }
)
# fmt: on


@dataclass(frozen=True)
class ImportPolicy:
    """Which modules pipeline code may import.

    Attributes:
        blocked: Blocked module names (the defaults plus `block=`); submodules included.
        allow: Compiled allow patterns, or ``None`` to admit every module not blocked.
    """

    blocked: frozenset[str] = DEFAULT_BLOCKED
    allow: tuple[re.Pattern[str], ...] | None = None
    extra: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def build(
        cls, *, allow: Sequence[str] | None = None, block: Sequence[str] | None = None
    ) -> ImportPolicy:
        """The policy for `allow` patterns and extra `block` modules.

        Raises:
            ValidationError: A pattern does not compile, or an argument is not a list.
        """
        extra = frozenset(_names(block, "block"))
        patterns = None if allow is None else tuple(_compile(p) for p in _names(allow, "allow"))
        return cls(blocked=DEFAULT_BLOCKED | extra, allow=patterns, extra=extra)

    def check(self, module: str) -> str | None:
        """Why `module` may not be imported, or ``None`` if it may."""
        return self._blocked(module) or self._not_allowed([module])

    def check_from(self, module: str, names: Iterable[str]) -> str | None:
        """Like `check`, for ``from module import names`` (a name may be a submodule)."""
        candidates = [module, *(f"{module}.{name}" for name in names if name != "*")]
        for candidate in candidates:
            reason = self._blocked(candidate)
            if reason:
                return reason
        return self._not_allowed(candidates)

    def _blocked(self, module: str) -> str | None:
        parts = module.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in self.blocked:
                which = "block list" if prefix in self.extra else "default block list"
                return f"is blocked ({which}: {prefix!r})"
        return None

    def _not_allowed(self, candidates: Sequence[str]) -> str | None:
        if self.allow is None:
            return None
        if any(p.search(name) for p in self.allow for name in candidates):
            return None
        patterns = ", ".join(p.pattern for p in self.allow) or "none"
        return f"matches no allow pattern ({patterns})"


def _names(value: Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(f"{what} must be a list of non-empty strings, got {value!r}")
    return list(value)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        message = f"allow pattern {pattern!r} is not a regular expression: {exc}"
        raise ValidationError(message) from exc


def validate_source(
    source: str,
    *,
    allow: Sequence[str] | None,
    block: Sequence[str] | None,
    filename: str = "<pipeline>",
) -> None:
    """Reject pipeline source text that breaks the import policy, before any of it runs.

    Raises:
        ValidationError: The first violation in source order (with `module` and `line`), or
            a syntax error.
    """
    check_source(source, ImportPolicy.build(allow=allow, block=block), filename=filename)


TOO_DEEP = "the source is nested too deeply (or is too large) for Python to parse"


def check_source(
    source: str, policy: ImportPolicy, *, filename: str = "<pipeline>", package: str | None = None
) -> ast.Module:
    """Parse `source` and check it against `policy`; return the tree for compiling.

    Args:
        source: Python source text.
        policy: The import policy.
        filename: Named in messages.
        package: The package the source belongs to, for relative imports; ``None`` rejects
            them (pipeline source text is not in a package).

    Raises:
        ValidationError: A syntax error or the first violation in source order.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        where = location(filename, exc.lineno)
        raise ValidationError(f"{where}: syntax error: {exc.msg}", line=exc.lineno) from exc
    except (RecursionError, MemoryError):
        raise ValidationError(f"{filename}: {TOO_DEEP}") from None
    for node in sorted(ast.walk(tree), key=_position):
        for module, reason in _violations(node, policy, package):
            line = getattr(node, "lineno", None)
            raise ValidationError(f"{location(filename, line)}: {reason}", module=module, line=line)
    return tree


def _position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def location(filename: str, line: int | None) -> str:
    """``line N`` for pipeline text, ``FILE, line N`` for an adaptor file."""
    return f"line {line}" if filename == "<pipeline>" else f"{filename}, line {line}"


def _violations(
    node: ast.AST, policy: ImportPolicy, package: str | None
) -> Iterator[tuple[str | None, str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from _import_violation(alias.name, policy.check(alias.name))
    elif isinstance(node, ast.ImportFrom):
        yield from _from_violations(node, policy, package)
    elif isinstance(node, ast.Name) and node.id in ESCAPE_BUILTINS | ESCAPE_ATTRIBUTES:
        yield None, f"use of {node.id!r} is not allowed (it reaches the import system)"
    elif isinstance(node, ast.Attribute) and node.attr in ESCAPE_ATTRIBUTES:
        yield None, f"attribute {node.attr!r} is not allowed (it reaches the interpreter)"
    elif isinstance(node, ast.Call) and _is_name(node.func, "__import__"):
        module = _first_string(node)
        yield module, f"call of __import__({module or '...'!r}) is not allowed; use an import"
    elif isinstance(node, ast.Constant) and _is_escape_string(node.value):
        yield None, f"string {node.value!r} is not allowed (it names an escape hatch)"


def _is_escape_string(value: object) -> bool:
    return isinstance(value, str) and value in ESCAPE_ATTRIBUTES


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _first_string(call: ast.Call) -> str | None:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def _import_violation(module: str, reason: str | None) -> Iterator[tuple[str, str]]:
    if reason is not None:
        hint = "add a matching allow pattern" if "allow" in reason else "do that work elsewhere"
        yield module, f"import of {module!r} {reason}; remove it or {hint}"


def _from_violations(
    node: ast.ImportFrom, policy: ImportPolicy, package: str | None
) -> Iterator[tuple[str | None, str]]:
    names = [alias.name for alias in node.names]
    if not node.level:
        module = node.module or ""
        yield from _import_violation(module, policy.check_from(module, names))
        return
    dots = "." * node.level + (node.module or "")
    if package is None:
        yield dots, f"relative import {dots!r} is not allowed: pipeline source is not a package"
        return
    try:
        module = resolve_relative(dots, package)
    except ImportError as exc:
        yield dots, f"relative import {dots!r}: {exc}"
        return
    yield from _import_violation(module, policy.check_from(module, names))


def resolve_relative(name: str, package: str) -> str:
    """The absolute module name for relative `name` (leading dots) inside `package`.

    Raises:
        ImportError: The import goes above the top-level package.
    """
    level = len(name) - len(name.lstrip("."))
    base = package.rsplit(".", level - 1)
    if len(base) < level:
        raise ImportError("attempted relative import beyond top-level package")
    rest = name[level:]
    return f"{base[0]}.{rest}" if rest else base[0]
