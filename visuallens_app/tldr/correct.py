"""Correcting a flagged text: the paper's self-correction prompt, or ranked replacements.

With a generative vision-language model configured, :func:`correct_with_vlm` feeds the flagged
words back with the paper's prompt ("take a closer look at these words: ...; fix the sentence
'...' with more attention to ..."; minimal edits, unflagged sentences untouched) and returns the
:class:`Correction` with a word-level diff. The unflagged sentences of the original are put back
as they were whatever the model wrote, because the paper's prompt says they stay untouched.
Without a model, :func:`suggestions` proposes, for every flagged phrase, its alternatives (the
lexicon's, or the grounding detector's own) substituted into the sentence and re-scored by the
detector, best P(good) first.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from visuallens_app.jobs import CancelToken, StreamingJob
from visuallens_app.tldr.detector import DEFAULT_THRESHOLD, TokenDetector, TokenScores
from visuallens_app.tldr.inputs import TldrInputError, check_text
from visuallens_app.tldr.lexicon import (
    Lexicon,
    Phrase,
    Token,
    find_phrases,
    load_lexicon,
    tokenize,
    with_article,
)

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

#: Room for a paragraph-long corrected caption.
DEFAULT_CORRECTION_TOKENS = 160
_SENTENCE_END = frozenset({".", "!", "?"})
_DIFF_UNITS = re.compile(r"\s+|\w+(?:['’-]\w+)*|[^\w\s]")
_PREFIX = re.compile(
    r"^\s*(?:corrected (?:description|caption|text)|description|caption|answer)\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’"


class NothingToCorrectError(TldrInputError):
    """No token of the text is flagged, so there is nothing to correct."""


# -- sentences and flagged words -------------------------------------------------------------


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences (split after . ! ?), without outer spaces."""
    tokens = tokenize(text)
    spans: list[tuple[int, int]] = []
    first: Token | None = None
    for token in tokens:
        if first is None:
            first = token
        if token.text in _SENTENCE_END:
            spans.append((first.start, token.end))
            first = None
    if first is not None:
        spans.append((first.start, tokens[-1].end))
    return spans


def flagged_spans(
    scores: TokenScores, threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[int, int]]:
    """Character spans of the flagged words, neighbouring flagged tokens joined into one."""
    spans: list[tuple[int, int]] = []
    last_index = -2
    for index in scores.flagged(threshold):
        token = scores.tokens[index]
        if spans and index == last_index + 1:
            spans[-1] = (spans[-1][0], token.end)
        else:
            spans.append((token.start, token.end))
        last_index = index
    return spans


def _flagged_by_sentence(
    text: str, scores: TokenScores, threshold: float
) -> tuple[list[tuple[int, int]], dict[int, list[str]]]:
    """The sentences of ``text`` and, for each one holding a flagged word, those words."""
    sentences = sentence_spans(text)
    words: dict[int, list[str]] = {}
    for start, end in flagged_spans(scores, threshold):
        for i, (s, e) in enumerate(sentences):
            if s <= start < e:
                word = text[start:end]
                if word not in words.setdefault(i, []):
                    words[i].append(word)
                break
    return sentences, words


