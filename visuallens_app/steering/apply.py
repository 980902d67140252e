"""Applying a steering vector: token masks, side-by-side answers, and prompts re-steered cheaply.

The vector is added through :mod:`visuallens_app.vlm.hooks` (``alpha * v`` at the masked positions
of the chosen decoder layers, prefill only by default, hooks always removed). Masks
(:func:`steering_mask`): ``image`` (the image tokens), ``text`` (the prompt's text tokens except
the last one, whose output is the first answer token's prediction), or ``both``; special tokens
(BOS, template markers, the markers around image tiles, padding) never.

:class:`PreparedPrompt` runs the whole model once and records what the language model received
(its input embeddings with the image features merged in, position ids, attention mask), through a
pre-hook on the language model, so every family's own preprocessing is kept (Qwen2-VL's 3-D
positions included). A steered score then re-runs only the language model on those inputs: the
processor and the vision tower run once per prompt, not once per layer x alpha cell.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from visuallens_app.jobs import CancelToken, Partial, Progress, StreamingJob
from visuallens_app.steering import SteeringError
from visuallens_app.steering.vectors import SteeringVector

if TYPE_CHECKING:
    from visuallens_app.vlm.hooks import During, Steering
    from visuallens_app.vlm.loading import VisionLanguageModel

Mask = Literal["image", "text", "both"]
MASKS: tuple[Mask, ...] = ("image", "text", "both")


def steering_mask(vlm: VisionLanguageModel, inputs: dict[str, Any], where: str) -> Any:
    """Booleans ``[batch, prompt length]``: where the vector is added (module doc)."""
    from visuallens_app.vlm.layers import image_mask, special_mask

    if where not in MASKS:
        raise SteeringError(f"Unknown mask {where!r}; use {', '.join(MASKS)}.")
    ids = inputs["input_ids"]
    image = image_mask(vlm, ids)
    text = ~special_mask(vlm, ids)
    attention = inputs.get("attention_mask")
    if attention is not None:
        text &= attention.bool()
    text[:, -1] = False  # left padding: the last column is every row's last prompt token
    if where == "image":
        if not bool(image.any()):
            raise SteeringError("The image mask needs a photo: this prompt has no image tokens.")
        return image
    return text if where == "text" else image | text


def steerings(
    vector: SteeringVector,
    layers: Sequence[int],
    alpha: float,
    mask: Any,
    during: During = "prefill",
) -> list[Steering]:
    """One :class:`~visuallens_app.vlm.hooks.Steering` per layer of ``vector``."""
    from visuallens_app.vlm.hooks import Steering

    return [Steering(layer, vector.at(layer), float(alpha), mask, during) for layer in layers]


@contextmanager
def applied(vlm: VisionLanguageModel, steering: Sequence[Steering]) -> Iterator[None]:
    """The steering active inside the block; a vector of the wrong size is one sentence."""
    from visuallens_app.vlm.hooks import steered

    for item in steering:
        size = int(getattr(item.vector, "shape", (0,))[0])
        if size != vlm.hidden_size:
            raise SteeringError(
                f"A vector of size {size} does not fit {vlm.name}, whose hidden size is "
                f"{vlm.hidden_size}."
            )
    with steered(vlm.model, steering):
        yield


# -- a prompt run once, scored many times ----------------------------------------------------------


@dataclass
class PreparedPrompt:
    """A prompt whose language-model inputs were recorded by one full forward pass (module doc)."""

    vlm: VisionLanguageModel
    inputs: dict[str, Any]
    decoder_args: tuple[Any, ...]
    decoder_kwargs: dict[str, Any]
    masks: dict[str, Any] = field(default_factory=dict)

    def mask(self, where: str) -> Any:
        if where not in self.masks:
            self.masks[where] = steering_mask(self.vlm, self.inputs, where)
        return self.masks[where]

    def logits(self, steering: Sequence[Steering] = ()) -> Any:
        """Next-token logits (float32, 1-D) with ``steering`` active on the language model."""
        import torch

        vlm = self.vlm
        with applied(vlm, steering), torch.inference_mode():
            output = vlm.model.get_decoder()(*self.decoder_args, **self.decoder_kwargs)
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            logits = vlm.model.get_output_embeddings()(hidden[:, -1]).float()[0]
        cap = getattr(vlm.text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def probabilities(self, token_ids: Sequence[int], steering: Sequence[Steering] = ()) -> Any:
        """Probabilities (numpy) of ``token_ids`` as the first answer token (whole vocabulary)."""
        import torch

        logits = self.logits(steering)
        probabilities = torch.softmax(logits, dim=-1)
        return probabilities[list(token_ids)].cpu().numpy()


def prepare(vlm: VisionLanguageModel, image: Image.Image | None, prompt: str) -> PreparedPrompt:
    """Encode ``prompt`` about ``image`` and record the language model's inputs (module doc)."""
    import torch

    from visuallens_app.vlm.prompts import encode

    inputs = encode(vlm, [prompt], [[image]] if image is not None else None)
    decoder = vlm.model.get_decoder()
    recorded: dict[str, Any] = {}

    def record(_module: Any, args: Any, kwargs: Any) -> None:
        recorded["args"], recorded["kwargs"] = tuple(args), dict(kwargs)

    handle = decoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    if "kwargs" not in recorded:
        raise SteeringError(f"{vlm.name} did not run its language model on this prompt.")
    return PreparedPrompt(vlm, inputs, recorded["args"], recorded["kwargs"])


