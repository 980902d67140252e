"""Synthetic hard negatives: 1-2 minimal, rule-based edits of a caption in one of eight categories.

Each category finds its phrases with the lexicons (``resources/tldr/``) and proposes edits that
change what the text says about the image (cat -> dog, left -> right, two -> three, is -> is not),
never a paraphrase; :func:`check_edit` is the second look the paper takes (the edit is inside its
category and not a paraphrase) and runs on every proposal. A caption with nothing of a category is
a skip, counted by :func:`perturb_file`'s summary.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from visuallens_app.tldr.labels import TldrDataError, changed_spans
from visuallens_app.tldr.lexicon import (
    Lexicon,
    Phrase,
    Token,
    find_phrases,
    load_lexicon,
    tokenize,
    with_article,
)

CATEGORIES = (
    "spatial",
    "attribute",
    "binding",
    "object",
    "counting",
    "small_object",
    "ocr",
    "counterfactual",
)
#: At most this many changed spans (an article or a verb that must agree may add one).
MAX_SPANS = 3
_SYNONYMS = {
    frozenset(pair)
    for pair in [
        ("big", "large"),
        ("grey", "gray"),
        ("couch", "sofa"),
        ("tiny", "small"),
        ("photo", "picture"),
        ("kitten", "cat"),
        ("puppy", "dog"),
        ("mug", "cup"),
    ]
}


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace tokens ``[first, last)`` with ``text`` (empty: delete them)."""

    first: int
    last: int
    text: str


@dataclass(frozen=True, slots=True)
class Perturbation:
    """An edited caption, its category, and what changed (``"cat -> dog"``)."""

    category: str
    original: str
    text: str
    change: str


def apply_edits(text: str, tokens: Sequence[Token], edits: Iterable[Edit]) -> str:
    """``text`` with the edits spliced in by character offsets; the rest stays byte for byte."""
    out = text
    for edit in sorted(edits, key=lambda e: e.first, reverse=True):
        start, end = tokens[edit.first].start, tokens[edit.last - 1].end
        replacement = edit.text
        original = text[start:end]
        if original[:1].isupper() and replacement[:1].islower():
            replacement = replacement[:1].upper() + replacement[1:]
        if not replacement:
            while start > 0 and out[start - 1] == " ":
                start -= 1
        out = out[:start] + replacement + out[end:]
    return out


# -- the categories ------------------------------------------------------------------------------

Proposer = Callable[[list[Token], list[Phrase], Lexicon], list[list[Edit]]]