def _quoted_list(words: Sequence[str]) -> str:
    quoted = [f'"{w}"' for w in words]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def correction_prompt(text: str, scores: TokenScores, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The paper's self-correction prompt for ``text`` about an image, given its token scores.

    Raises :class:`NothingToCorrectError` (one sentence) when no token is flagged.
    """
    check_text(text)
    sentences, words = _flagged_by_sentence(text, scores, threshold)
    if not words:
        raise NothingToCorrectError(
            f"No word of the text is flagged (P(good) below {threshold:g}), so there is nothing "
            "to correct."
        )
    every = list(dict.fromkeys(w for i in sorted(words) for w in words[i]))
    lines = [
        "Here is a description of the image:",
        f'"{text.strip()}"',
        f"Some words of it may not match the image. Take a closer look at these words: "
        f"{_quoted_list(every)}.",
    ]
    for i in sorted(words):
        s, e = sentences[i]
        lines.append(
            f'Fix the sentence "{text[s:e]}" with more attention to {_quoted_list(words[i])}.'
        )
    lines.append(
        "Make minimal edits: change only the words the image contradicts, and leave every other "
        "sentence exactly as it is. Answer with the whole corrected description only."
    )
    return "\n".join(lines)


# -- the correction and its diff ---------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    """A corrected text and its word-level diff against the original.

    ``diff`` is every difflib opcode over words and the spaces between them: ``(op, old, new)``
    with op ``equal``, ``replace``, ``delete`` or ``insert``; joining the ``old`` parts gives
    ``original`` and joining the ``new`` parts gives ``corrected``.
    """

    original: str
    corrected: str
    diff: list[tuple[str, str, str]]
    generated: str = ""  # what the model answered, before the unflagged sentences were restored
    warnings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.original != self.corrected

    def as_json(self) -> dict[str, object]:
        return {
            "original": self.original,
            "corrected": self.corrected,
            "diff": [{"op": op, "old": old, "new": new} for op, old, new in self.diff],
            "generated": self.generated,
            "warnings": list(self.warnings),
        }


def word_diff(original: str, corrected: str) -> list[tuple[str, str, str]]:
    """Word-level ``(op, old, new)`` spans from difflib, whitespace kept so both texts rebuild."""
    before = _DIFF_UNITS.findall(original)
    after = _DIFF_UNITS.findall(corrected)
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return [
        (op, "".join(before[i1:i2]), "".join(after[j1:j2]))
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
    ]


def clean_correction(answer: str) -> str:
    """The corrected text out of a model's answer: no label, no wrapping quotes, one paragraph."""
    text = _PREFIX.sub("", answer.strip())
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def merge_correction(original: str, answer: str, fix: Sequence[int]) -> tuple[str, tuple[str, ...]]:
    """``original`` with only the sentences ``fix`` (indices) replaced by the model's versions.

    The answer's sentences are matched to the original's: one for one when the model kept the
    count, else each flagged sentence takes the answer's most similar sentence. A flagged
    sentence with no plausible counterpart stays as it was (with a warning).
    """
    sentences = sentence_spans(original)
    answer_spans = sentence_spans(answer)
    written = [answer[s:e] for s, e in answer_spans]
    warnings: list[str] = []
    replacement: dict[int, str] = {}
    if not written:
        return original, ("The model gave no text; the original is kept.",)
    if len(written) == len(sentences):
        replacement = {i: written[i] for i in fix}
    else:
        used: set[int] = set()
        for i in fix:
            s, e = sentences[i]
            ratios = [
                (difflib.SequenceMatcher(a=original[s:e].lower(), b=w.lower()).ratio(), j)
                for j, w in enumerate(written)
                if j not in used
            ]
            best = max(ratios, default=(0.0, -1))
            if best[0] >= 0.4:
                used.add(best[1])
                replacement[i] = written[best[1]]
    missing = [i for i in fix if i not in replacement]
    if missing:
        warnings.append(
            f"The model's answer has no recognisable version of {len(missing)} flagged "
            "sentence(s); they are kept as they were."
        )
    out = original
    for i in sorted(replacement, reverse=True):
        s, e = sentences[i]
        out = out[:s] + replacement[i] + out[e:]
    return out, tuple(warnings)


def correct_with_vlm(
    vlm: VisionLanguageModel,
    image: Image.Image,
    text: str,
    scores: TokenScores,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_new_tokens: int = DEFAULT_CORRECTION_TOKENS,
    cancel: CancelToken | None = None,
) -> StreamingJob[Correction]:
    """Ask ``vlm`` to fix the flagged sentences of ``text`` about ``image`` (the paper's prompt).

    A job: yields the generation's Progress and :class:`~visuallens_app.vlm.generation.TokenPiece`
    partial results as the answer streams; returns the :class:`Correction`, in which every
    unflagged sentence is the original's, byte for byte.
    """
    from visuallens_app.vlm.generation import stream

    prompt = correction_prompt(text, scores, threshold)
    _, words = _flagged_by_sentence(text, scores, threshold)
    generated = yield from stream(vlm, image, prompt, max_new_tokens=max_new_tokens, cancel=cancel)
    answer = clean_correction(generated.text)
    corrected, warnings = merge_correction(text, answer, sorted(words))
    if generated.stopped == "length":
        warnings += (
            f"The model's answer was cut at {max_new_tokens} tokens; the cut sentence may be "
            "incomplete.",
        )
    return Correction(text, corrected, word_diff(text, corrected), generated.text, warnings)


# -- suggestions without a generative model ------------------------------------------------------


def apply_suggestion(text: str, suggestion: Suggestion, replacement: str) -> str:
    """``text`` with the suggestion's span replaced (one of its replacements, or any text)."""
    if text[suggestion.start : suggestion.end] != suggestion.original:
        raise TldrInputError("The text has changed since the suggestion was made.")
    return text[: suggestion.start] + replacement + text[suggestion.end :]


@dataclass(frozen=True)
class Suggestion:
    """A flagged phrase at ``[start, end)`` of the text and its replacements, best first.

    Each replacement is ``(text, p_good)``: the phrase's P(good) when the replacement is put in
    its sentence (None when the detector could not check it there). ``p_good`` is the flagged
    phrase's own P(good).
    """

    start: int
    end: int
    original: str
    replacements: list[tuple[str, float | None]]
    kind: str = ""  # object, colour, material... ("" when no lexicon phrase covers it)
    p_good: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "original": self.original,
            "kind": self.kind,
            "p_good": None if self.p_good is None else round(self.p_good, 4),
            "replacements": [
                {"text": t, "p_good": None if p is None else round(p, 4)}
                for t, p in self.replacements
            ],
        }


