"""Package attributes imported on first use (PEP 562), so small commands start fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package`: name -> the relative module that defines it.

    A name that is the module itself (``"ops": ".ops"``) gives the module.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module, package)
        value = imported if module == f".{name}" else getattr(imported, name)
        namespace[name] = value  # later lookups skip this function
        return value

    return __getattr__
