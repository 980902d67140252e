"""The paper's metrics, exactly: token / sentence / response accuracy, mAP, hallucination rates.

Labels follow the paper: 1 = good, 0 = bad (hallucinated). A token is predicted bad when its
P(good) is below the threshold (0.5). A sentence (tokens up to and including a ``.`` token) is bad
when any of its tokens is; a response likewise. mAP(neg) is the average precision of the bad class
(scored by 1 - P(good)) over all tokens pooled, mAP(pos) that of the good class (scored by P(good)).
A token the detector did not check (P(good) None) counts as predicted good with P(good) = 1: the
detector did not flag it. Hallucination rates are the share of bad tokens / sentences / responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from visuallens_app.tldr.detector import DEFAULT_THRESHOLD

GOOD, BAD = 1, 0


@dataclass(frozen=True)
class ScoredResponse:
    """One response's tokens, their true labels and the detector's P(good) (None: unchecked)."""

    tokens: Sequence[str]
    labels: Sequence[int]
    p_good: Sequence[float | None]
    category: str = ""

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.labels) == len(self.p_good):
            raise ValueError("tokens, labels and p_good must have the same length")

    def scores(self) -> list[float]:
        return [1.0 if p is None else float(p) for p in self.p_good]

    def predicted(self, threshold: float = DEFAULT_THRESHOLD) -> list[int]:
        return [GOOD if p >= threshold else BAD for p in self.scores()]


def sentence_ids(tokens: Sequence[str]) -> list[int]:
    """The sentence index of each token: a sentence ends with (and includes) a ``.`` token."""
    ids: list[int] = []
    current = 0
    for token in tokens:
        ids.append(current)
        if token == ".":
            current += 1
    return ids


def unit_labels(tokens: Sequence[str], labels: Sequence[int]) -> list[int]:
    """One label per sentence: bad (0) when any of its tokens is bad."""
    out: dict[int, int] = {}
    for sid, label in zip(sentence_ids(tokens), labels, strict=True):
        out[sid] = min(out.get(sid, GOOD), label)
    return [out[k] for k in sorted(out)]


def token_accuracy(
    responses: Sequence[ScoredResponse], threshold: float = DEFAULT_THRESHOLD
) -> float:
    pairs = [
        (t, p) for r in responses for t, p in zip(r.labels, r.predicted(threshold), strict=True)
    ]
    return _share(sum(t == p for t, p in pairs), len(pairs))


def sentence_accuracy(
    responses: Sequence[ScoredResponse], threshold: float = DEFAULT_THRESHOLD
) -> float:
    right = total = 0
    for r in responses:
        truth = unit_labels(r.tokens, r.labels)
        guess = unit_labels(r.tokens, r.predicted(threshold))
        right += sum(t == g for t, g in zip(truth, guess, strict=True))
        total += len(truth)
    return _share(right, total)


def response_accuracy(
    responses: Sequence[ScoredResponse], threshold: float = DEFAULT_THRESHOLD
) -> float:
    right = sum(
        min(r.labels, default=GOOD) == min(r.predicted(threshold), default=GOOD) for r in responses
    )
    return _share(right, len(responses))


def average_precision(responses: Sequence[ScoredResponse], cls: int) -> float | None:
    """Average precision of class ``cls`` (0 bad, 1 good) over all tokens; None without any."""
    from sklearn.metrics import average_precision_score  # type: ignore[import-untyped]

    labels = np.array([label for r in responses for label in r.labels], dtype=int)
    scores = np.array([s for r in responses for s in r.scores()], dtype=float)
    if cls == BAD:
        labels, scores = 1 - labels, 1.0 - scores
    if labels.size == 0 or labels.sum() == 0:
        return None
    return float(average_precision_score(labels, scores))


@dataclass(frozen=True)
class HallucinationRates:
    """Share of bad tokens, sentences and responses in a set of captions."""

    token: float
    sentence: float
    response: float

    def as_json(self) -> dict[str, float]:
        return {"token": self.token, "sentence": self.sentence, "response": self.response}


def hallucination_rates(
    items: Sequence[tuple[Sequence[str], Sequence[int]]],
) -> HallucinationRates:
    """Rates of bad units among (tokens, labels) pairs: true labels, or a detector's predictions."""
    tokens = [label for _, labels in items for label in labels]
    sentences = [s for toks, labels in items for s in unit_labels(toks, labels)]
    responses = [min(labels, default=GOOD) for _, labels in items]
    return HallucinationRates(
        token=_share(tokens.count(BAD), len(tokens)),
        sentence=_share(sentences.count(BAD), len(sentences)),
        response=_share(responses.count(BAD), len(responses)),
    )