def lexicon_alternatives(phrase: Phrase, lex: Lexicon) -> list[str]:
    """What a phrase could be instead, nearest first, from the shipped lexicons."""
    key = phrase.key
    candidates: list[str]
    if phrase.kind == "object":
        near, far = lex.object_alternatives(key)
        candidates = near + far[::3]
    elif phrase.kind == "colour":
        candidates = list(lex.colour_near.get(key, [])) + lex.colours
    elif phrase.kind == "material":
        candidates = list(lex.material_near.get(key, [])) + lex.materials
    elif phrase.kind == "size":
        candidates = [lex.sizes[key]] if key in lex.sizes else []
    elif phrase.kind == "shape":
        candidates = [lex.shapes[key]] if key in lex.shapes else []
    elif phrase.kind == "spatial":
        candidates = [lex.spatial[key]] if key in lex.spatial else []
    elif phrase.kind == "number":
        n = lex.numbers.get(key)
        candidates = [] if n is None else [str(m) for m in (n - 1, n + 1, n + 2) if m >= 1]
    else:
        candidates = []
    seen = {key, lex.plural(key)}
    out = []
    for word in candidates:
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _phrase_at(tokens: list[Token], phrases: list[Phrase], start: int, end: int) -> Phrase | None:
    for phrase in phrases:
        if tokens[phrase.first].start < end and start < tokens[phrase.last - 1].end:
            return phrase
    return None


def _flagged_phrases(
    scores: TokenScores, threshold: float, tokens: list[Token], phrases: list[Phrase]
) -> list[Phrase | tuple[int, int]]:
    """Each lexicon phrase holding a flagged token, and the flagged words no phrase covers
    (as character spans), in text order."""
    found: list[Phrase | tuple[int, int]] = []
    loose: list[tuple[int, int]] = []
    for index in scores.flagged(threshold):
        token = scores.tokens[index]
        phrase = _phrase_at(tokens, phrases, token.start, token.end)
        if phrase is None:
            if loose and token.start - loose[-1][1] <= 1:
                loose[-1] = (loose[-1][0], token.end)
            else:
                loose.append((token.start, token.end))
        elif phrase not in found:
            found.append(phrase)
    where = {p: tokens[p.first].start for p in found if isinstance(p, Phrase)}
    return sorted([*found, *loose], key=lambda x: where[x] if isinstance(x, Phrase) else x[0])


def _span_p_good(scores: TokenScores, start: int, end: int) -> float | None:
    """The lowest P(good) of the checked tokens overlapping [start, end)."""
    values = [
        t.p_good
        for t in scores.tokens
        if t.checked and t.p_good is not None and t.start < end and start < t.end
    ]
    return min(values) if values else None


def _with_article(tokens: list[Token], phrase: Phrase) -> bool:
    """Whether a singular object's a/an goes with it (so a replacement can agree)."""
    return (
        phrase.kind == "object"
        and not phrase.plural
        and phrase.first > 0
        and tokens[phrase.first - 1].text.lower() in ("a", "an")
    )


def _replacement(text: str, tokens: list[Token], phrase: Phrase, word: str, lex: Lexicon) -> str:
    """What takes the place of the suggestion's span: plural and article agreeing."""
    if phrase.kind == "object" and phrase.plural:
        word = lex.plural(word)
    if _with_article(tokens, phrase):
        article = tokens[phrase.first - 1].text
        word = f"{with_article(article, word)} {word}"
        original = article
    else:
        original = text[tokens[phrase.first].start : tokens[phrase.last - 1].end]
    if original[:1].isupper() and word[:1].islower():
        word = word[:1].upper() + word[1:]
    return word


def _score_all(
    detector: TokenDetector, image: Image.Image, texts: Sequence[str]
) -> list[TokenScores]:
    score_many: Any = getattr(detector, "score_many", None)
    if callable(score_many):
        return list(score_many([(image, "", t) for t in texts]))
    return [detector.score(image, "", t) for t in texts]


