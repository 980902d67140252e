"""Concept sets: sentences, each with the one anchor word that carries the concept.

A set is a JSONL file, one ``{"text": "The cat is on the table", "anchor": "on"}`` per line
(blank lines and ``#`` comments skipped). The anchor is found as a whole word, the first time it
occurs; a line whose anchor is not in its sentence is refused with its line number, since a
vector computed from the wrong token would steer towards nothing in particular. Eight sets ship in
``resources/steering/concepts/`` (spatial, counting, attribute, entity, action, temporal,
comparison, negation, 20 sentences each); a user's own file is given by its path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from visuallens_app.settings import resources_dir
from visuallens_app.steering import SteeringError

#: The concepts of the paper, plus four more; each has a file of the same name.
SHIPPED = (
    "spatial",
    "counting",
    "attribute",
    "entity",
    "action",
    "temporal",
    "comparison",
    "negation",
)

#: Fewer sentences than this make a vector of noise: the mean over a handful of tokens.
MIN_SENTENCES = 2


@dataclass(frozen=True, slots=True)
class ConceptSentence:
    """One sentence and its anchor; ``span`` is the anchor's character range in ``text``."""

    text: str
    anchor: str
    span: tuple[int, int]


@dataclass(frozen=True, slots=True)
class ConceptSet:
    """A named list of anchored sentences (the input of every vector method)."""

    name: str
    sentences: tuple[ConceptSentence, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sentences]


def concepts_dir() -> Path:
    return resources_dir() / "steering" / "concepts"


def anchor_span(text: str, anchor: str) -> tuple[int, int] | None:
    """Where ``anchor`` first occurs in ``text`` as a whole word; None when it does not."""
    if not anchor.strip():
        return None
    match = re.search(rf"(?<!\w){re.escape(anchor.strip())}(?!\w)", text)
    return (match.start(), match.end()) if match else None


def parse_concepts(text: str, *, name: str, source: str = "") -> ConceptSet:
    """A concept set from JSONL text; the first bad line is one sentence with its number."""
    where = source or name
    sentences: list[ConceptSentence] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise SteeringError(
                f"Line {number} of {where} is not JSON ({err.msg}); each line is "
                '{"text": ..., "anchor": ...}.'
            ) from err
        if not isinstance(record, dict):
            raise SteeringError(
                f'Line {number} of {where} is not an object; each line is {{"text": ..., '
                '"anchor": ...}.'
            )
        sentence, anchor = record.get("text"), record.get("anchor")
        if not isinstance(sentence, str) or not sentence.strip():
            raise SteeringError(f'Line {number} of {where} has no "text".')
        if not isinstance(anchor, str) or not anchor.strip():
            raise SteeringError(f'Line {number} of {where} has no "anchor" word.')
        span = anchor_span(sentence, anchor)
        if span is None:
            raise SteeringError(
                f"Line {number} of {where}: the anchor {anchor!r} does not occur as a word in "
                f"{sentence!r}."
            )
        sentences.append(ConceptSentence(sentence, anchor.strip(), span))
    if len(sentences) < MIN_SENTENCES:
        raise SteeringError(
            f"{where} has {len(sentences)} sentence(s); a concept needs at least {MIN_SENTENCES}."
        )
    return ConceptSet(name, tuple(sentences), source)


def load_concepts(name_or_path: str | Path) -> ConceptSet:
    """A shipped concept by name (``spatial``) or a user's JSONL file by path."""
    text = str(name_or_path).strip()
    if text in SHIPPED:
        path = concepts_dir() / f"{text}.jsonl"
        return parse_concepts(path.read_text(encoding="utf-8"), name=text, source=str(path))
    path = Path(text).expanduser()
    if not path.is_file():
        raise SteeringError(
            f"There is no concept {text!r}: give one of {', '.join(SHIPPED)} or a JSONL file."
        )
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SteeringError(f"The concept file {path} cannot be read ({err}).") from err
    return parse_concepts(content, name=path.stem, source=str(path))


__all__ = [
    "SHIPPED",
    "ConceptSentence",
    "ConceptSet",
    "anchor_span",
    "concepts_dir",
    "load_concepts",
    "parse_concepts",
]