# -- asking with and without steering --------------------------------------------------------------

Side = Literal["unsteered", "steered"]


@dataclass(frozen=True, slots=True)
class AnswerPiece(Partial):
    """A partial result of :func:`ask`: one side's answer so far."""

    side: Side
    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.text, "probabilities": dict(self.probabilities)}


@dataclass(frozen=True, slots=True)
class AskResult:
    """The unsteered and the steered answer to one question about one photo."""

    unsteered: Answer
    steered: Answer

    def to_json(self) -> dict[str, Any]:
        return {"unsteered": self.unsteered.to_json(), "steered": self.steered.to_json()}


def ask(
    vlm: VisionLanguageModel,
    image: Image.Image | None,
    question: str,
    *,
    vector: SteeringVector,
    layers: Sequence[int],
    alpha: float,
    mask: str = "image",
    during: During = "prefill",
    options: Sequence[str] = (),
    max_new_tokens: int = 32,
    cancel: CancelToken | None = None,
) -> StreamingJob[AskResult]:
    """Answer ``question`` unsteered, then steered, streaming both (a job; unit: tokens).

    With ``options``, each option's first-token probability is measured on both sides too.
    """
    from visuallens_app.vlm.generation import TokenPiece, stream
    from visuallens_app.vlm.prompts import encode
    from visuallens_app.vlm.scoring import first_token_probabilities, option_token_ids

    token = cancel or CancelToken()
    vector.fits(vlm)
    inputs = encode(vlm, [question], [[image]] if image is not None else None)
    steering = steerings(vector, layers, alpha, steering_mask(vlm, inputs, mask), during)
    option_ids = option_token_ids(vlm, list(options)) if options else []
    answers: dict[str, Answer] = {}
    for side, active in (("unsteered", []), ("steered", steering)):
        token.check()
        yield Progress(0, max_new_tokens, f"Answering {side}", stage=side, unit="tokens")
        with applied(vlm, active):
            job = stream(vlm, image, question, max_new_tokens=max_new_tokens, cancel=token)
            while True:
                try:
                    update = next(job)
                except StopIteration as stop:
                    generated = stop.value
                    break
                if isinstance(update, TokenPiece):
                    yield AnswerPiece(side, update.text)  # type: ignore[arg-type]
                    yield Progress(update.index + 1, max_new_tokens, stage=side, unit="tokens")
            probabilities = (
                first_token_probabilities(vlm, image, question, option_ids) if option_ids else []
            )
        answers[side] = Answer(
            generated.text, dict(zip(options, map(float, probabilities), strict=True))
        )
    return AskResult(answers["unsteered"], answers["steered"])


__all__ = [
    "MASKS",
    "Answer",
    "AnswerPiece",
    "AskResult",
    "PreparedPrompt",
    "applied",
    "ask",
    "prepare",
    "steering_mask",
    "steerings",
]