def suggestions(
    detector: TokenDetector,
    image: Image.Image,
    text: str,
    scores: TokenScores,
    *,
    per_phrase: int = 5,
    threshold: float = DEFAULT_THRESHOLD,
    candidates: int | None = None,
) -> list[Suggestion]:
    """Ranked replacements for every flagged phrase of ``text``, re-scored by ``detector``.

    A suggestion's span is the flagged phrase (with its a/an for a singular object, so that a
    replacement's article agrees). With the grounding detector, every alternative it compared
    the phrase with is ranked from that same encoder pass (:meth:`GroundingDetector.
    rank_alternatives`). With any other detector, the phrase's lexicon alternatives (up to
    ``candidates``, default ``2 * per_phrase``) are put into its sentence and the variants
    scored in one batch (``score_many`` where the detector has it). The ``per_phrase`` with
    the highest P(good) are kept. A flagged word no lexicon phrase covers gets a suggestion
    with no replacements.
    """
    check_text(text)
    lex = getattr(detector, "_lex", None) or load_lexicon()
    tokens = tokenize(text)
    sentences = sentence_spans(text)
    tries = candidates if candidates is not None else 2 * per_phrase
    flagged = flagged_spans(scores, threshold)
    ranker: Any = getattr(detector, "rank_alternatives", None)
    margins_of: Any = getattr(detector, "margins", None)
    judged: dict[tuple[int, int], list[tuple[str, float]]] = {}
    if flagged and callable(ranker) and callable(margins_of):
        _, margins, *_ = margins_of(image, text)
        for m in margins:
            span = (tokens[m.phrase.first].start, tokens[m.phrase.last - 1].end)
            judged[span] = ranker(m)
    phrases = find_phrases(tokens, lex)

    plan: list[tuple[Suggestion, list[tuple[str, float | None]], list[tuple[str, str, int, int]]]]
    plan = []
    for phrase_or_span in _flagged_phrases(scores, threshold, tokens, phrases):
        if not isinstance(phrase_or_span, Phrase):
            start, end = phrase_or_span
            plan.append((Suggestion(start, end, text[start:end], [], "", None), [], []))
            continue
        phrase = phrase_or_span
        p_start, p_end = tokens[phrase.first].start, tokens[phrase.last - 1].end
        own = _span_p_good(scores, p_start, p_end)
        s_start = tokens[phrase.first - 1].start if _with_article(tokens, phrase) else p_start
        suggestion = Suggestion(s_start, p_end, text[s_start:p_end], [], phrase.kind, own)
        s, e = next(((a, b) for a, b in sentences if a <= p_start < b), (0, len(text)))
        # What the sentence already names elsewhere is no replacement ("a cat on a cat").
        named = {
            p.key
            for p in phrases
            if p is not phrase and p.kind == phrase.kind and s <= tokens[p.first].start < e
        }
        if (p_start, p_end) in judged:
            ranked: list[tuple[str, float | None]] = [
                (_replacement(text, tokens, phrase, w, lex), p)
                for w, p in judged[p_start, p_end]
                if w not in named
            ]
            plan.append((suggestion, ranked, []))
            continue
        variants = []
        for word in [w for w in lexicon_alternatives(phrase, lex) if w not in named][:tries]:
            replacement = _replacement(text, tokens, phrase, word, lex)
            sentence = text[s:s_start] + replacement + text[p_end:e]
            new_start = s_start - s
            variants.append((replacement, sentence, new_start, new_start + len(replacement)))
        plan.append((suggestion, [], variants))

    texts = [v[1] for _, _, variants in plan for v in variants]
    scored = iter(_score_all(detector, image, texts) if texts else [])
    out = []
    for suggestion, ranked, variants in plan:
        for replacement, _, new_start, new_end in variants:
            ranked.append((replacement, _span_p_good(next(scored), new_start, new_end)))
        ranked.sort(key=lambda r: -1.0 if r[1] is None else r[1], reverse=True)
        out.append(
            Suggestion(
                suggestion.start,
                suggestion.end,
                suggestion.original,
                ranked[:per_phrase],
                suggestion.kind,
                suggestion.p_good,
            )
        )
    return out


__all__ = [
    "Correction",
    "NothingToCorrectError",
    "Suggestion",
    "apply_suggestion",
    "correct_with_vlm",
    "correction_prompt",
    "flagged_spans",
    "lexicon_alternatives",
    "merge_correction",
    "sentence_spans",
    "suggestions",
    "word_diff",
]
