"""The inside of a vision-language model, found the same way in every family.

The language model's decoder layers are ``model.get_decoder().layers`` (LLaVA, Qwen2-VL,
Idefics3, Gemma 3, PaliGemma, also through a peft wrapper, which forwards the call); image
tokens are the positions whose id is ``config.image_token_id`` (or the older
``image_token_index``): never the processor's, since Gemma 3's processor names its
start-of-image token. Hidden states are read with forward hooks on the decoder layers, so layer
``i`` means the output of decoder layer ``i`` (0-based); ``output_hidden_states`` is not used
because its last entry is taken after the final norm, unlike every other one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from visuallens_app.errors import ModelUnavailableError

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel


def decoder_layers(model: Any) -> Any:
    """The language model's decoder layers (a ``torch.nn.ModuleList``)."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    layers = getattr(decoder, "layers", None)
    if layers is None:  # a family whose decoder keeps them elsewhere: the longest ModuleList
        layers = _longest_layer_list(model)
    if layers is None or len(layers) == 0:
        raise ModelUnavailableError(
            f"Cannot find the decoder layers of this {type(model).__name__}; steering and "
            "hidden-state inspection need a standard Hugging Face language model inside."
        )
    return layers


def _longest_layer_list(model: Any) -> Any:
    import torch

    best = None
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and "vision" not in name
            and (best is None or len(module) > len(best))
        ):
            best = module
    return best


def decoder_layer_path(model: Any) -> str:
    """The dotted module path of the decoder layers, e.g. ``model.language_model.layers``.

    Adapter targets (LoRA ``q_proj``/``v_proj``) also match the vision tower's attention; a
    regex on this path restricts them to the language model.
    """
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return str(name)
    raise ModelUnavailableError("The decoder layers are not part of this model's module tree.")


def lora_target_regex(model: Any, projections: Sequence[str] = ("q_proj", "v_proj")) -> str:
    """A peft ``target_modules`` regex naming ``projections`` in the language model only."""
    import re

    path = re.escape(decoder_layer_path(model))
    names = "|".join(re.escape(p) for p in projections)
    return rf"{path}\.\d+\..*({names})"


def image_token_id(model_or_vlm: Any) -> int | None:
    """The id that marks image positions in the input ids, from the model's config."""
    model = getattr(model_or_vlm, "model", model_or_vlm)
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value >= 0:
            return value
    return None


def image_mask(vlm: VisionLanguageModel, input_ids: Any) -> Any:
    """A boolean tensor like ``input_ids``, true at the image tokens."""
    token = image_token_id(vlm)
    if token is None:
        raise ModelUnavailableError(
            f"{vlm.name} does not say which token marks an image (no image_token_id in its "
            "config), so image positions cannot be found."
        )
    return input_ids == token


def special_mask(vlm: VisionLanguageModel, input_ids: Any) -> Any:
    """True at every special token (BOS, template markers, image tokens, padding)."""
    import torch

    special = set(getattr(vlm.tokenizer, "all_special_ids", []) or [])
    token = image_token_id(vlm)
    if token is not None:
        special.add(token)
    ids = torch.tensor(sorted(special), device=input_ids.device, dtype=input_ids.dtype)
    return torch.isin(input_ids, ids)


def layer_output(output: Any) -> Any:
    """The hidden-state tensor of a decoder layer's output (a tensor, or a tuple in older code)."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def capture_layers(model: Any, layers: Sequence[int]) -> Iterator[dict[int, Any]]:
    """Record the output of each decoder layer in ``layers`` during the forward passes inside.

    Yields a dict filled as the model runs: layer -> hidden states ``[batch, seq, hidden]`` of the
    last forward pass (detached). Hooks are removed on exit, also on an exception.
    """
    modules = decoder_layers(model)
    count = len(modules)
    for layer in layers:
        if not 0 <= layer < count:
            raise ValueError(f"layer {layer} does not exist; this model has layers 0..{count - 1}")
    captured: dict[int, Any] = {}
    handles = []

    def recorder(layer: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            captured[layer] = layer_output(output).detach()

        return hook

    try:
        for layer in layers:
            handles.append(modules[layer].register_forward_hook(recorder(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def hidden_states(
    vlm: VisionLanguageModel, inputs: dict[str, Any], layers: Sequence[int]
) -> dict[int, Any]:
    """Decoder-layer outputs for ``inputs`` in one forward pass: layer -> [batch, seq, hidden]."""
    import torch

    with capture_layers(vlm.model, layers) as captured, torch.inference_mode():
        vlm.model(**inputs, use_cache=False)
    return dict(captured)


def text_hidden_states(
    vlm: VisionLanguageModel, texts: Sequence[str], layers: Sequence[int]
) -> tuple[dict[int, Any], Any, Any]:
    """Decoder-layer outputs of the language model on plain text (no chat template, no image).

    Returns (layer -> ``[batch, seq, hidden]``, input ids, attention mask); padding is on the
    right, so position ``j`` of every row is its ``j``-th token.
    """
    import torch

    tokenizer = vlm.tokenizer
    previous_side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "right"
    try:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side
    ids = encoded["input_ids"].to(vlm.device)
    mask = encoded["attention_mask"].to(vlm.device)
    language_model = vlm.model.get_decoder()
    with capture_layers(vlm.model, layers) as captured, torch.inference_mode():
        language_model(input_ids=ids, attention_mask=mask, use_cache=False)
    return dict(captured), ids, mask


__all__ = [
    "capture_layers",
    "decoder_layer_path",
    "decoder_layers",
    "hidden_states",
    "image_mask",
    "image_token_id",
    "layer_output",
    "lora_target_regex",
    "special_mask",
    "text_hidden_states",
]
