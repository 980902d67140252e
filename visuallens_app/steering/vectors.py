"""Steering vectors: mean shift, linear probe and SAE features, one per layer, saved with metadata.

Every method works on hidden states of the *text-only* backbone, the VLM's own language model run
on the concept's sentences alone (:func:`visuallens_app.vlm.layers.text_hidden_states`); the math
is numpy on those arrays, so it is tested on hand-made activations:

- **mean shift** (:func:`mean_shift`): the mean hidden state at the anchor tokens minus the mean
  at every other non-special token of the same sentences, unnormalised (its norm is recorded);
- **linear probe** (:func:`linear_probe`): anchor tokens (1) against the others (0), PCA to 10
  dimensions, a bias-free logistic probe trained by gradient descent (lr 0.003, 400 epochs, as the
  paper), its weight mapped back to model space, unit norm;
- **SAE** (:func:`sae_features`, :func:`sae_vector`): a residual sparse autoencoder in the
  SAELens layout encodes the anchor's hidden state; the top 20 features per sentence, weighted by
  rank, kept when seen in two sentences or more, the best 16; the mean of their decoder rows,
  unit norm.

A :class:`SteeringVector` holds one vector per layer and says where it came from (model and a hash
of its config, method, concept, norms, sentences, date); it is one safetensors file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import first_sentence
from visuallens_app.jobs import CancelToken, Progress, StreamingJob
from visuallens_app.steering import SteeringError
from visuallens_app.steering.concepts import ConceptSet

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

Method = Literal["mean_shift", "probe", "sae"]
METHODS: tuple[Method, ...] = ("mean_shift", "probe", "sae")

Array = NDArray[np.float32]

#: The paper's probe: PCA dimensions, learning rate, epochs.
PROBE_DIMS, PROBE_LR, PROBE_EPOCHS = 10, 0.003, 400
#: The paper's SAE selection: features per sentence, sentences a feature must appear in, kept.
SAE_TOP_K, SAE_MIN_SENTENCES, SAE_KEEP = 20, 2, 16

FORMAT = "visuallens-steering-vector/1"


# -- the math --------------------------------------------------------------------------------------


def mean_shift(states: Sequence[Array], anchors: Sequence[NDArray[np.bool_]]) -> Array:
    """Mean of ``states`` rows at ``anchors`` minus the mean of every other row.

    ``states[i]`` is one sentence's hidden states ``[tokens, hidden]`` already restricted to its
    non-special tokens; ``anchors[i]`` marks its anchor tokens.
    """
    rows = np.concatenate([np.asarray(s, dtype=np.float64) for s in states])
    marks = np.concatenate([np.asarray(a, dtype=bool) for a in anchors])
    if not marks.any() or marks.all():
        raise SteeringError("A mean shift needs anchor tokens and other tokens in the sentences.")
    shift: Array = (rows[marks].mean(axis=0) - rows[~marks].mean(axis=0)).astype(np.float32)
    return shift


def linear_probe(
    features: Array,
    labels: NDArray[np.bool_],
    *,
    dims: int = PROBE_DIMS,
    lr: float = PROBE_LR,
    epochs: int = PROBE_EPOCHS,
) -> Array:
    """The unit direction of a bias-free logistic probe on the top-``dims`` PCA axes (module doc).

    Full-batch gradient descent from zero, so the result is deterministic; the sign is the one
    that points towards the positive (anchor) class.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if y.min() == y.max():
        raise SteeringError("A linear probe needs anchor tokens and other tokens in the sentences.")
    centred = x - x.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[: min(dims, axes.shape[0])]
    z = centred @ axes.T
    w = np.zeros(z.shape[1])
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        w -= lr * (z.T @ (p - y)) / len(y)
    direction = axes.T @ w
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:
        raise SteeringError("The linear probe found no direction: the activations do not vary.")
    return (direction / norm).astype(np.float32)


@dataclass(frozen=True)
class SparseAutoencoder:
    """A residual SAE in the SAELens layout: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``."""

    W_enc: Array  # the names of the SAELens file format
    b_enc: Array
    W_dec: Array
    b_dec: Array
    threshold: Array | None = None  # JumpReLU
    apply_b_dec_to_input: bool = True
    layer: int | None = None
    source: str = ""

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def width(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: Array) -> Array:
        """Feature activations of the rows of ``x`` (ReLU, or JumpReLU with a threshold)."""
        inputs = np.asarray(x, dtype=np.float32)
        if self.apply_b_dec_to_input:
            inputs = inputs - self.b_dec
        pre = inputs @ self.W_enc + self.b_enc
        acts = np.maximum(pre, 0.0)
        if self.threshold is not None:
            acts = np.where(pre > self.threshold, acts, 0.0)
        encoded: Array = acts.astype(np.float32)
        return encoded


