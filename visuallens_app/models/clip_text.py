"""CLIP's text side without open_clip or torch: a cached copy of the text tower, run in numpy,
and a port of open_clip's tokenizer.

``import open_clip`` is about 7 s on 2 cores (it drags in torchvision, timm and transformers)
and ``import torch`` about 1.8 s, against milliseconds for one query's forward pass, so a cold
command-line text search paid almost all of its time importing (issue 13; rclip answers in
1.6 s through ONNX Runtime). After open_clip has loaded a checkpoint's text tower once,
:func:`save_text_side` keeps what ``encode_text`` needs in the cache directory, keyed by the
checkpoint's fingerprint: the weights (or, for a safetensors checkpoint that already holds
them under open_clip's names, a reference to that file), the architecture in a few numbers,
and open_clip's BPE vocabulary. :func:`open_text_side` reads it back, and
:class:`ClipTextTower` computes open_clip's ``CLIP.encode_text`` with the same operations in
numpy. The entry is only written after checking the tokenizer's ids and the features against
open_clip on probe texts; the same comparison is a test (tests/test_loading.py).

Only open_clip's plain ``CLIP`` text transformer with its ``SimpleTokenizer`` is cached; other
text towers (Hugging Face models, SigLIP's) keep loading through open_clip.
"""

from __future__ import annotations

import gzip
import html
import itertools
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.models.tower_cache import entry_key, read_config, write_entry

#: Bumped whenever the cached files or the module below change meaning.
FORMAT = 1
_CONFIG = "text-tower.json"
_WEIGHTS = "text-tower.safetensors"
_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
#: Up to this many texts run on one BLAS thread (:meth:`CachedTextSide.encode`).
_SMALL_BATCH = 16
_PROBE_TEXTS = (
    "a photo of a cat",
    "",
    "Ein Fahrrad vor dem Café, 2024!",
    "&amp; it's   a LONG caption " * 12,
)


def text_side_key(encoder_id: str, checkpoint: Path, open_clip_version: str) -> str:
    """The cache entry's name: the encoder, the checkpoint file as it is now, and open_clip."""
    return entry_key(FORMAT, encoder_id, open_clip_version, checkpoint=checkpoint)


# -- the tokenizer -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """open_clip's reversible byte -> printable character table (from OpenAI's CLIP)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


class ClipTokenizer:
    """open_clip's ``SimpleTokenizer`` (``clean="lower"``, truncation), ported line for line.

    Same BPE file, same text cleaning (ftfy, HTML unescaping, whitespace, lower case), same
    token ids; a test compares it with open_clip's on awkward texts.
    """

    def __init__(self, bpe_path: Path, context_length: int) -> None:
        import ftfy
        import regex  # type: ignore[import-untyped]

        self._fix_text = ftfy.fix_text
        self.context_length = context_length
        self.byte_encoder = _bytes_to_unicode()
        with gzip.open(bpe_path) as handle:
            lines = handle.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(merge) for merge in merges)
        special = ["<start_of_text>", "<end_of_text>"]
        vocab.extend(special)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self._cache = {t: t for t in special}
        self._pattern = regex.compile(
            "|".join(special) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot_token_id = self.encoder[special[0]]
        self.eot_token_id = self.encoder[special[1]]

    def _clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._fix_text(text))).strip()
        return " ".join(text.split()).strip().lower()

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = set(itertools.pairwise(word))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = set(itertools.pairwise(word))
        joined = " ".join(word)
        self._cache[token] = joined
        return joined

    def encode(self, text: str) -> list[int]:
        """The BPE ids of ``text``, without the start and end tokens."""
        ids: list[int] = []
        for token in self._pattern.findall(self._clean(text)):
            chars = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(chars).split(" "))
        return ids

    def __call__(self, texts: Sequence[str] | str) -> NDArray[np.int64]:
        """(n, context_length) int64 ids: start, text, end, zero padding; too long is cut."""
        if isinstance(texts, str):
            texts = [texts]
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            result[row, : len(tokens)] = tokens
        return result


# -- the text tower ------------------------------------------------------------------------------

_SQRT_HALF = np.float32(np.sqrt(0.5))


