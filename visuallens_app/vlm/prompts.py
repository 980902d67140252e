"""Prompts for any vision-language model: its own chat template, or a plain fallback.

A model with a chat template is prompted the way it was trained (the template places the image
placeholder, the processor expands it to the model's image tokens). A bare base model without one
gets the LLaVA-1.5 convention ``USER: <image>\\n{prompt}\\nASSISTANT:``. Batches carry one list of
images per prompt (``[[img], [img]]``, what Idefics3 and SmolVLM require and the others accept) and
are padded on the left, so every row's next token is at the last position.

A response the model did not write (a caption to score, an answer to steer towards) is tokenised
on its own and appended after the prompt, with its tokens' character offsets, so per-token scores
map back onto the text exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from visuallens_app.errors import ModelUnavailableError, first_sentence

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

#: Integer inputs that run along the sequence besides the ids (Qwen2-VL and Gemma mark image
#: tokens in one); an appended response extends each with this value.
_SEQUENCE_FILL = {"attention_mask": 1}


def chat_text(processor: Any, prompt: str, *, images: int = 1) -> str:
    """``prompt`` in the model's chat format with ``images`` placeholders, ready for the answer."""
    if getattr(processor, "chat_template", None):
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(images)]
        content.append({"type": "text", "text": prompt})
        messages = [{"role": "user", "content": content}]
        text: str = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return text
    image_token = getattr(processor, "image_token", None) or "<image>"
    placeholders = "".join(image_token for _ in range(images))
    prefix = f"{placeholders}\n" if images else ""
    return f"USER: {prefix}{prompt}\nASSISTANT:"


def encode(
    vlm: VisionLanguageModel,
    prompts: Sequence[str],
    images: Sequence[Sequence[Image.Image]] | None = None,
) -> dict[str, Any]:
    """Model inputs for a batch of prompts, each with its own images, left-padded, on the device.

    ``images=None`` (or an empty list per prompt) prompts the language model with text alone.
    """
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompt(s) but {len(images)} image list(s)")
    per_prompt = [list(group) for group in images] if images is not None else [[] for _ in prompts]
    texts = [
        chat_text(vlm.processor, prompt, images=len(group))
        for prompt, group in zip(prompts, per_prompt, strict=True)
    ]
    rgb = [[image.convert("RGB") for image in group] for group in per_prompt]
    tokenizer = vlm.tokenizer
    previous_side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "left"
    try:
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(rgb):
            kwargs["images"] = rgb
        try:
            encoded = vlm.processor(**kwargs)
        except (ValueError, TypeError) as err:
            raise ModelUnavailableError(
                f"The processor of {vlm.name} cannot prepare this prompt: {first_sentence(err)}."
            ) from err
    finally:
        tokenizer.padding_side = previous_side
    return to_device(vlm, dict(encoded))


def to_device(vlm: VisionLanguageModel, inputs: dict[str, Any]) -> dict[str, Any]:
    """Every tensor on the model's device; floating ones (pixels) in the model's dtype."""
    moved: dict[str, Any] = {}
    for key, value in inputs.items():
        if hasattr(value, "to"):
            if value.is_floating_point():
                value = value.to(vlm.device, dtype=vlm.dtype)
            else:
                value = value.to(vlm.device)
        moved[key] = value
    return moved


@dataclass(frozen=True, slots=True)
class ResponseTokens:
    """A response appended to a prompt: where its tokens sit and what text each one covers.

    ``start`` is the position of the response's first token in the input ids; ``offsets[i]`` is
    the (start, end) character span of token ``i`` in ``text``.
    """

    text: str
    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    start: int

    def __len__(self) -> int:
        return len(self.token_ids)

    def pieces(self) -> list[str]:
        """The text of each token (its character span of ``text``)."""
        return [self.text[a:b] for a, b in self.offsets]


def tokenize_response(
    vlm: VisionLanguageModel, response: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``response`` without special tokens, and each one's character span."""
    encoded = vlm.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in encoded["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
    return ids, _tight_offsets(response, offsets)


def _tight_offsets(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans that tile the text: byte-level tokenizers report overlapping or empty spans for
    pieces of one multi-byte character; each span is clamped to start where the last ended."""
    tight: list[tuple[int, int]] = []
    cursor = 0
    for start, end in offsets:
        start = max(start, cursor)
        end = max(end, start)
        tight.append((start, min(end, len(text))))
        cursor = end
    return tight


def append_response(
    vlm: VisionLanguageModel, inputs: dict[str, Any], response: str
) -> tuple[dict[str, Any], ResponseTokens]:
    """``inputs`` (one prompt, batch of 1) with ``response``'s tokens appended after the prompt."""
    import torch

    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError("a response is appended to a single prompt, not a batch")
    token_ids, offsets = tokenize_response(vlm, response)
    start = int(ids.shape[1])
    extended = dict(inputs)
    extra = torch.tensor([token_ids], dtype=ids.dtype, device=ids.device)
    for key, value in inputs.items():
        if key == "input_ids":
            extended[key] = torch.cat([value, extra], dim=1)
        elif (
            hasattr(value, "shape")
            and value.ndim == 2
            and tuple(value.shape) == tuple(ids.shape)
            and not value.is_floating_point()
        ):
            fill = torch.full_like(extra, _SEQUENCE_FILL.get(key, 0), dtype=value.dtype)
            extended[key] = torch.cat([value, fill], dim=1)
    return extended, ResponseTokens(response, tuple(token_ids), tuple(offsets), start)


__all__ = [
    "ResponseTokens",
    "append_response",
    "chat_text",
    "encode",
    "to_device",
    "tokenize_response",
]