def load_sae(folder: str | Path) -> SparseAutoencoder:
    """An SAE from a folder holding ``cfg.json`` and ``sae_weights.safetensors`` (SAELens)."""
    from safetensors.numpy import load_file

    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    weights_file, cfg_file = path / "sae_weights.safetensors", path / "cfg.json"
    if not weights_file.is_file():
        raise SteeringError(f"{path} has no sae_weights.safetensors, so it is not an SAELens SAE.")
    cfg: dict[str, Any] = {}
    if cfg_file.is_file():
        try:
            loaded = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SteeringError(f"{cfg_file} cannot be read ({first_sentence(err)}).") from err
        cfg = loaded if isinstance(loaded, dict) else {}
    try:
        tensors = load_file(str(weights_file))
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
        raise SteeringError(f"{weights_file} cannot be read ({first_sentence(err)}).") from err
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise SteeringError(f"{weights_file} lacks {', '.join(missing)}; it is not an SAELens SAE.")
    w_enc, w_dec = tensors["W_enc"], tensors["W_dec"]
    d_in, width = w_enc.shape if w_enc.ndim == 2 else (0, 0)
    if (
        w_dec.shape != (width, d_in)
        or tensors["b_enc"].shape != (width,)
        or tensors["b_dec"].shape != (d_in,)
    ):
        raise SteeringError(f"The matrices in {weights_file} do not fit together as one SAE.")
    threshold = tensors.get("threshold")
    layer = cfg.get("hook_layer")
    if layer is None and isinstance(cfg.get("hook_name"), str):
        digits = [p for p in cfg["hook_name"].split(".") if p.isdigit()]
        layer = int(digits[0]) if digits else None
    return SparseAutoencoder(
        w_enc.astype(np.float32),
        tensors["b_enc"].astype(np.float32),
        w_dec.astype(np.float32),
        tensors["b_dec"].astype(np.float32),
        None if threshold is None else threshold.astype(np.float32),
        bool(cfg.get("apply_b_dec_to_input", True)),
        None if layer is None else int(layer),
        str(path),
    )


def sae_features(
    activations: Array,
    *,
    top_k: int = SAE_TOP_K,
    min_sentences: int = SAE_MIN_SENTENCES,
    keep: int = SAE_KEEP,
) -> list[int]:
    """Features chosen from per-sentence anchor activations ``[sentences, width]`` (module doc).

    Within a sentence the feature ranked ``r`` (0 = strongest) scores ``(top_k - r) / top_k``;
    scores add up across sentences; ties go to the lower feature index.
    """
    acts = np.asarray(activations, dtype=np.float32)
    scores = np.zeros(acts.shape[1])
    seen = np.zeros(acts.shape[1], dtype=int)
    for row in acts:
        order = np.argsort(-row, kind="stable")[:top_k]
        for rank, feature in enumerate(order):
            if row[feature] > 0:
                scores[feature] += (top_k - rank) / top_k
                seen[feature] += 1
    candidates = [int(f) for f in np.flatnonzero(seen >= min_sentences)]
    candidates.sort(key=lambda f: (-scores[f], f))
    if not candidates:
        raise SteeringError(
            f"No SAE feature fires at the anchor of {min_sentences} or more sentences; try "
            "another layer or SAE."
        )
    return candidates[:keep]


def sae_vector(sae: SparseAutoencoder, features: Sequence[int]) -> Array:
    """The mean of the features' decoder rows, unit norm."""
    mean = sae.W_dec[list(features)].astype(np.float64).mean(axis=0)
    unit: Array = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return unit


