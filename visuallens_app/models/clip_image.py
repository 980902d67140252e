"""CLIP's image side without open_clip: a cached description of the image tower, run in
``torch.nn.functional``.

``import open_clip`` costs 4-5 s of a 9 s ``visuallens index`` of 40 photos on 2 cores (it
imports timm, torchvision and transformers) before the first photo is encoded (issue 13). After
open_clip has loaded a checkpoint's image tower once, :func:`save_image_side` keeps what
``encode_image`` needs in the cache directory, keyed by the checkpoint's fingerprint: the
architecture in a few numbers, the tensor names and shapes, the preprocessing, and the weights
(a reference to the checkpoint when that safetensors file holds them under open_clip's names,
else a safetensors copy). :func:`open_image_side` reads it back and :class:`ClipImageTower`
computes open_clip's ``VisionTransformer.forward`` with the same operations. The entry is only
written after checking the features against open_clip on probe images.

Only open_clip's plain ``VisionTransformer`` is cached (class token, ``tok`` pooling, matrix
projection, default residual blocks, LayerNorm, GELU or QuickGELU); timm towers, attentional
pooling, LayerScale and the rest keep loading through open_clip. torch is imported by the
caller's first encode, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visuallens_app.models.tower_cache import entry_key, read_config, write_entry

if TYPE_CHECKING:
    import torch

#: Bumped whenever the cached files or the module below change meaning.
FORMAT = 1
_CONFIG = "image-tower.json"
_WEIGHTS = "image-tower.safetensors"
_PROBE_IMAGES = 3
_PREFIX = "visual."


def image_side_key(encoder_id: str, checkpoint: Path, open_clip_version: str) -> str:
    """The cache entry's name: the encoder, the checkpoint file as it is now, and open_clip."""
    return entry_key(FORMAT, encoder_id, open_clip_version, "image", checkpoint=checkpoint)


# -- the image tower -----------------------------------------------------------------------------


def weight_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """The state-dict keys (open_clip's names) :class:`ClipImageTower` reads, with their shapes."""
    width, patch, mlp = int(config["width"]), int(config["patch_size"]), int(config["mlp_width"])
    grid = int(config["image_size"]) // patch
    shapes: dict[str, list[int]] = {
        "conv1.weight": [width, 3, patch, patch],
        "class_embedding": [width],
        "positional_embedding": [grid * grid + 1, width],
        "ln_pre.weight": [width],
        "ln_pre.bias": [width],
    }
    for i in range(int(config["layers"])):
        p = f"transformer.resblocks.{i}."
        shapes |= {
            p + "ln_1.weight": [width],
            p + "ln_1.bias": [width],
            p + "attn.in_proj_weight": [3 * width, width],
            p + "attn.in_proj_bias": [3 * width],
            p + "attn.out_proj.weight": [width, width],
            p + "attn.out_proj.bias": [width],
            p + "ln_2.weight": [width],
            p + "ln_2.bias": [width],
            p + "mlp.c_fc.weight": [mlp, width],
            p + "mlp.c_fc.bias": [mlp],
            p + "mlp.c_proj.weight": [width, mlp],
            p + "mlp.c_proj.bias": [width],
        }
    shapes |= {
        "ln_post.weight": [width],
        "ln_post.bias": [width],
        "proj": [width, int(config["dim"])],
    }
    return {_PREFIX + name: shape for name, shape in shapes.items()}


