"""The lexicons in ``resources/tldr/`` and the content phrases they find in a text.

One place reads the shipped word lists (objects with near and far alternatives, colours,
materials, sizes, shapes, numbers, spatial relations, negations, text patterns) and finds their
phrases in word tokens; the perturbation engine edits those phrases and the grounding detector
scores them. Everything here is plain Python: no model, no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from visuallens_app.settings import resources_dir

#: Word tokens: words (with inner apostrophes/hyphens kept), numbers with separators, punctuation.
_TOKEN = re.compile(r"\d+(?:[:.,]\d+)*|\w+(?:['’-]\w+)*|[^\w\s]")
_VOWEL_SOUND = re.compile(r"^(?:[aeio]|u(?!ni|se|sa|ro|tensil))", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Token:
    """A word token and its character span in the text it came from."""

    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Word tokens with character offsets: the unit every label and score refers to."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True, slots=True)
class Phrase:
    """A content phrase: tokens ``[first, last)`` of a tokenised text, of one ``kind``.

    kind is object, colour, material, size, shape, number, spatial, negation or text; ``key`` is
    the lexicon entry (lower case, singular for objects).
    """

    kind: str
    first: int
    last: int
    key: str
    plural: bool = False


def _lexicon_dir() -> Path:
    return resources_dir() / "tldr"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_lexicon_dir() / name).read_text(encoding="utf-8"))
    return data


def plural_of(word: str) -> str:
    """A regular English plural (the lexicon spells out the irregular ones)."""
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def with_article(article: str, word: str) -> str:
    """``a`` or ``an`` before ``word``, keeping the capitalisation of ``article``."""
    new = "an" if _VOWEL_SOUND.match(word) else "a"
    return new.capitalize() if article[:1].isupper() else new


@dataclass(frozen=True)
class Lexicon:
    """All the shipped word lists, indexed for lookup."""

    objects: dict[str, tuple[str, str]]  # form (singular or plural) -> (singular, group)
    plurals: dict[str, str]  # singular -> plural
    groups: dict[str, list[str]]  # group -> singulars
    imagenet_groups: frozenset[str]
    near: dict[str, list[str]]
    probes: list[str]
    small: frozenset[str]
    small_words: frozenset[str]
    text_bearing: frozenset[str]
    colours: list[str]
    colour_near: dict[str, list[str]]
    materials: list[str]
    material_near: dict[str, list[str]]
    sizes: dict[str, str]
    shapes: dict[str, str]
    numbers: dict[str, int]
    singular_words: frozenset[str]
    number_words: dict[str, str]  # digit -> word
    agreement: dict[str, str]
    spatial: dict[str, str]
    weak_spatial: frozenset[str]
    negation: dict[str, Any]
    ocr: dict[str, Any]

    def plural(self, singular: str) -> str:
        return self.plurals.get(singular, plural_of(singular))

    def object_alternatives(self, key: str) -> tuple[list[str], list[str]]:
        """(near, far) alternatives of an object, singular, never the object itself."""
        group = self.objects[key][1] if key in self.objects else ""
        near = list(self.near.get(key, [])) or [w for w in self.groups.get(group, []) if w != key]
        far = [
            w
            for g, words in sorted(self.groups.items())
            if g != group
            for w in words[:3]
            if w != key and w not in near
        ]
        return near, far


@cache
def load_lexicon() -> Lexicon:
    """The lexicons of ``resources/tldr/`` (read once per process)."""
    objects_data = _load("objects.json")
    attrs = _load("attributes.json")
    numbers = _load("numbers.json")
    spatial = _load("spatial.json")
    objects: dict[str, tuple[str, str]] = {}
    plurals: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    imagenet: set[str] = set()
    for group, entry in objects_data["groups"].items():
        if entry.get("imagenet"):
            imagenet.add(group)
        for word in entry["words"]:
            singular, _, plural = word.partition("|")
            plural = plural or plural_of(singular)
            plurals[singular] = plural
            groups.setdefault(group, []).append(singular)
            objects.setdefault(singular, (singular, group))
            objects.setdefault(plural, (singular, group))
    return Lexicon(
        objects=objects,
        plurals=plurals,
        groups=groups,
        imagenet_groups=frozenset(imagenet),
        near={k: list(v) for k, v in objects_data["near"].items()},
        probes=list(objects_data["probes"]),
        small=frozenset(objects_data["small"]),
        small_words=frozenset(objects_data["small_words"]),
        text_bearing=frozenset(objects_data["text_bearing"]),
        colours=list(attrs["colours"]),
        colour_near={k: list(v) for k, v in attrs["colour_near"].items()},
        materials=list(attrs["materials"]),
        material_near={k: list(v) for k, v in attrs["material_near"].items()},
        sizes=dict(attrs["sizes"]),
        shapes=dict(attrs["shapes"]),
        numbers={k: int(v) for k, v in numbers["words"].items()},
        singular_words=frozenset(numbers["singular"]),
        number_words=dict(numbers["writable"]),
        agreement=dict(numbers["agreement"]),
        spatial=dict(spatial["opposites"]),
        weak_spatial=frozenset(spatial["weak"]),
        negation=_load("negations.json"),
        ocr=_load("ocr.json"),
    )


def _match_phrases(
    words: list[str], vocabulary: dict[str, Any], kind: str, max_len: int = 3
) -> list[Phrase]:
    """Longest-first matches of (multi-word) vocabulary entries in lower-cased ``words``."""
    found: list[Phrase] = []
    i = 0
    while i < len(words):
        for n in range(min(max_len, len(words) - i), 0, -1):
            key = " ".join(words[i : i + n])
            if key in vocabulary:
                found.append(Phrase(kind, i, i + n, key))
                i += n
                break
        else:
            i += 1
    return found


def find_phrases(tokens: list[Token], lexicon: Lexicon | None = None) -> list[Phrase]:
    """Every content phrase in ``tokens``, in text order (a token belongs to at most one)."""
    lex = lexicon or load_lexicon()
    words = [t.text.lower() for t in tokens]
    taken: set[int] = set()
    phrases: list[Phrase] = []

    def add(candidates: list[Phrase]) -> None:
        for p in candidates:
            span = set(range(p.first, p.last))
            if not span & taken:
                taken.update(span)
                phrases.append(p)

    add(_quoted(tokens))
    add(_match_phrases(words, lex.spatial, "spatial"))
    objects = []
    matches = _match_phrases(words, lex.objects, "object")
    starts = {p.first for p in matches}
    for p in matches:
        # "an orange spacesuit", "a glass bowl": a word both object and attribute, before an
        # object, is the attribute.
        if p.last in starts and p.last - p.first == 1:
            kind = (
                "colour" if p.key in lex.colours else "material" if p.key in lex.materials else ""
            )
            if kind:
                add([Phrase(kind, p.first, p.last, p.key)])
                continue
        singular = lex.objects[p.key][0]
        objects.append(Phrase("object", p.first, p.last, singular, plural=p.key != singular))
    add(objects)
    add(_match_phrases(words, dict.fromkeys(lex.colours), "colour", 1))
    add(_match_phrases(words, dict.fromkeys(lex.materials), "material", 1))
    add(_match_phrases(words, lex.sizes, "size", 1))
    add(_match_phrases(words, lex.shapes, "shape", 1))
    numbers = dict.fromkeys([*lex.numbers, *lex.singular_words])
    add(_match_phrases(words, numbers, "number", 2))
    add([Phrase("number", i, i + 1, w) for i, w in enumerate(words) if w.isdigit()])
    negation_words = {**lex.negation["remove"], **lex.negation["swap"]}
    negation_words.update(dict.fromkeys(lex.negation["insert_not_after"]))
    add(_match_phrases(words, negation_words, "negation", 2))
    phrases.sort(key=lambda p: p.first)
    return phrases


def _quoted(tokens: list[Token]) -> list[Phrase]:
    """Quoted text: the tokens between a pair of quote marks."""
    found: list[Phrase] = []
    opening = None
    for i, token in enumerate(tokens):
        if token.text in ('"', "“", "”"):
            if opening is None:
                opening = i
            else:
                if i > opening + 1:
                    key = " ".join(t.text for t in tokens[opening + 1 : i])
                    found.append(Phrase("text", opening + 1, i, key))
                opening = None
    return found


__all__ = [
    "Lexicon",
    "Phrase",
    "Token",
    "find_phrases",
    "load_lexicon",
    "plural_of",
    "tokenize",
    "with_article",
]
