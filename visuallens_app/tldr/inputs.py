"""What a user hands a detector: an image file and a text, checked with one sentence per problem."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from visuallens_app.errors import VisualLensError

#: Detectors check at most this many word tokens; the rest is reported as not checked.
MAX_WORDS = 512
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")


class TldrInputError(VisualLensError):
    """An image or text that cannot be scored; the message is one sentence."""


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB, or TldrInputError saying in one sentence why not."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise TldrInputError(f"There is no image at {path}.") from None
    except IsADirectoryError:
        raise TldrInputError(f"{path} is a folder, not an image file.") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError):
        raise TldrInputError(f"{path} is not an image this app can read.") from None
    except OSError as err:
        raise TldrInputError(
            f"{path} cannot be read as an image ({err.strerror or 'broken or truncated file'})."
        ) from None


def check_text(text: str) -> None:
    """TldrInputError (one sentence) for a text there is nothing to score in."""
    if not text or not text.strip():
        raise TldrInputError("The text is empty: give a caption or an answer to score.")


def is_latin(text: str) -> bool:
    """Whether the text's letters are (mostly) Latin: the lexicons are English."""
    letters = _LETTER.findall(text)
    return bool(letters) and len(_LATIN.findall(text)) >= 0.5 * len(letters)


def foreign_script_warning() -> str:
    return (
        "The text is not in English (Latin script), and the grounding detector knows English "
        "words only, so no token was checked."
    )


def truncation_warning(words: int, limit: int = MAX_WORDS) -> str:
    return (
        f"The text has {words} words; only the first {limit} were checked and the rest is "
        "reported as not checked."
    )


__all__ = ["MAX_WORDS", "TldrInputError", "check_text", "is_latin", "open_image"]
