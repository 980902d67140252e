"""Run a detector over labelled records and compute the paper's metrics, as a long job."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from visuallens_app.jobs import CancelToken, ProgressMeter, StreamingJob
from visuallens_app.tldr.detector import DEFAULT_THRESHOLD, TokenDetector, TokenScores
from visuallens_app.tldr.inputs import TldrInputError, open_image
from visuallens_app.tldr.labels import LabelledRecord
from visuallens_app.tldr.lexicon import Token
from visuallens_app.tldr.metrics import MetricsReport, ScoredResponse, evaluate_scored


@dataclass(frozen=True)
class EvalResult:
    """The metrics, the detector that earned them, and one ``line``-style problem per skip."""

    detector: str
    report: MetricsReport
    problems: list[str]

    def as_json(self) -> dict[str, object]:
        return {"detector": self.detector, **self.report.as_json(), "problems": self.problems}


def token_p_good(tokens: Sequence[Token], scores: TokenScores) -> list[float | None]:
    """P(good) per record token: the lowest of the checked detector tokens overlapping it.

    Detectors may tokenise differently (a reward model scores sub-words), so spans decide.
    """
    out: list[float | None] = []
    for token in tokens:
        ps = [
            s.p_good
            for s in scores.tokens
            if s.checked and s.p_good is not None and s.start < token.end and token.start < s.end
        ]
        out.append(min(ps) if ps else None)
    return out


def evaluate_detector(
    records: Sequence[LabelledRecord],
    detector: TokenDetector,
    image_root: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    cancel: CancelToken | None = None,
) -> StreamingJob[EvalResult]:
    """Score every record's text against its image (paths relative to ``image_root``)."""
    meter = ProgressMeter(len(records), stage="eval", unit="captions")
    images: OrderedDict[str, Image.Image] = OrderedDict()
    scored: list[ScoredResponse] = []
    problems: list[str] = []
    yield meter.progress()
    for number, record in enumerate(records, start=1):
        if cancel is not None:
            cancel.check()
        meter.advance()
        where = f"record {number} ({record.source_id or 'no id'})"
        try:
            if not record.image:
                raise TldrInputError("it names no image")
            if record.image not in images:
                path = Path(record.image)
                images[record.image] = open_image(path if path.is_absolute() else image_root / path)
                if len(images) > 16:
                    images.popitem(last=False)
            scores = detector.score(images[record.image], "", record.text)
        except TldrInputError as err:
            problems.append(f"{where}: {str(err)[:1].lower()}{str(err)[1:]}")
            continue
        scored.append(
            ScoredResponse(
                [t.text for t in record.tokens],
                record.labels,
                token_p_good(record.tokens, scores),
                record.category,
            )
        )
        if meter.due():
            yield meter.progress()
    yield meter.progress()
    return EvalResult(detector.id, evaluate_scored(scored, threshold), problems)


__all__ = ["EvalResult", "evaluate_detector", "token_p_good"]