@dataclass(frozen=True)
class MetricSet:
    """The paper's table for one set of responses."""

    responses: int
    tokens: int
    token_accuracy: float
    sentence_accuracy: float
    response_accuracy: float
    map_bad: float | None
    map_good: float | None
    checked_share: float  # tokens the detector checked
    bad_checked_share: float | None  # bad tokens the detector checked
    true_rates: HallucinationRates
    predicted_rates: HallucinationRates

    def as_json(self) -> dict[str, object]:
        return {
            "responses": self.responses,
            "tokens": self.tokens,
            "token_accuracy": self.token_accuracy,
            "sentence_accuracy": self.sentence_accuracy,
            "response_accuracy": self.response_accuracy,
            "map_bad": self.map_bad,
            "map_good": self.map_good,
            "checked_share": self.checked_share,
            "bad_checked_share": self.bad_checked_share,
            "hallucination_rates": self.true_rates.as_json(),
            "predicted_hallucination_rates": self.predicted_rates.as_json(),
        }


def metric_set(
    responses: Sequence[ScoredResponse], threshold: float = DEFAULT_THRESHOLD
) -> MetricSet:
    checked = [p is not None for r in responses for p in r.p_good]
    bad_checked = [
        p is not None
        for r in responses
        for p, label in zip(r.p_good, r.labels, strict=True)
        if label == BAD
    ]
    return MetricSet(
        responses=len(responses),
        tokens=len(checked),
        token_accuracy=token_accuracy(responses, threshold),
        sentence_accuracy=sentence_accuracy(responses, threshold),
        response_accuracy=response_accuracy(responses, threshold),
        map_bad=average_precision(responses, BAD),
        map_good=average_precision(responses, GOOD),
        checked_share=_share(sum(checked), len(checked)),
        bad_checked_share=_share(sum(bad_checked), len(bad_checked)) if bad_checked else None,
        true_rates=hallucination_rates([(r.tokens, r.labels) for r in responses]),
        predicted_rates=hallucination_rates(
            [(r.tokens, r.predicted(threshold)) for r in responses]
        ),
    )


@dataclass(frozen=True)
class MetricsReport:
    """Overall metrics and the same per category (the paper's per-category breakdown)."""

    overall: MetricSet
    per_category: dict[str, MetricSet] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD

    def as_json(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "overall": self.overall.as_json(),
            "per_category": {k: v.as_json() for k, v in self.per_category.items()},
        }

    def table(self) -> str:
        names = ("A_T", "A_S", "A_R", "mAP-", "mAP+")
        header = f"{'':15s} {'n':>5s} " + " ".join(f"{n:>6s}" for n in names) + "   chk"
        rows = [header, _row("all", self.overall)]
        rows += [_row(name, m) for name, m in self.per_category.items()]
        r = self.overall.true_rates
        rows.append(
            f"hallucination rate (labels): token {r.token:.2%}, sentence {r.sentence:.2%}, "
            f"response {r.response:.2%}"
        )
        p = self.overall.predicted_rates
        rows.append(
            f"hallucination rate (detector): token {p.token:.2%}, sentence {p.sentence:.2%}, "
            f"response {p.response:.2%}"
        )
        return "\n".join(rows)


def _row(name: str, m: MetricSet) -> str:
    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:6.1f}"

    return (
        f"{name:15s} {m.responses:5d} {pct(m.token_accuracy)} {pct(m.sentence_accuracy)} "
        f"{pct(m.response_accuracy)} {pct(m.map_bad)} {pct(m.map_good)} {pct(m.checked_share)[1:]}"
    )


def evaluate_scored(
    responses: Sequence[ScoredResponse], threshold: float = DEFAULT_THRESHOLD
) -> MetricsReport:
    """The overall table and one per category, in order of first appearance."""
    categories = list(dict.fromkeys(r.category for r in responses if r.category))
    return MetricsReport(
        overall=metric_set(responses, threshold),
        per_category={
            c: metric_set([r for r in responses if r.category == c], threshold) for c in categories
        },
        threshold=threshold,
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


__all__ = [
    "HallucinationRates",
    "MetricSet",
    "MetricsReport",
    "ScoredResponse",
    "average_precision",
    "evaluate_scored",
    "hallucination_rates",
    "metric_set",
    "response_accuracy",
    "sentence_accuracy",
    "sentence_ids",
    "token_accuracy",
    "unit_labels",
]
