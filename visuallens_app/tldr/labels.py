"""Token labels by diff alignment, and the labelled JSONL records that carry them.

Every token of an original caption is good (1). In an edited caption, the tokens that align to
the original (difflib on word tokens) are good and the changed or inserted ones bad (0), the
paper's convention. A record is one text with its tokens (character offsets), labels, category
and source; the format is documented in ``docs/tldr-data-format.md``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visuallens_app.errors import VisualLensError
from visuallens_app.tldr.lexicon import Token, tokenize

GOOD = 1
BAD = 0
#: The category of an unedited caption's record.
ORIGINAL = "original"


class TldrDataError(VisualLensError):
    """A labelled or caption file cannot be read; the message is one sentence."""


def diff_labels(original: str, edited: str) -> tuple[list[Token], list[int]]:
    """The edited text's tokens and their labels: aligned to ``original`` good, changed bad."""
    before = [t.text.lower() for t in tokenize(original)]
    tokens = tokenize(edited)
    after = [t.text.lower() for t in tokens]
    labels = [BAD] * len(tokens)
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for block in matcher.get_matching_blocks():
        for j in range(block.b, block.b + block.size):
            labels[j] = GOOD
    return tokens, labels


def changed_spans(original: str, edited: str) -> list[tuple[list[str], list[str]]]:
    """The (removed words, inserted words) of each difference between the two texts."""
    before = [t.text.lower() for t in tokenize(original)]
    after = [t.text.lower() for t in tokenize(edited)]
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return [
        (before[i1:i2], after[j1:j2])
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ]


@dataclass(frozen=True)
class LabelledRecord:
    """One labelled text: tokens with character offsets, a label per token (1 good, 0 bad)."""

    text: str
    tokens: tuple[Token, ...]
    labels: tuple[int, ...]
    category: str
    source_id: str
    image: str | None = None
    original: str | None = None  # the unedited caption, for an edited record
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_original(cls, text: str, source_id: str, image: str | None = None) -> LabelledRecord:
        tokens = tokenize(text)
        return cls(text, tuple(tokens), (GOOD,) * len(tokens), ORIGINAL, source_id, image)

    @classmethod
    def of_edit(
        cls, original: str, edited: str, category: str, source_id: str, image: str | None = None
    ) -> LabelledRecord:
        tokens, labels = diff_labels(original, edited)
        return cls(edited, tuple(tokens), tuple(labels), category, source_id, image, original)

    @property
    def bad(self) -> bool:
        return BAD in self.labels

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source_id": self.source_id,
            "category": self.category,
            "text": self.text,
            "tokens": [{"text": t.text, "start": t.start, "end": t.end} for t in self.tokens],
            "labels": list(self.labels),
        }
        if self.image is not None:
            data["image"] = self.image
        if self.original is not None:
            data["original"] = self.original
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Any) -> LabelledRecord:
        """A record from its JSON object; TldrDataError (one sentence) when it is malformed."""
        if not isinstance(data, dict):
            raise TldrDataError("the line is not a JSON object")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TldrDataError('the record has no "text"')
        raw_tokens = data.get("tokens")
        raw_labels = data.get("labels")
        if raw_tokens is None:
            tokens = tokenize(text)
        else:
            try:
                tokens = [Token(str(t["text"]), int(t["start"]), int(t["end"])) for t in raw_tokens]
            except (TypeError, KeyError, ValueError):
                raise TldrDataError('"tokens" must be a list of {text, start, end}') from None
        for t in tokens:
            if not 0 <= t.start <= t.end <= len(text) or text[t.start : t.end] != t.text:
                raise TldrDataError(f"token {t.text!r} does not match the text at {t.start}")
        if not isinstance(raw_labels, list) or len(raw_labels) != len(tokens):
            raise TldrDataError('"labels" must be a list with one 0 or 1 per token')
        if any(label not in (0, 1) for label in raw_labels):
            raise TldrDataError('"labels" must be 0 (bad) or 1 (good)')
        known = {"text", "tokens", "labels", "category", "source_id", "image", "original"}
        image = data.get("image")
        original = data.get("original")
        return cls(
            text=text,
            tokens=tuple(tokens),
            labels=tuple(int(x) for x in raw_labels),
            category=str(data.get("category") or ORIGINAL),
            source_id=str(data.get("source_id", data.get("id", ""))),
            image=None if image is None else str(image),
            original=None if original is None else str(original),
            extra={k: v for k, v in data.items() if k not in known},
        )


def write_records(path: Path, records: Iterable[LabelledRecord]) -> int:
    """Write records as JSONL (UTF-8, one object a line); returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.as_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


@dataclass(frozen=True)
class JsonlLine:
    """A parsed JSONL line, or the sentence saying why it could not be read."""

    number: int
    data: Any = None
    problem: str | None = None


def read_jsonl(path: Path) -> Iterator[JsonlLine]:
    """The non-blank lines of a JSONL file, each parsed or with its problem; the file must open."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise TldrDataError(f"Cannot open {path}: {err.strerror or err}.") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield JsonlLine(number, json.loads(line))
                except json.JSONDecodeError as err:
                    yield JsonlLine(number, problem=f"not valid JSON ({err.msg})")
        except UnicodeDecodeError:
            raise TldrDataError(f"{path} is not a UTF-8 text file.") from None


@dataclass(frozen=True)
class RecordLoad:
    """Records read from a file, with one ``line N: reason`` per line that was skipped."""

    records: list[LabelledRecord]
    problems: list[str]


def read_records(path: Path) -> RecordLoad:
    """Read labelled JSONL; malformed lines are reported (one sentence each), never fatal."""
    records: list[LabelledRecord] = []
    problems: list[str] = []
    for line in read_jsonl(path):
        if line.problem is not None:
            problems.append(f"line {line.number}: {line.problem}")
            continue
        try:
            records.append(LabelledRecord.from_json(line.data))
        except TldrDataError as err:
            problems.append(f"line {line.number}: {err}")
    return RecordLoad(records, problems)


__all__ = [
    "BAD",
    "GOOD",
    "ORIGINAL",
    "LabelledRecord",
    "RecordLoad",
    "TldrDataError",
    "changed_spans",
    "diff_labels",
    "read_jsonl",
    "read_records",
    "write_records",
]
