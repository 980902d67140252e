"""New single tokens in a model's vocabulary, in memory only (the user's folder is never written).

The re-ranker scores candidates by the first-token probability of tags ``<I1>..<In>``. In every
common tokenizer those tags start with the same piece ("<" or "<I"), so one forward pass could
not tell them apart unless each tag is a token of its own. A tag the tokenizer lacks is added and
the embeddings grown; each new row (input embedding and output head) starts as a weighted mean
of the rows of the tag's text pieces, later pieces weighing more (so ``<I12>`` and ``<I21>``
differ), so an un-fine-tuned model reads the tag roughly as its text rather than as noise. That
is a starting point, not a trained skill: a model fine-tuned with the tags already has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel


def ensure_tokens(vlm: VisionLanguageModel, tokens: Sequence[str]) -> list[int]:
    """Ids of ``tokens``, each a single token; the missing ones are added first (module doc)."""
    import torch

    tokenizer, model = vlm.tokenizer, vlm.model
    missing = [token for token in tokens if not is_single_token(tokenizer, token)]
    pieces = {token: tokenizer.encode(token, add_special_tokens=False) for token in missing}
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        embeddings = model.get_input_embeddings()
        # Vocabularies are often padded past the tokenizer's length; only grow, never shrink.
        if len(tokenizer) > embeddings.weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        inputs = model.get_input_embeddings().weight
        output = model.get_output_embeddings()
        outputs = None if output is None else output.weight
        with torch.no_grad():
            for token in missing:
                token_id = tokenizer.convert_tokens_to_ids(token)
                ids = [i for i in pieces[token] if 0 <= i < inputs.shape[0]]
                if not ids:
                    continue
                weights = torch.arange(1, len(ids) + 1, dtype=inputs.dtype, device=inputs.device)
                weights = (weights / weights.sum())[:, None]
                inputs[token_id] = (inputs[ids] * weights).sum(dim=0)
                if outputs is not None and outputs.data_ptr() != inputs.data_ptr():
                    outputs[token_id] = (outputs[ids] * weights.to(outputs.dtype)).sum(dim=0)
    return [int(tokenizer.convert_tokens_to_ids(token)) for token in tokens]


def is_single_token(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` is one known token of ``tokenizer``."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return len(ids) == 1 and ids[0] != tokenizer.unk_token_id


__all__ = ["ensure_tokens", "is_single_token"]
