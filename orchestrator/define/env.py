"""``ctx.env``: a layered, read-only view of the environment, and secret redaction.

`Env` merges its layers once, first layer first (``Env(workflow_env, runtime_env)``), so a
later change to ``os.environ`` does not reach a running workflow. `Redactor` finds the
secret values of an env and replaces them, and every other secret the process knows
(``orchestrator/redaction.py``), with ``***`` in text and JSON-like data before the
runtime journals or logs them.

No journal, no logging, no reads of ``os.environ`` here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import DefinitionError
from ..redaction import SECRETS, SecretValues, compile_secrets

SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "KEY")


@functools.lru_cache(maxsize=4096)  # every workflow's env is the runtime's env and more
def is_secret_key(name: str) -> bool:
    """Whether an env key's name marks its value as a secret (a marker, any case).

    Deliberately broad (``MONKEY`` counts): a value redacted for nothing costs less than a
    secret written to the journal.
    """
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


class Env(Mapping[str, str]):
    """Read-only env: the first layer that has a key wins.

    ``env.get(key, default=None)`` comes from `Mapping`. There is no way to change it: item
    assignment raises `TypeError`, and `as_dict` returns a copy. Its repr names the keys
    only, never the values.
    """

    __slots__ = ("_values",)

    def __init__(self, *layers: Mapping[str, str]) -> None:
        values: dict[str, str] = {}
        for layer in reversed(layers):
            for key, value in layer.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise DefinitionError(
                        f"env {key!r} must map a string to a string, got {type(value).__name__}"
                    )
                values[key] = value
        self._values = values

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, str]:
        """A copy of the merged env; changing it changes nothing here."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Env(keys={sorted(self._values)!r})"


class Redactor:
    """Replace secret values with ``***``: this env's, and every other the process knows.

    Its own secrets are the values of env keys whose name contains a `SECRET_MARKERS`
    entry (any case) or is listed in `extra_keys` (``Runtime(secrets=[...])``). Values
    shorter than `min_length` are ignored: masking ``"1"`` or ``"on"`` everywhere would
    wreck every log while protecting nothing a guess could not find. `redact` also masks
    the values of `known` (the process-wide `SECRETS`, to which a runtime adds `values`),
    so text from one workflow never carries another's secret either.

    Redaction works on exact text: a secret that was escaped or encoded (JSON-escaped quotes,
    base64, URL quoting) is not found, which is why `redact_data` masks strings before
    they are serialized.
    """

    def __init__(
        self,
        env: Env | Mapping[str, str],
        *,
        extra_keys: Iterable[str] = (),
        min_length: int = 4,
        known: SecretValues = SECRETS,
    ) -> None:
        extra = set(extra_keys)
        self._known = known
        # Invariant: only names and values of real secrets, each value >= min_length.
        self._names_by_value: dict[str, list[str]] = {}
        for key, value in env.items():
            if (key in extra or is_secret_key(key)) and len(value) >= min_length:
                self._names_by_value.setdefault(value, []).append(key)
        self.values = frozenset(self._names_by_value)
        self._pattern = compile_secrets(self.values)

    def __bool__(self) -> bool:
        """Whether this env has secrets of its own."""
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """`text` with every occurrence of every secret value replaced by ``***``."""
        return self._known.redact(text, self.values)

    def redact_data(self, value: Any) -> Any:
        """A deep copy of JSON-like `value` with every string (keys too) redacted.

        Tuples become lists; an object that is not JSON-like becomes its redacted ``repr``,
        which is how the timeline would render it anyway.
        """
        return self._known.redact_data(value, self.values)

    def find_in(self, text: str) -> list[str]:
        """Sorted names of the env keys whose values appear in `text`; never the values."""
        if self._pattern is None or self._pattern.search(text) is None:
            return []
        found = (names for value, names in self._names_by_value.items() if value in text)
        return sorted(name for names in found for name in names)

    def __repr__(self) -> str:
        return f"Redactor(secrets={len(self._names_by_value)})"
