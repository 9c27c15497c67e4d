"""The secret values this process knows, and the one redaction of everything that leaves it.

`SECRETS` is process-wide. A started `Runtime` adds what it knows (the secret values of its
env and of each workflow it registers, ``Runtime(secrets=...)`` included) and takes them out
again when it stops; every `Redactor` (``define/env.py``) masks its own values and these.
What leaves user code or definitions passes through it: journaled definitions, triggers,
load errors, timeline entries and errors, and every log record that reaches a handler
carrying `RedactSecrets` (the daemon's handlers, ``DB.log``, and the handlers a started
runtime finds on the ``orchestrator`` logger's way up).

Redaction works on exact text: mask strings before they are serialized or escaped.
No I/O here, and no knowledge of env keys: values only.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_CACHE_SIZE = 64


def compile_secrets(values: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of `values` (longest first), or None for no values."""
    # Longest first: Python's alternation takes the first branch that matches, so a secret
    # that contains another is masked whole, not leaving its tail in the text.
    ordered = sorted(set(values), key=lambda value: (-len(value), value))
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


class SecretValues:
    """The union of the secret values of every live source; thread-safe.

    Log records are filtered on any thread (step threads, a worker's relay), so the
    sources change under a lock and each pattern is built once per change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, frozenset[str]] = {}
        self._next = 0
        self._any = False  # whether any source has a value (read without the lock)
        # Invariant: patterns of the current sources (plus an extra set), cleared on change.
        self._patterns: dict[frozenset[str], re.Pattern[str] | None] = {}

    def add(self, values: Iterable[str]) -> int:
        """Know `values` until `discard` is called with the token returned."""
        with self._lock:
            self._next += 1
            self._sources[self._next] = frozenset(values)
            self._changed()
            return self._next

    def discard(self, token: int) -> None:
        """Forget the values added under `token` (unless another source has them too)."""
        with self._lock:
            if self._sources.pop(token, None) is not None:
                self._changed()

    def _changed(self) -> None:
        self._patterns = {}
        self._any = any(self._sources.values())

    def __bool__(self) -> bool:
        return self._any

    def pattern(self, also: frozenset[str] = frozenset()) -> re.Pattern[str] | None:
        """The pattern of every known value and of `also`."""
        patterns = self._patterns
        if also in patterns:
            return patterns[also]
        with self._lock:
            values = set(also).union(*self._sources.values())
            if len(self._patterns) >= _CACHE_SIZE:
                self._patterns = {}
            compiled = self._patterns[also] = compile_secrets(values)
            return compiled

    def redact(self, text: str, also: frozenset[str] = frozenset()) -> str:
        """`text` with every known secret value (and each of `also`) replaced by ``***``."""
        pattern = self.pattern(also)
        return text if pattern is None else pattern.sub(MASK, text)

    def redact_data(self, value: Any, also: frozenset[str] = frozenset()) -> Any:
        """A deep copy of JSON-like `value` with every string (keys too) redacted.

        Tuples become lists; an object that is not JSON-like becomes its redacted ``repr``.
        """
        return _redacted(value, self.pattern(also))


def _redacted(value: Any, pattern: re.Pattern[str] | None) -> Any:
    """`SecretValues.redact_data`, its pattern looked up once for the whole value."""
    if isinstance(value, str):
        return value if pattern is None else pattern.sub(MASK, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {_redacted(key, pattern): _redacted(item, pattern) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, pattern) for item in value]
    text = repr(value)
    return text if pattern is None else pattern.sub(MASK, text)


SECRETS = SecretValues()


class RedactSecrets(logging.Filter):
    """A logging filter that masks every known secret in a record's message and traceback.

    Put it on a handler (``handler.addFilter(RedactSecrets())``): a handler's filters see
    every record it writes, whichever logger it came from, while a logger's filters see
    only the records logged on that very logger. The record is changed in place (its
    message formatted once, its exception and stack text rendered and redacted), so other
    handlers that see it later write the redacted text too.
    """

    def __init__(self, secrets: SecretValues = SECRETS) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` in place; never drops it."""
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: the handler reports it as usual
            return True
        record.msg, record.args = self._secrets.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._secrets.redact(record.stack_info)
        return True


def guard_handlers(logger: logging.Logger) -> None:
    """Put `RedactSecrets` on every handler `logger`'s records reach now (once each).

    That is the handlers of `logger` and of its ancestors up to the first that does not
    propagate, or `logging.lastResort` when there are none. A handler added later is not
    covered: add the filter to it.
    """
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers.extend(current.handlers)
        current = current.parent if current.propagate else None
    if not handlers and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