def _layer_norm(x: NDArray[np.float32], weight: Any, bias: Any, eps: float) -> Any:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.square(centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _erf(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """erf to float32 precision (Abramowitz and Stegun 7.1.26, absolute error < 1.5e-7)."""
    z = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
    poly = np.float32(1.061405429) * t
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    poly *= np.exp(-z * z)
    return np.asarray(np.copysign(np.float32(1.0) - poly, x), dtype=np.float32)


def _linear(x: Any, weight: Any, bias: Any) -> Any:
    """``x @ weight.T + bias`` over the last axis, as one 2-D product (numpy's stacked matmul
    does not use BLAS: 40x slower for a batch of texts)."""
    flat = x.reshape(-1, x.shape[-1]) @ weight.T + bias
    return flat.reshape(*x.shape[:-1], weight.shape[0])


def _softmax(x: NDArray[np.float32]) -> NDArray[np.float32]:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


class ClipTextTower:
    """open_clip's ``CLIP.encode_text`` in numpy: token and position embeddings, pre-norm
    transformer blocks (causal multi-head attention, GELU MLP), final norm, pooling, projection.

    numpy rather than torch: ``import torch`` alone is 1.8 s of a 2.5 s cold search on 2 cores,
    and one query's forward pass is milliseconds in either. With the causal mask and the
    end-of-text pooling of CLIP, positions after the last end token change nothing, so the
    sequence is cut there (a short query runs a handful of positions instead of 77).
    """

    def __init__(self, config: dict[str, Any], weights: dict[str, NDArray[np.float32]]) -> None:
        self.config = config
        self.w = weights
        self.layers = int(config["layers"])
        self.heads = int(config["heads"])
        self.eps = float(config["eps"])

    def __call__(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """(n, dim) features of (n, context) token ids, not normalised."""
        w, cfg = self.w, self.config
        pool = str(cfg["pool"])
        if pool == "argmax":
            ends = tokens.argmax(axis=1)
        elif pool == "eos":
            ends = (tokens == cfg["eos_id"]).argmax(axis=1)
        else:
            ends = np.zeros(len(tokens), dtype=np.int64) if pool == "first" else None
        length = tokens.shape[1]
        if cfg["causal"] and ends is not None:
            length = int(ends.max()) + 1  # later positions never reach the pooled one
        tokens = tokens[:, :length]
        x = w["token_embedding.weight"][tokens] + w["positional_embedding"][:length]
        mask = None
        if cfg["causal"]:
            mask = np.triu(np.full((length, length), -np.inf, dtype=np.float32), k=1)
        n, width = x.shape[0], x.shape[2]
        head = width // self.heads
        for i in range(self.layers):
            p = f"transformer.resblocks.{i}."
            h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.eps)
            qkv = _linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"])
            qkv = qkv.reshape(n, length, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head))
            if mask is not None:
                scores = scores + mask
            attended = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(n, length, width)
            x = x + _linear(attended, w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
            h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], self.eps)
            h = _linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])
            if cfg["quick_gelu"]:
                h = h / (1.0 + np.exp(np.float32(-1.702) * h))
            else:
                h = np.float32(0.5) * h * (np.float32(1.0) + _erf(h * _SQRT_HALF))
            x = x + _linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        x = _layer_norm(x, w["ln_final.weight"], w["ln_final.bias"], self.eps)
        pooled = x[:, -1] if ends is None else x[np.arange(n), ends]
        if cfg["projection"] == "linear":
            pooled = pooled @ w["text_projection.weight"].T
            if cfg["proj_bias"]:
                pooled = pooled + w["text_projection.bias"]
        elif cfg["projection"] == "matrix":
            pooled = pooled @ w["text_projection"]
        return np.ascontiguousarray(pooled, dtype=np.float32)


def _weight_names(config: dict[str, Any]) -> list[str]:
    """The state-dict keys (open_clip's names) that :class:`ClipTextTower` reads."""
    names = ["token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias"]
    for i in range(int(config["layers"])):
        p = f"transformer.resblocks.{i}."
        for part in ("ln_1", "attn.in_proj", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"{p}{part}_weight" if part == "attn.in_proj" else f"{p}{part}.weight"]
            names += [f"{p}{part}_bias" if part == "attn.in_proj" else f"{p}{part}.bias"]
    if config["projection"] == "linear":
        names.append("text_projection.weight")
        if config["proj_bias"]:
            names.append("text_projection.bias")
    elif config["projection"] == "matrix":
        names.append("text_projection")
    return names


def _tower_config(model: Any, tokenizer: Any) -> dict[str, Any] | None:
    """What :class:`ClipTextTower` needs to rebuild ``model``'s text side; None when it cannot.

    Only open_clip's plain ``CLIP`` with default residual blocks and a ``SimpleTokenizer`` that
    cleans to lower case and truncates (the OpenAI and LAION ViT models).
    """
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock
    from torch import nn

    if type(model) is not CLIP or type(tokenizer) is not SimpleTokenizer:
        return None
    if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
        return None
    if len(tokenizer.encoder) != 49408 or not model.transformer.batch_first:
        return None
    blocks = list(model.transformer.resblocks)
    first = blocks[0]
    if any(type(b) is not ResidualAttentionBlock for b in blocks):
        return None
    if isinstance(first.ls_1, LayerScale) or hasattr(first, "ln_1_kv"):
        return None
    gelu = first.mlp.gelu
    if not (isinstance(gelu, QuickGELU) or (type(gelu) is nn.GELU and gelu.approximate == "none")):
        return None
    projection = model.text_projection
    if isinstance(projection, nn.Linear):
        kind, dim, bias = "linear", projection.out_features, projection.bias is not None
    elif projection is not None:
        kind, dim, bias = "matrix", int(projection.shape[1]), False
    else:
        kind, dim, bias = "none", int(model.transformer.width), False
    return {
        "format": FORMAT,
        "width": int(model.transformer.width),
        "layers": len(blocks),
        "heads": int(first.attn.num_heads),
        "mlp_width": int(first.mlp.c_fc.out_features),
        "quick_gelu": isinstance(gelu, QuickGELU),
        "eps": float(model.ln_final.eps),
        "vocab_size": int(model.token_embedding.num_embeddings),
        "context_length": int(model.positional_embedding.shape[0]),
        "tokenizer_context_length": int(tokenizer.context_length),
        "causal": model.attn_mask is not None,
        "pool": str(model.text_pool_type),
        "eos_id": model.text_eos_id,
        "projection": kind,
        "proj_bias": bias,
        "dim": int(dim),
    }