# -- the saved vector ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringVector:
    """Vectors of one concept and method for one or more layers, and where they came from."""

    vectors: dict[int, Array]
    method: str
    concept: str
    model: str
    config_hash: str
    sentences: tuple[str, ...] = ()
    created: str = ""
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def norms(self) -> dict[int, float]:
        return {layer: float(np.linalg.norm(v)) for layer, v in sorted(self.vectors.items())}

    def at(self, layer: int) -> Array:
        """The vector for ``layer``; one sentence naming the layers it has otherwise."""
        if layer not in self.vectors:
            raise SteeringError(
                f"This {self.concept} vector has no layer {layer}; it has layers "
                f"{', '.join(map(str, self.layers))}."
            )
        return self.vectors[layer]

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "method": self.method,
            "concept": self.concept,
            "model": self.model,
            "config_hash": self.config_hash,
            "hidden_size": str(self.hidden_size),
            "layers": json.dumps(self.layers),
            "norms": json.dumps({str(k): v for k, v in self.norms.items()}),
            "sentences": json.dumps(list(self.sentences), ensure_ascii=False),
            "created": self.created,
            "extras": json.dumps(self.extras, ensure_ascii=False),
        }

    def describe(self) -> dict[str, Any]:
        """What a listing shows (JSON-ready)."""
        return {
            "method": self.method,
            "concept": self.concept,
            "model": self.model,
            "config_hash": self.config_hash,
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "norms": {str(k): round(v, 6) for k, v in self.norms.items()},
            "sentences": len(self.sentences),
            "created": self.created,
            **({"extras": self.extras} if self.extras else {}),
        }

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"layer.{k}": np.ascontiguousarray(v, np.float32) for k, v in self.vectors.items()
        }
        partial = target.with_name(target.name + ".part")
        save_file(tensors, str(partial), metadata=self.metadata())
        partial.replace(target)  # a listing never sees half a file
        return target

    def fits(self, vlm: VisionLanguageModel) -> None:
        """Refuse (one sentence) a vector whose size is not ``vlm``'s hidden size."""
        if self.hidden_size != vlm.hidden_size:
            raise SteeringError(
                f"This vector has size {self.hidden_size} (made with {self.model}) but "
                f"{vlm.name} has hidden size {vlm.hidden_size}; compute one for this model."
            )


def load_vector(path: str | Path) -> SteeringVector:
    """A vector saved by :meth:`SteeringVector.save`; one sentence when it is not one."""
    from safetensors import safe_open

    file = Path(path).expanduser()
    if not file.is_file():
        raise SteeringError(f"There is no steering vector file {file}.")
    try:
        with safe_open(str(file), framework="numpy") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors' own error types for a file that is not one
        raise SteeringError(f"{file} is not a safetensors file ({first_sentence(err)}).") from err
    if meta.get("format") != FORMAT:
        raise SteeringError(f"{file} is a safetensors file but not a steering vector.")
    try:
        vectors = {
            int(name.split(".", 1)[1]): np.asarray(t, np.float32) for name, t in tensors.items()
        }
        sentences = tuple(json.loads(meta.get("sentences", "[]")))
        extras = dict(json.loads(meta.get("extras", "{}")))
    except (ValueError, IndexError, TypeError) as err:
        raise SteeringError(f"The steering vector {file} is damaged ({err}).") from err
    if not vectors:
        raise SteeringError(f"The steering vector {file} holds no layers.")
    return SteeringVector(
        vectors,
        meta.get("method", ""),
        meta.get("concept", ""),
        meta.get("model", ""),
        meta.get("config_hash", ""),
        sentences,
        meta.get("created", ""),
        extras,
    )


def config_hash(vlm: VisionLanguageModel) -> str:
    """A short hash of the model's config.json: same architecture and vocabulary, same hash."""
    config_file = vlm.folder / "config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = vlm.config.to_dict()
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def parse_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """Layers from ``"8-14"``, ``"3,5,7"`` or a list; each within ``0..num_layers - 1``."""
    if isinstance(spec, str):
        layers: list[int] = []
        try:
            for part in spec.replace(" ", "").split(","):
                if not part:
                    continue
                if "-" in part.strip("-"):
                    first, last = part.split("-", 1)
                    layers.extend(range(int(first), int(last) + 1))
                else:
                    layers.append(int(part))
        except ValueError as err:
            raise SteeringError(
                f"Cannot read the layers {spec!r}; write them like 8-14 or 3,5,7."
            ) from err
    else:
        layers = [int(v) for v in spec]
    bad = [v for v in layers if not 0 <= v < num_layers]
    if not layers or bad:
        raise SteeringError(
            f"Layer {bad[0] if bad else spec!r} does not exist; this model has layers "
            f"0..{num_layers - 1}."
        )
    return sorted(set(layers))


# -- computing from a model ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptActivations:
    """Hidden states of a concept's sentences: per layer, per sentence ``[tokens, hidden]`` at
    its non-special tokens, and which of those tokens are the anchor."""

    states: dict[int, list[Array]]
    anchors: list[NDArray[np.bool_]]