def _spatial(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    words = [t.text.lower() for t in tokens]
    found = []
    for p in phrases:
        if p.kind != "spatial":
            continue
        after = words[p.last : p.last + 2]
        if p.key in ("on", "in") and (set(after) & {"left", "right", "top", "bottom", "front"}):
            continue
        if p.key == "in" and set(after) & {"photo", "picture", "image", "background", "air"}:
            continue
        found.append(p)
    strong = [p for p in found if p.key not in lex.weak_spatial]
    return [[Edit(p.first, p.last, lex.spatial[p.key])] for p in (strong or found)]


def _attribute_choices(p: Phrase, lex: Lexicon) -> list[str]:
    if p.kind == "colour":
        return lex.colour_near.get(p.key) or [c for c in lex.colours[:10] if c != p.key]
    if p.kind == "material":
        return lex.material_near.get(p.key) or [m for m in lex.materials[:6] if m != p.key]
    if p.kind == "size":
        return [lex.sizes[p.key]]
    if p.kind == "shape":
        return [lex.shapes[p.key]]
    return []


def _attribute(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    return [
        [Edit(p.first, p.last, choice)]
        for p in phrases
        for choice in _attribute_choices(p, lex)[:3]
    ]


def _binding(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    """Swap the attributes of two objects, or move one attribute to the other object."""
    proposals: list[list[Edit]] = []
    attrs = [p for p in phrases if p.kind in ("colour", "material")]
    for i, a in enumerate(attrs):
        for b in attrs[i + 1 :]:
            if a.kind == b.kind and a.key != b.key:
                proposals.append([Edit(a.first, a.last, b.key), Edit(b.first, b.last, a.key)])
    if not proposals:
        objects = [p for p in phrases if p.kind == "object"]
        for attr in attrs:
            owner = next((o for o in objects if 0 < o.first - attr.first <= 2), None)
            other = next((o for o in objects if owner and o.first > owner.last), None)
            if owner is None or other is None:
                continue
            described = any(0 < other.first - x.first <= 2 for x in attrs)
            if not described:
                noun = " ".join(t.text for t in tokens[other.first : other.last])
                proposals.append(
                    [
                        Edit(attr.first, attr.last, ""),
                        Edit(other.first, other.last, f"{attr.key} {noun}"),
                    ]
                )
    return proposals


def swap_object(tokens: list[Token], p: Phrase, choice: str, lex: Lexicon) -> list[Edit]:
    """The edits that put object ``choice`` in place of ``p`` (plural and article agreeing)."""
    word = lex.plural(choice) if p.plural else choice
    first = p.first
    if first > 0 and tokens[first - 1].text.lower() in ("a", "an") and not p.plural:
        article = with_article(tokens[first - 1].text, word)
        if article.lower() != tokens[first - 1].text.lower():
            return [Edit(first - 1, p.last, f"{article} {word}")]
    return [Edit(first, p.last, word)]


def _rotate(words: list[str], key: str) -> list[str]:
    """``words`` from a place that depends on ``key``: every object gets its own alternatives."""
    if not words:
        return words
    k = zlib.crc32(key.encode()) % len(words)
    return words[k:] + words[:k]


def _object(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    proposals = []
    for p in phrases:
        if p.kind != "object":
            continue
        near, far = lex.object_alternatives(p.key)
        for choice in _rotate(near, p.key)[:3] + _rotate(far, p.key)[:1]:
            proposals.append(swap_object(tokens, p, choice, lex))
    return proposals


def _count_choices(n: int) -> list[int]:
    return [m for m in (n + 1, n + 2, n - 1, n + 3) if m >= 2 and m != n][:3]


def _counting_edits(
    tokens: list[Token], phrases: list[Phrase], lex: Lexicon, only: Phrase | None = None
) -> list[list[Edit]]:
    words = [t.text.lower() for t in tokens]
    objects = [p for p in phrases if p.kind == "object"]
    proposals: list[list[Edit]] = []
    for p in phrases:
        if p.kind != "number":
            continue
        noun = next((o for o in objects if 0 < o.first - p.last + 1 <= 3), None)
        if noun is None or (only is not None and noun != only):
            continue
        if p.key in lex.singular_words and not noun.plural:
            for m in (2, 3):
                edits = [Edit(p.first, p.last, lex.number_words[str(m)])]
                edits.append(Edit(noun.first, noun.last, lex.plural(noun.key)))
                # The verb agrees only when the counted noun is the subject: first in its
                # sentence ("A cat is" -> "Two cats are") or after "there is".
                before = words[p.first - 2 : p.first]
                verb = words[noun.last] if noun.last < len(words) else ""
                if (p.first == 0 or before[-1:] in (["."], [","])) and verb in lex.agreement:
                    edits.append(Edit(noun.last, noun.last + 1, lex.agreement[verb]))
                elif len(before) == 2 and before[0] == "there" and before[1] in lex.agreement:
                    edits.append(Edit(p.first - 1, p.first, lex.agreement[before[1]]))
                proposals.append(edits)
            continue
        n = int(p.key) if p.key.isdigit() else lex.numbers.get(p.key, 0)
        if n < 2 or not noun.plural:
            continue
        for m in _count_choices(n):
            text = str(m) if p.key.isdigit() else lex.number_words.get(str(m), str(m))
            proposals.append([Edit(p.first, p.last, text)])
    return proposals


def _counting(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    return _counting_edits(tokens, phrases, lex)


def _small_object(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    """Change the colour, count or kind of a small object."""
    words = [t.text.lower() for t in tokens]
    proposals: list[list[Edit]] = []
    for p in phrases:
        if p.kind != "object":
            continue
        small_word = any(w in lex.small_words for w in words[max(0, p.first - 3) : p.first])
        if p.key not in lex.small and not small_word:
            continue
        for a in phrases:
            if a.kind == "colour" and 0 < p.first - a.first <= 2:
                proposals += [[Edit(a.first, a.last, c)] for c in _attribute_choices(a, lex)[:2]]
        proposals += _counting_edits(tokens, phrases, lex, only=p)
        near, _ = lex.object_alternatives(p.key)
        small_near = [w for w in near if w in lex.small] or near
        proposals += [swap_object(tokens, p, c, lex) for c in small_near[:2]]
    return proposals


def _ocr(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    """Change quoted text, a sign word or a time; insert text on a text-bearing object if none."""
    ocr = lex.ocr
    signs: dict[str, list[str]] = ocr["sign_words"]
    inserts: list[str] = ocr["insert_texts"]
    proposals: list[list[Edit]] = []
    quoted = [p for p in phrases if p.kind == "text"]
    for p in quoted:
        key = p.key.upper()
        choices = signs.get(key) or ([_shift_digits(p.key)] if re.search(r"\d", p.key) else [])
        choices = choices or [w for w in inserts if w != key][:2]
        if p.key.islower():
            choices = [c.lower() for c in choices]
        elif p.key[:1].isupper() and not p.key.isupper():
            choices = [c.capitalize() for c in choices]
        proposals += [[Edit(p.first, p.last, c)] for c in choices[:2]]
    time = re.compile(ocr["patterns"]["time"])
    for i, t in enumerate(tokens):
        match = time.fullmatch(t.text)
        if match:
            hour, minute = int(match.group(1)), int(match.group(2))
            proposals.append([Edit(i, i + 1, f"{hour}:{(minute + 8) % 60:02d}")])
            proposals.append([Edit(i, i + 1, f"{(hour % 12) + 1}:{minute:02d}")])
        elif len(t.text) >= 2 and t.text.isupper() and t.text.isalpha() and not quoted:
            choices = signs.get(t.text) or [w for w in inserts if w != t.text and " " not in w]
            proposals += [[Edit(i, i + 1, c)] for c in choices[:2]]
    if not proposals:
        for p in phrases:
            follows = tokens[p.last].text.lower() if p.last < len(tokens) else ""
            if p.kind == "object" and p.key in lex.text_bearing and follows != "of":
                noun = " ".join(t.text for t in tokens[p.first : p.last])
                for text in inserts[:2]:
                    insertion = ocr["insert_template"].format(text=text)
                    proposals.append([Edit(p.first, p.last, noun + insertion)])
    return proposals


def _shift_digits(text: str) -> str:
    """The text with its last digit changed (12:00 -> 12:01, 2019 -> 2018)."""
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    i = digits[-1]
    new = str((int(text[i]) + 3) % 10)
    return text[:i] + new + text[i + 1 :]


def _counterfactual(tokens: list[Token], phrases: list[Phrase], lex: Lexicon) -> list[list[Edit]]:
    """Insert or remove a negation; with <-> without, has a <-> has no, open <-> closed."""
    neg = lex.negation
    words = [t.text.lower() for t in tokens]
    proposals: list[list[Edit]] = []
    for p in phrases:
        if p.kind not in ("negation", "spatial"):
            continue
        nxt = words[p.last] if p.last < len(words) else ""
        if p.key in neg["remove"]:
            proposals.append([Edit(p.first, p.last, neg["remove"][p.key])])
        elif p.key in neg["insert_not_after"]:
            if nxt.isalpha() and nxt not in ("not", "no", "there"):
                proposals.append([Edit(p.first, p.last, f"{tokens[p.first].text} not")])
        elif p.key in neg["swap"] and p.kind == "negation":
            needs_object = p.key in ("with", "without", "no")
            if needs_object and nxt not in neg["swap_ok_before"] and nxt not in lex.objects:
                continue
            if p.key == "no" and nxt in lex.objects and lex.objects[nxt][0] != nxt:
                continue  # "no dogs" -> "a dogs" would not be English
            proposals.append([Edit(p.first, p.last, neg["swap"][p.key])])
    return proposals


PROPOSERS: dict[str, Proposer] = {
    "spatial": _spatial,
    "attribute": _attribute,
    "binding": _binding,
    "object": _object,
    "counting": _counting,
    "small_object": _small_object,
    "ocr": _ocr,
    "counterfactual": _counterfactual,
}


# -- the validity check ------------------------------------------------------------------------


def _category_words(category: str, lex: Lexicon) -> set[str]:
    if category == "spatial":
        return {w for k in lex.spatial for w in k.split()} | set(lex.spatial.values())
    if category in ("attribute", "binding"):
        return {*lex.colours, *lex.materials, *lex.sizes, *lex.shapes}
    if category == "counting":
        words = {w for k in lex.numbers for w in k.split()}
        return words | set(lex.singular_words) | set(lex.number_words.values())
    if category == "counterfactual":
        neg = lex.negation
        return {w for k in [*neg["remove"], *neg["swap"]] for w in k.split()} | {"not"}
    return set()


def check_edit(
    original: str, edited: str, category: str, lexicon: Lexicon | None = None
) -> str | None:
    """Why ``edited`` is not a valid hard negative of ``original`` in ``category``, or None.

    Valid: 1-2 minimal edits (an agreeing article or verb may add a third span) that touch a
    word of the category, and not a paraphrase (every change a known synonym or a reordering).
    """
    lex = lexicon or load_lexicon()
    spans = changed_spans(original, edited)
    if not spans:
        return "the edit changes nothing"
    if len(spans) > MAX_SPANS:
        return f"{len(spans)} changes, more than a minimal edit"
    removed = [w for old, _ in spans for w in old]
    inserted = [w for _, new in spans for w in new]
    if sorted(removed) == sorted(inserted) and category != "binding":
        return "the edit only reorders words"
    if all(len(o) == len(n) == 1 and frozenset((o[0], n[0])) in _SYNONYMS for o, n in spans):
        return "the edit is a paraphrase"
    touched = set(removed) | set(inserted)
    if category == "object":
        if not any(w in lex.objects for w in removed):
            return "the edit does not change an object"
    elif category == "small_object":
        words = _category_words("attribute", lex) | _category_words("counting", lex)
        if not touched & (words | set(lex.objects)):
            return "the edit does not change a small object"
    elif category == "ocr":
        if not any(w.isupper() or w.isdigit() or ":" in w for w in _raw_changed(original, edited)):
            return "the edit does not change text in the image"
    elif category == "counterfactual":
        markers = set(lex.negation["markers"])
        if sorted(w for w in removed if w in markers) == sorted(
            w for w in inserted if w in markers
        ):
            return "the edit does not add or remove a negation"
    elif not touched & _category_words(category, lex):
        return f"the edit is not a {category.replace('_', ' ')} change"
    return None


def _raw_changed(original: str, edited: str) -> list[str]:
    """The changed words of both sides in their original case (OCR cares about capitals)."""
    a = [t.text for t in tokenize(original)]
    b = [t.text for t in tokenize(edited)]
    import difflib

    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in a], b=[w.lower() for w in b])
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            out += a[i1:i2] + b[j1:j2]
    return out


def perturb(
    text: str,
    category: str,
    *,
    n: int = 1,
    rng: random.Random | None = None,
    lexicon: Lexicon | None = None,
) -> list[Perturbation]:
    """Up to ``n`` distinct valid hard negatives of ``text`` in ``category``; [] is a skip."""
    if category not in PROPOSERS:
        raise TldrDataError(f"Unknown category {category!r}; choose from {', '.join(CATEGORIES)}.")
    lex = lexicon or load_lexicon()
    rng = rng or random.Random(0)
    tokens = tokenize(text)
    proposals = PROPOSERS[category](tokens, find_phrases(tokens, lex), lex)
    order = list(range(len(proposals)))
    rng.shuffle(order)
    out: list[Perturbation] = []
    seen = {text}
    for i in order:
        edited = apply_edits(text, tokens, proposals[i])
        if edited in seen or check_edit(text, edited, category, lex) is not None:
            continue
        seen.add(edited)
        change = "; ".join(
            f"{' '.join(old) or '∅'} -> {' '.join(new) or '∅'}"
            for old, new in changed_spans(text, edited)
        )
        out.append(Perturbation(category, text, edited, change))
        if len(out) >= n:
            break
    return out


__all__ = [
    "CATEGORIES",
    "Edit",
    "Perturbation",
    "apply_edits",
    "check_edit",
    "perturb",
    "swap_object",
]
