"""Adding a vector to the residual stream of a decoder layer, for exactly as long as asked.

:func:`add_to_layer` registers a forward hook on decoder layer ``i`` that adds ``alpha * v`` to
its output at the chosen positions. Registered with ``prepend=True``, so every other hook on the
layer (and ``output_hidden_states``) sees the steered value. The hook is removed when the block
ends, also when it ends by an exception or a cancelled job: a model left steered would answer
every later question wrongly and silently.

Positions: ``mask`` (batch x prompt length, true where to add) applies to the prompt's forward
pass (the *prefill*); during generation, each step's forward pass has one new position per row,
which is steered only when ``during="generation"`` (and ``mask`` is None or the steered positions
are text tokens, since image tokens are never generated). ``alpha == 0`` returns the layer's
output untouched, so the logits are bitwise those of the unsteered model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from visuallens_app.vlm.layers import decoder_layers

During = Literal["prefill", "generation"]


@dataclass(frozen=True)
class Steering:
    """One vector added at one layer: ``alpha * vector`` at the positions of ``mask``."""

    layer: int
    vector: Any  # a 1-D tensor or array of the model's hidden size
    alpha: float
    mask: Any = None  # [batch, prompt length] booleans; None: every position
    during: During = "prefill"


@contextmanager
def add_to_layer(model: Any, steering: Steering) -> Iterator[None]:
    """Steer ``model`` as ``steering`` says inside the block (module doc)."""
    import torch

    layers = decoder_layers(model)
    if not 0 <= steering.layer < len(layers):
        raise ValueError(
            f"layer {steering.layer} does not exist; this model has layers 0..{len(layers) - 1}"
        )
    vector = torch.as_tensor(steering.vector).flatten()
    alpha = float(steering.alpha)
    mask = None if steering.mask is None else torch.as_tensor(steering.mask, dtype=torch.bool)
    cache: dict[tuple[Any, Any], Any] = {}

    def delta(hidden: Any) -> Any:
        key = (hidden.device, hidden.dtype)
        if key not in cache:
            if vector.numel() != hidden.shape[-1]:
                raise ValueError(
                    f"a steering vector of size {vector.numel()} does not fit hidden states of "
                    f"size {hidden.shape[-1]}"
                )
            cache[key] = (alpha * vector.to(torch.float32)).to(hidden.device, hidden.dtype)
        return cache[key]

    def hook(_module: Any, _args: Any, output: Any) -> Any:
        if alpha == 0.0:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        length = hidden.shape[1]
        if mask is not None and mask.shape[-1] == length:
            where = mask.to(hidden.device)
            if where.ndim == 1:
                where = where.expand(hidden.shape[0], -1)
            steered = hidden + where.unsqueeze(-1).to(hidden.dtype) * delta(hidden)
        elif mask is None and (length > 1 or steering.during == "generation"):
            steered = hidden + delta(hidden)
        elif mask is not None and steering.during == "generation" and length < mask.shape[-1]:
            steered = hidden + delta(hidden)  # a generated token: text, never an image token
        else:
            return output
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered

    handle = layers[steering.layer].register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def steered(model: Any, steerings: Sequence[Steering]) -> Iterator[None]:
    """Several :class:`Steering` at once (at one or several layers), all removed on exit."""
    with ExitStack() as stack:
        for steering in steerings:
            stack.enter_context(add_to_layer(model, steering))
        yield


def hook_count(model: Any) -> int:
    """Forward hooks currently registered on the decoder layers (0 when nothing steers)."""
    return sum(len(layer._forward_hooks) for layer in decoder_layers(model))


__all__ = ["During", "Steering", "add_to_layer", "hook_count", "steered"]