def concept_activations(
    vlm: VisionLanguageModel, concepts: ConceptSet, layers: Sequence[int]
) -> ConceptActivations:
    """One text-only forward pass over every sentence, kept at the tokens that count."""
    from visuallens_app.vlm.layers import text_hidden_states

    texts = concepts.texts
    states, ids, attention = text_hidden_states(vlm, texts, list(layers))
    keep_rows: list[NDArray[np.bool_]] = []
    anchors: list[NDArray[np.bool_]] = []
    for row, sentence in enumerate(concepts.sentences):
        encoded = vlm.tokenizer(
            sentence.text, return_offsets_mapping=True, return_special_tokens_mask=True
        )
        length = int(attention[row].sum())
        if list(encoded["input_ids"]) != ids[row, :length].tolist():
            raise SteeringError(  # would mean the tokenizer is not deterministic
                f"The tokenizer of {vlm.name} splits {sentence.text!r} differently each time."
            )
        special = np.asarray(encoded["special_tokens_mask"], dtype=bool)
        offsets = encoded["offset_mapping"]
        start, end = sentence.span
        anchor = np.array([a < end and b > start and b > a for a, b in offsets], dtype=bool)
        keep = ~special
        if not (anchor & keep).any():
            raise SteeringError(
                f"The anchor {sentence.anchor!r} of {sentence.text!r} has no token of its own."
            )
        padded = np.zeros(ids.shape[1], dtype=bool)
        padded[:length] = keep
        keep_rows.append(padded)
        anchors.append(anchor[keep])
    per_layer: dict[int, list[Array]] = {}
    for layer in layers:
        hidden = states[layer].float().cpu().numpy()
        per_layer[layer] = [hidden[row][keep] for row, keep in enumerate(keep_rows)]
    return ConceptActivations(per_layer, anchors)


def vector_from_activations(
    method: str,
    states: list[Array],
    anchors: list[NDArray[np.bool_]],
    *,
    sae: SparseAutoencoder | None = None,
) -> tuple[Array, dict[str, str]]:
    """One layer's vector by ``method``, and what to record about it (the SAE's features)."""
    if method == "mean_shift":
        return mean_shift(states, anchors), {}
    if method == "probe":
        features = np.concatenate(states)
        labels = np.concatenate(anchors)
        return linear_probe(features, labels), {}
    if method == "sae":
        if sae is None:
            raise SteeringError("The SAE method needs an SAE folder (--sae DIR).")
        at_anchor = np.stack([s[a].mean(axis=0) for s, a in zip(states, anchors, strict=True)])
        chosen = sae_features(sae.encode(at_anchor))
        return sae_vector(sae, chosen), {"sae": sae.source, "features": json.dumps(chosen)}
    raise SteeringError(f"Unknown method {method!r}; use {', '.join(METHODS)}.")


def compute_vector(
    vlm: VisionLanguageModel,
    concepts: ConceptSet,
    method: str,
    layers: Sequence[int],
    *,
    sae: SparseAutoencoder | None = None,
    cancel: CancelToken | None = None,
) -> StreamingJob[SteeringVector]:
    """Compute ``method``'s vector of ``concepts`` at each of ``layers`` (a job; unit: layers)."""
    token = cancel or CancelToken()
    if method not in METHODS:
        raise SteeringError(f"Unknown method {method!r}; use {', '.join(METHODS)}.")
    chosen = parse_layers(list(layers), vlm.num_layers)
    if method == "sae":
        if sae is None:
            raise SteeringError("The SAE method needs an SAE folder (--sae DIR).")
        if sae.d_in != vlm.hidden_size:
            raise SteeringError(
                f"The SAE in {sae.source} reads vectors of size {sae.d_in} but {vlm.name} has "
                f"hidden size {vlm.hidden_size}; use an SAE trained on this model."
            )
        if sae.layer is not None and chosen != [sae.layer]:
            raise SteeringError(
                f"The SAE in {sae.source} was trained on layer {sae.layer}; compute its vector "
                f"at --layers {sae.layer}."
            )
    total = len(chosen)
    yield Progress(0, total, "Reading the sentences", stage="vector", unit="layers")
    activations = concept_activations(vlm, concepts, chosen)
    vectors: dict[int, Array] = {}
    extras: dict[str, str] = {}
    for done, layer in enumerate(chosen, start=1):
        token.check()
        vectors[layer], extras = vector_from_activations(
            method, activations.states[layer], activations.anchors, sae=sae
        )
        yield Progress(done, total, f"Layer {layer}", stage="vector", unit="layers")
    return SteeringVector(
        vectors,
        method,
        concepts.name,
        vlm.name,
        config_hash(vlm),
        tuple(concepts.texts),
        datetime.now(UTC).isoformat(timespec="seconds"),
        extras,
    )


__all__ = [
    "METHODS",
    "ConceptActivations",
    "SparseAutoencoder",
    "SteeringVector",
    "compute_vector",
    "concept_activations",
    "config_hash",
    "linear_probe",
    "load_sae",
    "load_vector",
    "mean_shift",
    "parse_layers",
    "sae_features",
    "sae_vector",
    "vector_from_activations",
]
