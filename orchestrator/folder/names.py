r"""File names as the journal can hold them: valid UTF-8, or shown escaped.

A POSIX file name is any bytes but ``/`` and NUL. Python hands a name that is not UTF-8
over as text holding lone surrogates (``surrogateescape``), which neither JSON nor the
journal can store, so such a name is never journaled as it is: it is shown escaped
(``notes-\xe9.txt``) in load errors, warnings and logs, and it names no workflow file and
starts no run.
"""

from __future__ import annotations

import os


def is_text(name: str) -> bool:
    """Whether a name read from the file system is valid UTF-8 (holds no lone surrogate)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str | os.PathLike[str]) -> str:
    r"""The path as valid text: bytes that are not UTF-8 become ``\xNN`` escapes."""
    text = os.fspath(path)
    if is_text(text):
        return text
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that did not come from the file system
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
