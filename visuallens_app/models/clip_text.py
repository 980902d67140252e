"""CLIP's text side without open_clip: a cached copy of the text tower and a port of its tokenizer.

``import open_clip`` is about 7 s on 2 cores (it drags in torchvision, timm and transformers),
against 0.3 s for the text forward pass itself, so a cold command-line text search paid
almost all of its time importing (issue 13). After open_clip has loaded a checkpoint's text
tower once, :func:`save_text_side` keeps what ``encode_text`` needs in the cache directory,
keyed by the checkpoint's fingerprint: the weights (or, for a safetensors checkpoint that
already holds them under open_clip's names, a reference to that file), the architecture in a
few numbers, and open_clip's BPE vocabulary. :func:`open_text_side` rebuilds it from torch's own
layers, with the same modules in the same order as open_clip's ``CLIP.encode_text``, so the
features are open_clip's (the cache is only written after checking that on probe texts; the
comparison is also a test, tests/test_loading.py).

Only open_clip's plain ``CLIP`` text transformer with its ``SimpleTokenizer`` is cached; other
text towers (Hugging Face models, SigLIP's) keep loading through open_clip.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Bumped whenever the cached files or the module below change meaning.
FORMAT = 1
_CONFIG = "text-tower.json"
_WEIGHTS = "text-tower.safetensors"
_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
_PROBE_TEXTS = (
    "a photo of a cat",
    "",
    "Ein Fahrrad vor dem Café, 2024!",
    "&amp; it's   a LONG caption " * 12,
)


def text_side_key(encoder_id: str, checkpoint: Path, open_clip_version: str) -> str:
    """The cache entry's name: the encoder, the checkpoint file as it is now, and open_clip."""
    stat = checkpoint.stat()
    parts = [FORMAT, encoder_id, str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256(json.dumps([*parts, open_clip_version]).encode()).hexdigest()
    return digest[:20]


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
        import regex

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
        pairs = set(zip(word, word[1:], strict=False))
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
            pairs = set(zip(word, word[1:], strict=False))
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

    def __call__(self, texts: Sequence[str] | str) -> torch.Tensor:
        """(n, context_length) int64 ids: start, text, end, zero padding; too long is cut."""
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            result[row, : len(tokens)] = torch.tensor(tokens)
        return result


# -- the text tower ------------------------------------------------------------------------------


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """open_clip's ``ResidualAttentionBlock`` without layer scale, under the same names."""

    def __init__(
        self, width: int, heads: int, mlp_width: int, quick_gelu: bool, eps: float, meta: Any
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps, device=meta)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True, device=meta)
        self.ln_2 = nn.LayerNorm(width, eps=eps, device=meta)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, mlp_width, device=meta)),
                    ("gelu", _QuickGELU() if quick_gelu else nn.GELU()),
                    ("c_proj", nn.Linear(mlp_width, width, device=meta)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.ln_1(x)
        mask = mask.to(x.dtype) if mask is not None else None
        attended = self.attn(normed, normed, normed, need_weights=False, attn_mask=mask)[0]
        x = x + attended
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class _Transformer(nn.Module):
    def __init__(self, blocks: list[_Block]) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)


