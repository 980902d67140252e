"""Generation: greedy by default, streamed token by token, cancellable between tokens.

``model.generate`` runs on a helper thread and hands each new token to a queue; the job (a
generator, :mod:`visuallens_app.jobs`) yields the text as it grows, as :class:`TokenPiece`
partial results, and returns the whole :class:`Generated` answer. Cancelling the job's token stops
``generate`` at the next token (a stopping criterion reads it), so a long answer never holds
the model after the user pressed Cancel. Text is decoded incrementally from all tokens so far,
so a character split over several byte-level tokens appears once it is whole.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from visuallens_app.errors import Cancelled, ModelUnavailableError, first_sentence
from visuallens_app.jobs import CancelToken, Partial, Progress, StreamingJob
from visuallens_app.vlm.prompts import encode

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

#: Long enough for a paragraph-long answer, short enough that a runaway model stops soon.
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True, slots=True)
class TokenPiece(Partial):
    """A partial result: the ``index``-th new token and the answer's text so far."""

    index: int
    token_id: int
    text: str  # the whole answer so far


@dataclass(frozen=True, slots=True)
class Generated:
    """A finished answer: its text and token ids (without the prompt), and why it stopped."""

    text: str
    token_ids: tuple[int, ...]
    stopped: str  # "end" (the model's end token), "length" (max_new_tokens) or "cancelled"


def generation_options(vlm: VisionLanguageModel, max_new_tokens: int) -> dict[str, Any]:
    """Greedy decoding with the model's own end and padding tokens."""
    tokenizer = vlm.tokenizer
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        # Tiny and base models often ship a generation config with sampling settings; greedy
        # decoding ignores them, and saying so explicitly keeps transformers from warning.
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is not None:
        options["pad_token_id"] = pad
    return options


def stream(
    vlm: VisionLanguageModel,
    image: Image.Image | None,
    prompt: str,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    cancel: CancelToken | None = None,
) -> StreamingJob[Generated]:
    """Answer ``prompt`` about ``image`` (None: text alone), yielding each token as it comes.

    A job: yields one :class:`Progress` (stage "generate", unit "tokens") and then
    :class:`TokenPiece` records; returns the :class:`Generated` answer. Steering hooks active
    around the call (:mod:`visuallens_app.vlm.hooks`) apply to every step.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    token = cancel or CancelToken()
    inputs = encode(vlm, [prompt], [[image]] if image is not None else None)
    tokens: queue.Queue[Any] = queue.Queue()
    done = object()

    class QueueStreamer(BaseStreamer):
        """Receives the prompt first, then one tensor per new token."""

        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            for token in value.flatten().tolist():
                tokens.put(int(token))

        def end(self) -> None:
            pass

    class StopOnCancel(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = token.cancelled
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    failure: list[BaseException] = []
    output: list[Any] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                output.append(
                    vlm.model.generate(
                        **inputs,
                        **generation_options(vlm, max_new_tokens),
                        streamer=QueueStreamer(),
                        stopping_criteria=StoppingCriteriaList([StopOnCancel()]),
                    )
                )
        except BaseException as err:  # re-raised on the job's thread below
            failure.append(err)
        finally:
            tokens.put(done)

    worker = threading.Thread(target=run, name="vlm-generate", daemon=True)
    yield Progress(
        0, max_new_tokens, f"Generating with {vlm.name}", stage="generate", unit="tokens"
    )
    worker.start()
    ids: list[int] = []
    text = ""
    try:
        while True:
            item = tokens.get()
            if item is done:
                break
            ids.append(item)
            text = vlm.tokenizer.decode(ids, skip_special_tokens=True)
            yield TokenPiece(len(ids) - 1, item, text)
    finally:
        if worker.is_alive():  # the consumer went away (closed generator): stop the model too
            token.cancel()
        worker.join()
    if failure:
        err = failure[0]
        if isinstance(err, (ValueError, TypeError, RuntimeError)):
            raise ModelUnavailableError(
                f"{vlm.name} could not generate an answer: {first_sentence(err)}."
            ) from err
        raise err
    if token.cancelled:
        raise Cancelled
    eos = _end_ids(vlm)
    answer = [i for i in ids if i not in eos]
    stopped = "end" if ids and ids[-1] in eos else "length"
    return Generated(
        vlm.tokenizer.decode(answer, skip_special_tokens=True).strip(), tuple(answer), stopped
    )


def generate_batch(
    vlm: VisionLanguageModel,
    images: Sequence[Image.Image | None],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> list[Generated]:
    """Greedy answers for a batch (one prompt per image), in one ``generate`` call."""
    import torch

    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompt(s) but {len(images)} image(s)")
    if not prompts:
        return []
    groups = [[image] if image is not None else [] for image in images]
    inputs = encode(vlm, list(prompts), groups)
    try:
        with torch.inference_mode():
            output = vlm.model.generate(**inputs, **generation_options(vlm, max_new_tokens))
    except (ValueError, TypeError, RuntimeError) as err:
        raise ModelUnavailableError(
            f"{vlm.name} could not generate an answer: {first_sentence(err)}."
        ) from err
    new = output[:, inputs["input_ids"].shape[1] :]
    eos = _end_ids(vlm)
    pad = vlm.tokenizer.pad_token_id
    answers = []
    for row in new.tolist():
        stopped = "length"
        kept: list[int] = []
        for token in row:
            if token in eos:
                stopped = "end"
                break
            if token != pad:
                kept.append(int(token))
        text = vlm.tokenizer.decode(kept, skip_special_tokens=True).strip()
        answers.append(Generated(text, tuple(kept), stopped))
    return answers


def _end_ids(vlm: VisionLanguageModel) -> set[int]:
    """Every id that ends an answer: the tokenizer's end token and the generation config's."""
    ends: set[int] = set()
    configured = getattr(getattr(vlm.model, "generation_config", None), "eos_token_id", None)
    for value in (vlm.tokenizer.eos_token_id, configured):
        if isinstance(value, int):
            ends.add(value)
        elif isinstance(value, (list, tuple)):
            ends.update(int(v) for v in value)
    return ends


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Generated", "TokenPiece", "generate_batch", "stream"]