# -- the cache -----------------------------------------------------------------------------------


def save_text_side(model: Any, tokenizer: Any, directory: Path, *, source: Path) -> bool:
    """Keep ``model``'s loaded text side in ``directory``; False when it cannot be kept.

    Written only when :class:`ClipTokenizer` gives open_clip's ids and :class:`ClipTextTower`
    open_clip's features on probe texts, from float32 weights (fp16 ones on a GPU would not
    give the CPU's vectors later). The weights are a reference to ``source`` when that
    safetensors file holds exactly them under open_clip's names, else a safetensors file of
    their own. The entry is written to a temporary folder renamed at the end, so a crash never
    leaves half an entry.
    """
    import torch

    config = _tower_config(model, tokenizer)
    if config is None:
        return False
    own = model.state_dict()
    names = _weight_names(config)
    if any(name not in own for name in names):
        return False
    state = {name: own[name].detach().cpu() for name in names}
    if any(t.dtype != torch.float32 for t in state.values()):
        return False
    bpe = Path(_bpe_of(tokenizer))
    ours = ClipTokenizer(bpe, int(config["tokenizer_context_length"]))
    with torch.inference_mode():
        tokens = tokenizer(list(_PROBE_TEXTS))
        if not np.array_equal(ours(list(_PROBE_TEXTS)), tokens.numpy()):
            return False
        device = next(model.parameters()).device
        expected = model.encode_text(tokens.to(device)).float().cpu().numpy()
    tower = ClipTextTower(config, {k: v.numpy() for k, v in state.items()})
    got = tower(tokens.numpy())
    if got.shape != expected.shape or not _same_features(got, expected):
        return False

    return write_entry(
        directory,
        config,
        _CONFIG,
        _WEIGHTS,
        source=source,
        state=state,
        also=lambda folder: shutil.copyfile(bpe, folder / _VOCAB),  # the tokenizer's BPE
    )


def _same_features(got: NDArray[np.float32], expected: NDArray[np.float32]) -> bool:
    """Rows of equal direction (cosine >= 0.99999) and length (within 1e-4)."""
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
    norms, expected_norms = np.linalg.norm(got64, axis=1), np.linalg.norm(expected64, axis=1)
    cosines = (got64 * expected64).sum(axis=1) / np.maximum(norms * expected_norms, 1e-30)
    lengths = np.abs(norms - expected_norms) <= 1e-4 * np.maximum(expected_norms, 1e-30)
    return bool(cosines.min() >= 0.99999 and lengths.all())


def _bpe_of(tokenizer: Any) -> str:
    from open_clip.tokenizer import default_bpe

    return str(getattr(tokenizer, "bpe_path", None) or default_bpe())


class CachedTextSide:
    """A cache entry: its numbers from the JSON at once, weights and tokenizer at first use."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        self.config = config
        self.dim = int(config["dim"])
        self._tower: ClipTextTower | None = None
        self._tokenizer: ClipTokenizer | None = None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._tower is not None

    def load(self) -> None:
        """Read the weights (only the text tower's, from a shared checkpoint) and the BPE."""
        if self._tower is not None:
            return
        from safetensors import safe_open

        file = Path(self.config["weights"]["file"])
        file = file if file.is_absolute() else self.directory / file
        with safe_open(str(file), framework="numpy") as handle:
            weights = {name: handle.get_tensor(name) for name in _weight_names(self.config)}
        self._tokenizer = ClipTokenizer(
            self.directory / _VOCAB, int(self.config["tokenizer_context_length"])
        )
        self._tower = ClipTextTower(self.config, weights)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The text features (not normalised), as open_clip's ``encode_text`` gives them.

        A few texts run on one BLAS thread: their products are too small to share, and on a
        busy 2-core machine OpenBLAS's waiting threads made one query 10-70x slower.
        """
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        self.load()
        assert self._tower is not None
        assert self._tokenizer is not None
        tokens = self._tokenizer(list(texts))
        if tokens.shape[0] > _SMALL_BATCH:
            return self._tower(tokens)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._tower(tokens)


def open_text_side(directory: Path) -> CachedTextSide | None:
    """The cache entry in ``directory``, or None when there is none or it is unusable."""
    config = read_config(directory, _CONFIG, FORMAT)
    if config is None:
        return None
    weights = Path(str(config.get("weights", {}).get("file", "")))
    weights = weights if weights.is_absolute() else directory / weights
    if not weights.is_file() or not (directory / _VOCAB).is_file():
        return None
    try:  # the tokenizer's text cleaning; open_clip depends on both
        import ftfy  # noqa: F401
        import regex  # noqa: F401
    except ImportError:
        return None
    return CachedTextSide(directory, config)