class ClipImageTower:
    """open_clip's ``VisionTransformer.forward`` in ``torch.nn.functional``: patch embedding,
    class token and positions, pre-norm blocks (multi-head attention, GELU MLP), the class
    token's final norm and its projection."""

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.config = config
        self.w = {name[len(_PREFIX) :]: tensor for name, tensor in weights.items()}
        self.layers = int(config["layers"])
        self.heads = int(config["heads"])
        self.width = int(config["width"])
        self.patch = int(config["patch_size"])
        self.eps = float(config["eps"])
        self.quick_gelu = bool(config["quick_gelu"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, dim) features of (n, 3, size, size) normalised pixels, not normalised."""
        import torch
        from torch.nn import functional as nnf

        w, width, eps = self.w, self.width, self.eps
        shape = (width,)
        x = nnf.conv2d(pixels, w["conv1.weight"], stride=self.patch)
        n = x.shape[0]
        x = x.reshape(n, width, -1).permute(0, 2, 1)
        x = torch.cat([w["class_embedding"].expand(n, 1, width), x], dim=1)
        x = x + w["positional_embedding"]
        x = nnf.layer_norm(x, shape, w["ln_pre.weight"], w["ln_pre.bias"], eps)
        head = width // self.heads
        for i in range(self.layers):
            p = f"transformer.resblocks.{i}."
            h = nnf.layer_norm(x, shape, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = nnf.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"])
            q, k, v = qkv.reshape(n, -1, 3, self.heads, head).permute(2, 0, 3, 1, 4)
            a = nnf.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, width)
            x = x + nnf.linear(a, w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
            h = nnf.layer_norm(x, shape, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            h = nnf.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])
            h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else nnf.gelu(h)
            x = x + nnf.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        pooled = nnf.layer_norm(x[:, 0], shape, w["ln_post.weight"], w["ln_post.bias"], eps)
        out: torch.Tensor = pooled @ w["proj"]
        return out


def _tower_config(visual: Any) -> dict[str, Any] | None:
    """What :class:`ClipImageTower` needs to rebuild ``visual``; None when it cannot.

    Only open_clip's plain ``VisionTransformer`` whose forward is the one above: learnable
    positions, LayerNorm before and after, ``tok`` pooling without attentional pooling, default
    residual blocks without LayerScale, GELU (exact) or QuickGELU, a matrix projection.
    """
    from open_clip.transformer import (
        LayerNorm,
        QuickGELU,
        ResidualAttentionBlock,
        VisionTransformer,
    )
    from torch import nn

    if type(visual) is not VisionTransformer or visual.output_tokens:
        return None
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        return None
    if not isinstance(visual.patch_dropout, nn.Identity) or visual.conv1.bias is not None:
        return None
    if not isinstance(visual.proj, nn.Parameter) or visual.proj.ndim != 2:
        return None
    size, patch = tuple(visual.image_size), tuple(visual.patch_size)
    if size[0] != size[1] or patch[0] != patch[1] or visual.conv1.stride != patch:
        return None
    norms = [visual.ln_pre, visual.ln_post]
    blocks = list(visual.transformer.resblocks)
    if not blocks or not visual.transformer.batch_first:
        return None
    for block in blocks:
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return None
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            return None
        if list(block.mlp._modules) != ["c_fc", "gelu", "c_proj"]:
            return None
        norms += [block.ln_1, block.ln_2]
    if any(type(norm) is not LayerNorm for norm in norms):
        return None
    if len({float(norm.eps) for norm in norms}) != 1:
        return None
    gelus = {type(block.mlp.gelu) for block in blocks}
    first = blocks[0]
    gelu = first.mlp.gelu
    exact = type(gelu) is nn.GELU and gelu.approximate == "none"
    if len(gelus) != 1 or not (exact or isinstance(gelu, QuickGELU)):
        return None
    width = int(visual.conv1.out_channels)
    heads = int(first.attn.num_heads)
    if width % heads or any(int(b.attn.num_heads) != heads for b in blocks):
        return None
    return {
        "format": FORMAT,
        "image_size": int(size[0]),
        "patch_size": int(patch[0]),
        "width": width,
        "layers": len(blocks),
        "heads": heads,
        "mlp_width": int(first.mlp.c_fc.out_features),
        "quick_gelu": isinstance(gelu, QuickGELU),
        "eps": float(first.ln_1.eps),
        "dim": int(visual.proj.shape[1]),
    }


# -- the cache -----------------------------------------------------------------------------------


def _probe_pixels(size: int) -> torch.Tensor:
    """A few normalised-looking probe images: noise, and smooth gradients (seeded)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(_PROBE_IMAGES - 1, 3, size, size, generator=generator)
    ramp = torch.linspace(-2.0, 2.0, size)
    across, down = ramp.expand(size, size), ramp[:, None].expand(size, size)
    gradient = torch.stack([across + down, across - down, across])
    return torch.cat([noise, gradient[None] * 0.5]).contiguous()


def save_image_side(
    model: Any, directory: Path, *, source: Path, preprocess: dict[str, Any]
) -> bool:
    """Keep ``model``'s loaded image tower in ``directory``; False when it cannot be kept.

    Written only when :class:`ClipImageTower` gives open_clip's features on probe images, from
    float32 weights on the CPU (fp16 ones on a GPU would not give the CPU's vectors later).
    ``preprocess`` is the encoder's (size, interpolation, resize mode, mean, std), stored so that
    a later process prepares photos the same way without open_clip. The entry is written to a
    temporary folder renamed at the end, so a crash never leaves half an entry.
    """
    import torch

    config = _tower_config(model.visual)
    if config is None or int(preprocess["size"]) != config["image_size"]:
        return False
    own = model.state_dict()
    shapes = weight_shapes(config)
    if any(name not in own or list(own[name].shape) != shape for name, shape in shapes.items()):
        return False
    state = {name: own[name].detach() for name in shapes}
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in state.values()):
        return False
    probe = _probe_pixels(config["image_size"])
    with torch.inference_mode():
        expected = model.encode_image(probe).float().numpy()
        got = ClipImageTower(config, state)(probe).numpy()
    if got.shape != expected.shape or not _same_directions(got, expected):
        return False

    config["tensors"] = shapes
    config["preprocess"] = {
        "size": int(preprocess["size"]),
        "interpolation": str(preprocess["interpolation"]),
        "resize_mode": str(preprocess["resize_mode"]),
        "mean": [float(m) for m in preprocess["mean"]],
        "std": [float(s) for s in preprocess["std"]],
    }
    return write_entry(directory, config, _CONFIG, _WEIGHTS, source=source, state=state)


