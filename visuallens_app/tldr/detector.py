"""The one interface of every hallucination detector: per-token P(good) with character offsets.

A detector scores a response (a caption, an answer) about an image: every token gets the
probability that it is grounded in the image (1 = good, 0 = hallucinated, the paper's label
convention), its character span in the response, whether the detector actually checked it, and,
where the detector can say, a heatmap of where on the image its evidence lies. A token the
detector cannot judge (a colour, for an encoder that knows only objects) is ``checked=False`` with
``p_good=None``: reported as not checked, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

#: The paper's decision threshold: a token is flagged when P(good) < 0.5.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class TokenScore:
    """One token of the response: its text, span, P(good) and whether it was checked."""

    text: str
    start: int  # character offsets into the response
    end: int
    p_good: float | None  # None when not checked
    checked: bool

    def flagged(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.checked and self.p_good is not None and self.p_good < threshold


@dataclass(frozen=True, eq=False)
class TokenScores:
    """A scored response. ``heatmaps[i]`` (float32, image height x width, in [0, 1]) is the
    evidence map of token ``i``, for the tokens the detector can map."""

    response: str
    tokens: tuple[TokenScore, ...]
    detector: str  # the detector's id
    heatmaps: dict[int, NDArray[np.float32]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # e.g. "the text was cut to 512 tokens"

    def flagged(self, threshold: float = DEFAULT_THRESHOLD) -> list[int]:
        """Indices of the tokens flagged as hallucinated."""
        return [i for i, token in enumerate(self.tokens) if token.flagged(threshold)]

    def as_json(self, threshold: float = DEFAULT_THRESHOLD) -> dict[str, object]:
        """The CLI's ``--json`` shape: offsets into the given text."""
        return {
            "detector": self.detector,
            "threshold": threshold,
            "tokens": [
                {
                    "text": t.text,
                    "start": t.start,
                    "end": t.end,
                    "p_good": None if t.p_good is None else round(t.p_good, 4),
                    "checked": t.checked,
                    "flagged": t.flagged(threshold),
                }
                for t in self.tokens
            ],
            "warnings": list(self.warnings),
        }


@runtime_checkable
class TokenDetector(Protocol):
    """What the panel and the CLI drive: the grounding detector or the paper's reward model."""

    @property
    def id(self) -> str: ...

    def score(self, image: Image.Image, prompt: str, response: str) -> TokenScores: ...


__all__ = ["DEFAULT_THRESHOLD", "TokenDetector", "TokenScore", "TokenScores"]
