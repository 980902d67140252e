"""Scores from one forward pass: the next token's distribution, and a given response's tokens.

- :func:`first_token_probabilities`: the probability of each candidate token being the model's
  first answer token, from the softmax over the *whole* vocabulary (so their sum says how sure
  the model is that the answer is one of them at all). The re-ranker's ``<I1>..<In>`` tags and a
  multiple-choice question's letters are scored this way.
- :func:`response_logprobs`: a response the model did not write, appended after the prompt
  (teacher forcing), with the log-probability the model gives each of its tokens; the input of
  the hallucination inspector's per-token scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.vlm.prompts import ResponseTokens, append_response, encode

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel


def next_token_logits(vlm: VisionLanguageModel, image: Image.Image | None, prompt: str) -> Any:
    """Logits (float32, 1-D over the vocabulary) of the first answer token."""
    import torch

    inputs = encode(vlm, [prompt], [[image]] if image is not None else None)
    with torch.inference_mode():
        logits = vlm.model(**inputs, use_cache=False).logits
    return logits[0, -1].float()


def first_token_probabilities(
    vlm: VisionLanguageModel,
    image: Image.Image | None,
    prompt: str,
    token_ids: Sequence[int],
) -> list[float]:
    """The probability of each of ``token_ids`` as the first answer token (module doc)."""
    import torch

    if not token_ids:
        return []
    logits = next_token_logits(vlm, image, prompt)
    vocabulary = int(logits.shape[0])
    bad = [t for t in token_ids if not 0 <= int(t) < vocabulary]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the vocabulary of {vocabulary} tokens")
    probabilities = torch.softmax(logits, dim=-1)
    index = torch.tensor([int(t) for t in token_ids], device=probabilities.device)
    return [float(p) for p in probabilities[index].cpu()]


def option_token_ids(vlm: VisionLanguageModel, options: Sequence[str]) -> list[int]:
    """One token id per option (e.g. "A", "B", "yes", "no"), as the model would write it first.

    The option's first token when written after the assistant's turn starts; two options that
    begin with the same token could not be told apart in one pass, so that is an error.
    """
    ids: list[int] = []
    for option in options:
        pieces = vlm.tokenizer.encode(option, add_special_tokens=False)
        if not pieces:
            raise ValueError(f"option {option!r} has no tokens")
        ids.append(int(pieces[0]))
    seen: dict[int, str] = {}
    for option, token in zip(options, ids, strict=True):
        if token in seen:
            raise ModelUnavailableError(
                f"The options {seen[token]!r} and {option!r} start with the same token for this "
                "model, so one forward pass cannot tell them apart; reword one of them."
            )
        seen[token] = option
    return ids


@dataclass(frozen=True, slots=True)
class ResponseScores:
    """Per-token scores of a response: its tokens, and each one's log-probability given the
    image, the prompt and the tokens before it."""

    tokens: ResponseTokens
    logprobs: tuple[float, ...]

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


def response_logprobs(
    vlm: VisionLanguageModel, image: Image.Image | None, prompt: str, response: str
) -> ResponseScores:
    """Log-probability of every token of ``response`` after ``prompt`` about ``image``."""
    import torch

    inputs = encode(vlm, [prompt], [[image]] if image is not None else None)
    inputs, tokens = append_response(vlm, inputs, response)
    if not len(tokens):
        return ResponseScores(tokens, ())
    with torch.inference_mode():
        logits = vlm.model(**inputs, use_cache=False).logits[0].float()
    # The token at position p is predicted by the logits at p - 1.
    predicting = logits[tokens.start - 1 : tokens.start - 1 + len(tokens)]
    logprobs = torch.log_softmax(predicting, dim=-1)
    ids = torch.tensor(tokens.token_ids, device=logprobs.device)
    picked = logprobs.gather(1, ids[:, None])[:, 0]
    return ResponseScores(tokens, tuple(float(v) for v in picked.cpu()))


__all__ = [
    "ResponseScores",
    "first_token_probabilities",
    "next_token_logits",
    "option_token_ids",
    "response_logprobs",
]
