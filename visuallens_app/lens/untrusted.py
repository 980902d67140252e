"""Reading lines of files users hand in (catalogs, benchmarks) without an exception escaping.

Python's JSON parser and path functions fail in more ways than their documented exception:
an integer of more than 4300 digits is a ValueError, deep nesting a RecursionError, a NUL in a
path a ValueError, ``~nosuchuser`` a RuntimeError; a ``\\ud800`` escape is accepted but yields
text that cannot be encoded, and fails later wherever it is hashed, stored or printed. Every
reader of a user's file turns these into the reason one line is skipped, with the helpers here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: A UTF-16 surrogate code point on its own: JSON may spell it (``"\ud800"``), but it is not a
#: character, and UTF-8 cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Longest value quoted in a reason; a 48 MB line must not become a 48 MB message.
_SHOWN_CHARS = 40


class BadLine(ValueError):  # noqa: N818 - a verdict on a line, carried as its reason
    """A line (or a value on it) that cannot be used; ``str(err)`` is the reason, one line."""


def parse_json_line(text: str) -> object:
    """``json.loads`` of one line, every failure a :class:`BadLine` with a reason to show."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadLine(f"not valid JSON ({err.msg})") from err
    except RecursionError as err:
        raise BadLine("not usable JSON (nested too deeply)") from err
    except ValueError as err:  # int('1' * 4301): "Exceeds the limit (4300 digits) ..."
        if "digits" in str(err):
            raise BadLine("not usable JSON (a number with more than 4300 digits)") from err
        raise BadLine(f"not usable JSON ({shown(str(err), 80)})") from err


def check_text(text: str) -> str:
    """``text`` itself, or a :class:`BadLine` when it holds a lone surrogate (not a character)."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise BadLine(f"'{shown(found.group())}' is not a character (a lone UTF-16 surrogate)")
    return text


def holds_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate anywhere (one search over a whole file)."""
    return _SURROGATE.search(text) is not None


def check_path_text(text: str) -> str:
    """A path as text, refused when no file can have that name (NUL, lone surrogate)."""
    if "\x00" in text:
        raise BadLine(f"'{shown(text)}' is not a file name (it holds a NUL character)")
    found = _SURROGATE.search(text)
    if found is not None:
        raise BadLine(
            f"'{shown(text)}' is not a file name ('{shown(found.group())}' is a lone UTF-16 "
            "surrogate, not a character)"
        )
    return text


def expand_home(path: Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a BadLine naming an unknown user."""
    try:
        return path.expanduser()
    except RuntimeError as err:  # ~nosuchuser, or no home directory at all
        head = path.parts[0] if path.parts else "~"
        user = head[1:]
        if user:
            raise BadLine(
                f"names the home folder of '{shown(user)}', who is not a user on this computer"
            ) from err
        raise BadLine("starts with ~, but this account has no home folder") from err


def shown(value: object, limit: int = _SHOWN_CHARS) -> str:
    """``value`` as short, printable text for a message: escapes for what a terminal cannot show."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except ValueError:  # an int too long to turn into digits
        text = "a number too long to show"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


__all__ = [
    "BadLine",
    "check_path_text",
    "check_text",
    "expand_home",
    "holds_surrogate",
    "parse_json_line",
    "shown",
]