class ClipTextTower(nn.Module):
    """open_clip's ``CLIP.encode_text`` (token and position embeddings, pre-norm transformer,
    final norm, pooling, projection) with open_clip's parameter names.

    The parameters are made on torch's meta device, to be assigned from a checkpoint: no random
    fill, and no ``torch.device("meta")`` mode either (its ``normal_`` imports torch._dynamo,
    2 s on 2 cores).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        meta = torch.device("meta")
        width, eps = int(config["width"]), float(config["eps"])
        self.pool = str(config["pool"])
        self.eos_id = config.get("eos_id")
        vocab = int(config["vocab_size"])
        self.token_embedding = nn.Embedding(
            vocab, width, _weight=torch.empty(vocab, width, device=meta)
        )
        self.positional_embedding = nn.Parameter(
            torch.empty(int(config["context_length"]), width, device=meta)
        )
        self.transformer = _Transformer(
            [
                _Block(
                    width,
                    int(config["heads"]),
                    int(config["mlp_width"]),
                    bool(config["quick_gelu"]),
                    eps,
                    meta,
                )
                for _ in range(int(config["layers"]))
            ]
        )
        self.ln_final = nn.LayerNorm(width, eps=eps, device=meta)
        projection = str(config["projection"])
        dim = int(config["dim"])
        self.text_projection: nn.Module | nn.Parameter | None
        if projection == "linear":
            self.text_projection = nn.Linear(width, dim, bias=config["proj_bias"], device=meta)
        elif projection == "matrix":
            self.text_projection = nn.Parameter(torch.empty(width, dim, device=meta))
        else:
            self.text_projection = None
        self.causal = bool(config["causal"])

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype
        x = self.token_embedding(text).to(dtype) + self.positional_embedding.to(dtype)
        mask: torch.Tensor | None = None
        if self.causal:
            n = self.positional_embedding.shape[0]
            mask = torch.full((n, n), float("-inf"), device=x.device).triu_(1)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        if self.pool == "argmax":
            x = x[rows, text.argmax(dim=-1)]
        elif self.pool == "eos":
            x = x[rows, (text == self.eos_id).int().argmax(dim=-1)]
        elif self.pool == "first":
            x = x[:, 0]
        elif self.pool == "last":
            x = x[:, -1]
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return x


def _tower_config(model: Any, tokenizer: Any) -> dict[str, Any] | None:
    """What :class:`ClipTextTower` needs to rebuild ``model``'s text side; None when it cannot.

    Only open_clip's plain ``CLIP`` with default residual blocks and a ``SimpleTokenizer`` that
    cleans to lower case and truncates (the OpenAI and LAION ViT models).
    """
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock

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

    Written only when the rebuilt tower gives open_clip's features on probe texts (float32
    only: fp16 weights on a GPU would not give the CPU's vectors later). The weights are a
    reference to ``source`` when that safetensors file holds exactly them under these names,
    else their own safetensors file. Writes go to a temporary folder renamed at the end, so a
    crash never leaves half an entry.
    """
    config = _tower_config(model, tokenizer)
    if config is None:
        return False
    tower = _tower_from(model, config)
    if tower is None:
        return False
    cpu = torch.device("cpu")
    state = {k: v.detach().to(cpu) for k, v in tower.state_dict().items()}
    if any(v.dtype != torch.float32 for v in state.values() if v.is_floating_point()):
        return False
    with torch.inference_mode():
        tokens = tokenizer(list(_PROBE_TEXTS))
        ours = ClipTokenizer(Path(_bpe_of(tokenizer)), config["tokenizer_context_length"])
        if not torch.equal(ours(list(_PROBE_TEXTS)), tokens):
            return False
        device = next(model.parameters()).device
        expected = model.encode_text(tokens.to(device)).float().cpu()
        got = tower.to(device)(tokens.to(device)).float().cpu()
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        return False

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if _holds(source, state):
            config["weights"] = {"file": str(source.resolve())}
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / _WEIGHTS))
            config["weights"] = {"file": _WEIGHTS}
        shutil.copyfile(_bpe_of(tokenizer), tmp / _VOCAB)
        (tmp / _CONFIG).write_text(json.dumps(config, indent=1), encoding="utf-8")
        os.replace(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def _bpe_of(tokenizer: Any) -> str:
    from open_clip.tokenizer import default_bpe

    return str(getattr(tokenizer, "bpe_path", None) or default_bpe())


def _tower_from(model: Any, config: dict[str, Any]) -> ClipTextTower | None:
    """A :class:`ClipTextTower` sharing ``model``'s text weights; None if the names differ."""
    tower = ClipTextTower(config)
    own = {k: v for k, v in model.state_dict().items() if k in tower.state_dict()}
    try:
        tower.load_state_dict(own, strict=True, assign=True)
    except RuntimeError:
        return None
    return tower.eval()


def _holds(source: Path, state: dict[str, torch.Tensor]) -> bool:
    """Whether the safetensors file ``source`` has every tensor of ``state``, bit for bit."""
    if source.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(source), framework="pt") as handle:
            names = set(handle.keys())
            return all(
                name in names and torch.equal(handle.get_tensor(name), tensor)
                for name, tensor in state.items()
            )
    except (OSError, RuntimeError, ValueError):
        return False


class CachedTextSide:
    """A cache entry: its numbers from the JSON at once, the tower and tokenizer at first use."""

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

    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        """Read the weights onto ``device`` (parameters made on meta: no random fill)."""
        if self._tower is not None:
            return
        from safetensors import safe_open

        tower = ClipTextTower(self.config)
        file = Path(self.config["weights"]["file"])
        file = file if file.is_absolute() else self.directory / file
        with safe_open(str(file), framework="pt") as handle:
            state = {name: handle.get_tensor(name) for name in tower.state_dict()}
        state = {
            k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            for k, v in state.items()
        }
        tower.load_state_dict(state, strict=True, assign=True)
        self._tokenizer = ClipTokenizer(
            self.directory / _VOCAB, int(self.config["tokenizer_context_length"])
        )
        self._tower = tower.eval()

    def encode(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        """The text features (not normalised), as open_clip's ``encode_text`` gives them."""
        assert self._tower is not None and self._tokenizer is not None
        out: torch.Tensor = self._tower(self._tokenizer(list(texts)).to(device))
        return out


def open_text_side(directory: Path) -> CachedTextSide | None:
    """The cache entry in ``directory``, or None when there is none or it is unusable."""
    try:
        config = json.loads((directory / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
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