def _same_directions(got: Any, expected: Any) -> bool:
    """Rows of equal direction (cosine >= 0.99999): the encoder normalises its vectors."""
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
    norms = np.linalg.norm(got64, axis=1) * np.linalg.norm(expected64, axis=1)
    cosines = (got64 * expected64).sum(axis=1) / np.maximum(norms, 1e-30)
    return bool(cosines.min() >= 0.99999)


class CachedImageSide:
    """A cache entry: its numbers and preprocessing from the JSON at once, weights at first use."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        self.config = config
        self.dim = int(config["dim"])
        self.preprocess: dict[str, Any] = dict(config["preprocess"])
        self._tower: ClipImageTower | None = None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._tower is not None

    def load(self) -> None:
        """Read the weights (only the image tower's, from a shared checkpoint), checking each
        tensor's dtype and shape: a damaged entry raises instead of giving vectors."""
        if self._tower is not None:
            return
        import torch
        from safetensors import safe_open

        file = Path(self.config["weights"]["file"])
        file = file if file.is_absolute() else self.directory / file
        shapes = weight_shapes(self.config)
        if self.config.get("tensors") != shapes:
            raise ValueError(f"{self.directory.name}: the tensor list does not match the numbers")
        with safe_open(str(file), framework="pt") as handle:
            weights = {name: handle.get_tensor(name) for name in shapes}
        for name, shape in shapes.items():
            if weights[name].dtype != torch.float32 or list(weights[name].shape) != shape:
                raise ValueError(f"{self.directory.name}: {name} is not float32 {shape}")
        self._tower = ClipImageTower(self.config, weights)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image features (not normalised), as open_clip's ``encode_image`` gives them."""
        import torch

        self.load()
        assert self._tower is not None
        with torch.inference_mode():
            return self._tower(pixels)


def open_image_side(directory: Path) -> CachedImageSide | None:
    """The cache entry in ``directory``, or None when there is none or it is unusable."""
    config = read_config(directory, _CONFIG, FORMAT)
    if config is None:
        return None
    try:
        weights = Path(str(config["weights"]["file"]))
        pre = config["preprocess"]
        numbers = [int(config[k]) for k in ("image_size", "patch_size", "width", "layers")]
        numbers += [int(config[k]) for k in ("heads", "mlp_width", "dim")]
        if int(pre["size"]) != int(config["image_size"]) or len(pre["mean"]) != 3:
            return None
        if len(pre["std"]) != 3 or min(numbers) <= 0 or numbers[2] % numbers[4]:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    weights = weights if weights.is_absolute() else directory / weights
    if not weights.is_file():
        return None
    return CachedImageSide(directory, config)
