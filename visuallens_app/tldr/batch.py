"""Checking many captions at once: the library's stored captions, ranked by hallucination rate.

The batch view of the Hallucinations panel: every photo that has a caption in the library (from
``visuallens caption`` or File → Caption photos) is scored by a detector in the background, one
photo at a time as a :class:`ScoredCaption` partial result, so the list fills while it runs and a
cancel keeps what was scored. The rate is the share of *checked* tokens that are flagged (the
paper's token-level hallucination rate over what the detector could judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visuallens_app.jobs import CancelToken, Partial, ProgressMeter, StreamingJob
from visuallens_app.lens.history import PHOTO_CAPTIONS
from visuallens_app.tldr.detector import DEFAULT_THRESHOLD, TokenDetector, TokenScores

#: Photos are decoded to about this side for checking (the encoders read 224-384 px).
CHECK_SIDE = 512


@dataclass(frozen=True, slots=True)
class ScoredCaption(Partial):
    """One photo's caption, scored."""

    path: Path
    caption: str
    scores: TokenScores
    threshold: float = DEFAULT_THRESHOLD

    @property
    def checked(self) -> int:
        return sum(1 for token in self.scores.tokens if token.checked)

    @property
    def flagged(self) -> int:
        return len(self.scores.flagged(self.threshold))

    @property
    def rate(self) -> float:
        """Flagged share of the checked tokens (0 when nothing could be checked)."""
        return self.flagged / self.checked if self.checked else 0.0


def library_captions(db: Any) -> list[tuple[Path, str]]:
    """(photo path, caption) for every online photo with a stored caption, one per photo."""
    if PHOTO_CAPTIONS not in db.table_names():
        return []
    rows = db.execute(
        f"SELECT p.path, c.caption FROM photos p JOIN {PHOTO_CAPTIONS} c "
        "ON c.content_hash = p.content_hash WHERE p.state = 'ok' "
        "GROUP BY p.path ORDER BY p.path"
    ).fetchall()
    return [(Path(path), str(caption)) for path, caption in rows if str(caption).strip()]


def score_captions(
    detector: TokenDetector,
    items: Sequence[tuple[Path, str]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    cancel: CancelToken | None = None,
) -> StreamingJob[list[ScoredCaption]]:
    """Score each (photo, caption), worst first at the end; yields each as it is scored.

    A photo that cannot be read is skipped (the library's failures list already names it).
    """
    from visuallens_app.library.decode import DecodeError, decode_photo

    token = cancel or CancelToken()
    meter = ProgressMeter(len(items), "check", unit="captions")
    yield meter.progress(f"Checking {len(items)} caption(s)")
    scored: list[ScoredCaption] = []
    for path, caption in items:
        token.check()
        try:
            image = decode_photo(path, target=CHECK_SIDE).image.convert("RGB")
        except DecodeError:
            meter.advance()
            continue
        result = ScoredCaption(path, caption, detector.score(image, "", caption), threshold)
        scored.append(result)
        meter.advance()
        yield result
        if meter.due():
            yield meter.progress(f"Checked {meter.done} of {len(items)}")
    yield meter.progress(f"Checked {len(scored)} caption(s)")
    return sorted(scored, key=lambda s: (-s.rate, str(s.path)))


__all__ = ["ScoredCaption", "library_captions", "score_captions"]
