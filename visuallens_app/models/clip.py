"""CLIP encoders over open_clip: pretrained tags from the Hugging Face cache, local checkpoints,
or random weights for tests and benchmarks.

Weights live where open_clip puts them (the Hugging Face hub cache, or ``~/.cache/clip`` for
URL-only tags), never in the app bundle. :func:`clip_weights_available` answers from that cache
alone, so ``auto`` can decide without touching the network. torch and open_clip are imported
inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.devices import available_device, configure_torch_threads
from visuallens_app.errors import ModelUnavailableError
from visuallens_app.models.base import encode_in_batches, l2_normalise

if TYPE_CHECKING:
    import torch

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

# open_clip's file names on the hub (open_clip.constants); safetensors is preferred when present.
_HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"

_HOW_TO_GET = (
    "run `visuallens models download-clip` once with network access, "
    "or pass --encoder clip:/path/to/checkpoint.bin"
)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


# -- where weights live --------------------------------------------------------------------------


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now rather than at import.

    huggingface_hub freezes HF_HOME / HF_HUB_CACHE when first imported; reading them live keeps
    a later change (tests, the Settings view) consistent between the check and the download.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    """Whether the user told Hugging Face to stay offline (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(var, "").strip().lower() in truthy
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


# The default's entry in open_clip's pretrained table (tests/test_models.py checks that they
# agree): whether the default weights are cached is asked at every start, and importing open_clip
# to answer it costs seconds.
_DEFAULT_CFG: dict[str, Any] = {
    "url": "",
    "hf_hub": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/",
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def _pretrained_cfg(arch: str, tag: str) -> dict[str, Any]:
    """open_clip's pretrained entry for ``arch``/``tag`` ({} when unknown).

    Entries already looked up are answered from a small JSON file in the cache directory, per
    open_clip version: importing open_clip to read its table costs 6 s on 2 cores, which a
    re-index with nothing new or a search would otherwise pay before anything else (issue 13).
    """
    if (arch, tag) == (DEFAULT_ARCH, DEFAULT_PRETRAINED):
        return dict(_DEFAULT_CFG)
    key = f"{_open_clip_version()}|{arch}|{tag}"
    table = _tag_table()
    if key in table:
        return dict(table[key])
    from open_clip.pretrained import get_pretrained_cfg

    cfg = dict(get_pretrained_cfg(arch, tag))
    if cfg:
        table[key] = cfg
        with contextlib.suppress(OSError, TypeError, ValueError):  # a cache: best effort
            path = _tag_table_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}-{os.getpid()}")
            tmp.write_text(json.dumps(table), encoding="utf-8")
            os.replace(tmp, path)
    return cfg


def _open_clip_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return "unknown"


def _tag_table_path() -> Path:
    from visuallens_app import settings

    return settings.cache_dir() / "encoders" / "open_clip-pretrained.json"


def _tag_table() -> dict[str, Any]:
    try:
        table = json.loads(_tag_table_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """(repo id, file names in the order open_clip tries them) for a pretrained cfg's hf_hub."""
    repo_id, filename = os.path.split(hf_hub.rstrip("\n"))
    filename = filename or _HF_WEIGHTS_NAME
    names: list[str] = []
    if filename == _HF_WEIGHTS_NAME:
        names.append(_HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    names.append(filename)
    return repo_id, names


def local_clip_weights(arch: str, tag: str) -> Path | None:
    """The cached weights file for ``arch``/``tag``, or None; looks at the disk only."""
    cfg = _pretrained_cfg(arch, tag)
    if not cfg:
        return None
    if "file" in cfg:
        path = Path(cfg["file"])
        return path if path.is_file() else None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, names = _hf_candidates(cfg["hf_hub"])
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=hf_hub_cache_dir())
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return path if path.is_file() else None
    return None


def clip_weights_available(arch: str = DEFAULT_ARCH, tag: str = DEFAULT_PRETRAINED) -> bool:
    """Whether open_clip would find ``arch``/``tag`` weights without downloading (no network)."""
    try:
        return local_clip_weights(arch, tag) is not None
    except Exception:  # a broken hub install must read as "not available", not crash auto
        return False


def _check_arch_and_tag(arch: str, tag: str) -> None:
    if f"{_open_clip_version()}|{arch}|{tag}" in _tag_table():
        return  # looked up before, with this open_clip: a known architecture and tag
    import open_clip

    if arch not in open_clip.list_models():
        raise ModelUnavailableError(
            f"Unknown CLIP architecture {arch!r}; try {DEFAULT_ARCH}, ViT-B-16 or ViT-L-14."
        )
    if not _pretrained_cfg(arch, tag):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelUnavailableError(
            f"CLIP {arch} has no pretrained weights called {tag!r}; known tags: {tags}."
        )


def fetch_clip_weights(
    arch: str = DEFAULT_ARCH,
    tag: str = DEFAULT_PRETRAINED,
    *,
    progress_callback: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``arch``/``tag`` weights where open_clip looks for them; returns the file.

    Mirrors open_clip's own resolution (hub repo, safetensors first, then the URL) so that
    :meth:`ClipEncoder.pretrained` finds the file afterwards without any network access.
    ``progress_callback(done_bytes, total_bytes)`` is called from the downloading thread.
    """
    _check_arch_and_tag(arch, tag)
    local = local_clip_weights(arch, tag)
    if local is not None:
        if progress_callback is not None:
            size = local.stat().st_size
            progress_callback(size, size)
        return local
    if hub_offline():
        from visuallens_app.hub import HubUnreachableError

        raise HubUnreachableError(
            f"CLIP {arch} ({tag}) weights are not on this machine and downloads are off "
            "(HF_HUB_OFFLINE is set); unset it and retry, "
            "or pass --encoder clip:/path/to/checkpoint.bin.",
            "Downloads are switched off on this machine (HF_HUB_OFFLINE is set), so the CLIP "
            "weights cannot be fetched; keep the embedded encoder, which needs no download.",
        )
    _require_hub(arch, tag)
    cfg = _pretrained_cfg(arch, tag)
    try:
        if cfg.get("hf_hub"):
            return _fetch_from_hub(cfg["hf_hub"], progress_callback)
        from open_clip.pretrained import download_pretrained_from_url

        return Path(download_pretrained_from_url(cfg["url"]))
    except ModelUnavailableError:
        raise
    except Exception as err:
        raise ModelUnavailableError(
            f"Could not download CLIP {arch} ({tag}) weights ({type(err).__name__}); "
            "check the network connection and retry, "
            "or pass --encoder clip:/path/to/checkpoint.bin."
        ) from err


def _require_hub(arch: str, tag: str) -> None:
    """Fail at once, in one sentence, when the weights would have to come over no network."""
    from visuallens_app.hub import require_hub

    require_hub(
        f"CLIP {arch} ({tag}) weights",
        cli_alternative="pass --encoder clip:/path/to/checkpoint.safetensors",
        gui_alternative="keep the embedded encoder",
    )


def _fetch_from_hub(
    hf_hub: str, progress_callback: Callable[[int, int | None], None] | None
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    tqdm_class = _progress_tqdm(progress_callback) if progress_callback else None
    repo_id, names = _hf_candidates(hf_hub)
    last: Exception | None = None
    for name in names:
        try:
            return Path(
                hf_hub_download(repo_id, name, cache_dir=hf_hub_cache_dir(), tqdm_class=tqdm_class)
            )
        except EntryNotFoundError as err:  # no safetensors variant: try the next name
            last = err
    assert last is not None
    raise last


def _progress_tqdm(callback: Callable[[int, int | None], None]) -> Any:
    """A tqdm class that reports byte progress to ``callback`` instead of drawing a bar."""
    from tqdm.auto import tqdm

    class _Reporter(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            callback(self._done, int(self.total) if self.total else None)
            return None

    return _Reporter


# -- the encoder -----------------------------------------------------------------------------


class ClipEncoder:
    """An open_clip model as an :class:`~visuallens_app.models.base.Encoder`.

    Build one with :meth:`pretrained`, :meth:`from_checkpoint` or :meth:`random`; the
    constructor takes an already built model. fp16 on CUDA, fp32 elsewhere. Pretrained and
    checkpoint encoders load lazily, one tower at a time: the model is built with its parameters
    on torch's meta device (no random fill that the checkpoint would overwrite), and a tower's
    weights are read from the file the first time it encodes, so a text search never reads the
    image tower and a re-index with nothing new builds nothing (issue 13).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Callable[..., torch.Tensor],
        *,
        encoder_id: str,
        arch: str,
        device: str,
        batch_size: int = 32,
    ) -> None:
        self._start(encoder_id=encoder_id, arch=arch, device=device, batch_size=batch_size)
        self._prepare(_Built(model, tokenizer, None, None))

    def _place(self) -> None:
        """The device and dtype the encoder runs in: fp16 on CUDA, fp32 elsewhere."""
        import torch

        configure_torch_threads()
        self._device = torch.device(available_device(self._device_name))
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32

    def _start(self, *, encoder_id: str, arch: str, device: str, batch_size: int) -> None:
        self._id = encoder_id
        self._arch = arch
        self._device_name = device
        self._batch_size = max(1, batch_size)
        self._lock = threading.RLock()
        self._build: Callable[[], _Built] | None = None
        self._model: Any = None
        self._checkpoint: Path | None = None
        self._towers: set[str] = set()
        # The checkpoint file, for the cached text side (clip_text.py): a text search that
        # finds one builds no open_clip model at all.
        self._source: Path | None = None
        self._text_side: Any = None
        self._text_side_looked = False
        # The cached image side (clip_image.py): an index of new photos that finds one imports
        # neither open_clip nor timm nor torchvision.
        self._image_side: Any = None
        self._image_side_looked = False

    @classmethod
    def _deferred(
        cls,
        build: Callable[[], _Built],
        *,
        encoder_id: str,
        arch: str,
        device: str,
        source: Path,
    ) -> ClipEncoder:
        """An encoder whose model ``build`` makes on first use from the weights in ``source``;
        only the id is known before."""
        encoder = cls.__new__(cls)
        encoder._start(encoder_id=encoder_id, arch=arch, device=device, batch_size=32)
        encoder._build = build
        encoder._source = source
        return encoder

    def _prepare(self, built: _Built) -> None:
        """Put a built model on its device and read its preprocessing; weights may come later."""
        import torch

        self._place()
        model = built.model
        if built.checkpoint is None:  # every weight is in place already
            self._model = model.to(device=self._device, dtype=self._dtype).eval()
            self._towers = {"text", "image"}
        else:
            _move_buffers(model, self._device, self._dtype)
            self._model = model.eval()
        self._checkpoint = built.checkpoint
        self._tokenizer = built.tokenizer

        cfg: Mapping[str, Any] = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self._set_preprocess(
            {
                "size": int(size[0] if isinstance(size, (tuple, list)) else size),
                "interpolation": str(cfg.get("interpolation", "bicubic")),
                "resize_mode": str(cfg.get("resize_mode", "shortest")),
                "mean": list(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                "std": list(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            }
        )
        if built.dim is not None:
            self._dim = built.dim
        else:
            with torch.inference_mode():
                probe = self._tokenizer(["a"]).to(self._device)
                self._dim = int(self._model.encode_text(probe).shape[-1])

    def _set_preprocess(self, preprocess: Mapping[str, Any]) -> None:
        """The eval transform :meth:`_pixels` applies: from open_clip's config, or from a cached
        image side's JSON (the same numbers, read without open_clip)."""
        import torch

        self._preprocess = dict(preprocess)
        self._size = int(preprocess["size"])
        self._resample = _RESAMPLE.get(str(preprocess["interpolation"]), Image.Resampling.BICUBIC)
        self._resize_mode = str(preprocess["resize_mode"])
        # Fold ToTensor's /255 into the affine so normalising is one multiply-add on uint8 input.
        std_arr = np.asarray(preprocess["std"], dtype=np.float32) * 255.0
        mean_arr = np.asarray(preprocess["mean"], dtype=np.float32)
        self._scale = torch.from_numpy(1.0 / std_arr).view(1, 3, 1, 1)
        self._shift = torch.from_numpy(-mean_arr * 255.0 / std_arr).view(1, 3, 1, 1)

    def _ready(self, tower: str | None = None) -> Any:
        """The model, built if need be, with ``tower``'s ("text" / "image") weights loaded."""
        with self._lock:
            if self._model is None:
                assert self._build is not None
                self._prepare(self._build())
            if tower is not None and tower not in self._towers:
                file = self._checkpoint
                assert file is not None
                try:
                    _load_tower(self._model, file, tower, self._device, self._dtype)
                except ModelUnavailableError:
                    raise
                except Exception as err:  # shapes or keys of another architecture, a bad file
                    raise ModelUnavailableError(
                        f"{file.name} is not a CLIP {self._arch} checkpoint open_clip can load "
                        f"({type(err).__name__}); pass the matching architecture or another file."
                    ) from err
                self._towers.add(tower)
                if tower == "text":
                    self._keep_text_side()
                else:
                    self._keep_image_side()
            return self._model

    def _text_side_dir(self) -> Path | None:
        """Where this checkpoint's cached text side lives; None for in-memory models."""
        if self._source is None:
            return None
        from visuallens_app import settings
        from visuallens_app.models.clip_text import text_side_key

        try:
            key = text_side_key(self._id, self._source, _open_clip_version())
        except OSError:
            return None
        return settings.cache_dir() / "encoders" / "clip-text" / key

    def _cached_text_side(self) -> Any:
        """The cached text side, while no model is built, on the CPU; None without an entry."""
        with self._lock:
            if self._text_side is None and not self._text_side_looked and self._model is None:
                self._text_side_looked = True
                directory = self._text_side_dir()
                if directory is not None and directory.is_dir() and self._on_cpu():
                    from visuallens_app.models.clip_text import open_text_side

                    self._text_side = open_text_side(directory)
            return self._text_side

    def _drop_text_side(self, directory: Path) -> None:
        """Forget a cached text side that failed to load or run, and delete it."""
        with self._lock:
            self._text_side = None
        shutil.rmtree(directory, ignore_errors=True)

    def _on_cpu(self) -> bool:
        """Whether this encoder runs on the CPU, asked without importing torch.

        The cached text side runs in numpy on the CPU; with a GPU about, open_clip's tower
        runs there instead (and batches of thousands of texts are faster on it).
        """
        if self._device_name == "cpu":
            return True
        if self._device_name != "auto":
            return False
        return sys.platform != "darwin" and not any(
            Path(dev).exists() for dev in ("/dev/nvidiactl", "/dev/kfd")
        )

    def _keep_text_side(self) -> None:
        """After open_clip loaded the text tower: keep it for the next process (best effort)."""
        directory = self._text_side_dir()
        if directory is None or not self._on_cpu():
            return  # the cached side runs on the CPU only: no copy of a GPU tower to the host
        from visuallens_app.models.clip_text import open_text_side, save_text_side

        if directory.is_dir():
            if open_text_side(directory) is not None:
                return
            shutil.rmtree(directory, ignore_errors=True)  # damaged: written anew
        assert self._source is not None
        try:
            save_text_side(self._model, self._tokenizer, directory, source=self._source)
        except Exception:  # a cache: open_clip's own path has already worked
            return

    def _image_side_dir(self) -> Path | None:
        """Where this checkpoint's cached image side lives; None for in-memory models."""
        if self._source is None:
            return None
        from visuallens_app import settings
        from visuallens_app.models.clip_image import image_side_key

        try:
            key = image_side_key(self._id, self._source, _open_clip_version())
        except OSError:
            return None
        return settings.cache_dir() / "encoders" / "clip-image" / key

    def _cached_image_side(self) -> Any:
        """The cached image side, while open_clip's image tower is not loaded, on the CPU; None
        without an entry. Finding one sets the preprocessing from its JSON."""
        with self._lock:
            if self._image_side is None and not self._image_side_looked:
                self._image_side_looked = True
                directory = self._image_side_dir()
                if (
                    directory is not None
                    and "image" not in self._towers
                    and directory.is_dir()
                    and self._on_cpu()
                ):
                    from visuallens_app.models.clip_image import open_image_side

                    side = open_image_side(directory)
                    if side is not None and self._model is None:
                        try:
                            self._set_preprocess(side.preprocess)
                        except (KeyError, TypeError, ValueError):
                            side = None
                    self._image_side = side
            return self._image_side

    def _drop_image_side(self, directory: Path) -> None:
        """Forget a cached image side that failed to load or run, and delete it."""
        with self._lock:
            self._image_side = None
        shutil.rmtree(directory, ignore_errors=True)

    def _keep_image_side(self) -> None:
        """After open_clip loaded the image tower: keep it for the next process (best effort)."""
        directory = self._image_side_dir()
        if directory is None or not self._on_cpu() or self._device.type != "cpu":
            return  # the cached side runs on the CPU only: no copy of a GPU tower to the host
        from visuallens_app.models.clip_image import open_image_side, save_image_side

        if directory.is_dir():
            if open_image_side(directory) is not None:
                return
            shutil.rmtree(directory, ignore_errors=True)  # damaged: written anew
        assert self._source is not None
        try:
            save_image_side(
                self._model, directory, source=self._source, preprocess=self._preprocess
            )
        except Exception:  # a cache: open_clip's own path has already worked
            return

    @property
    def loaded_towers(self) -> frozenset[str]:
        """The towers whose weights are in memory now, read from the parameters themselves."""
        towers: set[str] = set()
        if self._text_side is not None and self._text_side.loaded:
            towers.add("text")
        if self._image_side is not None and self._image_side.loaded:
            towers.add("image")
        if self._model is not None:
            towers |= {_tower_of(n) for n, p in self._model.named_parameters() if not p.is_meta}
        return frozenset(towers)

    def load(self, *, text: bool = True, images: bool = True) -> None:
        """Load the towers a caller will need now rather than at its first encode (the GUI)."""
        if text:
            self._ready("text")
        side = self._cached_image_side() if images else None
        if side is not None:
            try:
                with self._lock:
                    side.load()
                return
            except Exception:
                self._drop_image_side(side.directory)
        if images:
            self._ready("image")

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def pretrained(
        cls, arch: str = DEFAULT_ARCH, tag: str = DEFAULT_PRETRAINED, *, device: str = "auto"
    ) -> ClipEncoder:
        """CLIP ``arch`` with the ``tag`` weights, downloading them unless HF_HUB_OFFLINE is set.

        The weights are only located (or downloaded) here; they are read at the first encode.

        Raises
        ------
        ModelUnavailableError
            Unknown arch/tag, or weights neither cached nor downloadable; one sentence.
        """
        if (arch, tag) != (DEFAULT_ARCH, DEFAULT_PRETRAINED):
            _check_arch_and_tag(arch, tag)  # no open_clip import for the default, or when known
        if hub_offline() and not clip_weights_available(arch, tag):
            raise ModelUnavailableError(
                f"CLIP {arch} ({tag}) weights are not on this machine and it is offline; "
                f"{_HOW_TO_GET}."
            )
        file = local_clip_weights(arch, tag) or fetch_clip_weights(arch, tag)
        problem = _unreadable_checkpoint(file)
        if problem:
            raise ModelUnavailableError(
                f"CLIP {arch} ({tag}) weights could not be loaded ({problem}); {_HOW_TO_GET}."
            )

        def build() -> _Built:
            try:
                return _build_skeleton(arch, file, _pretrained_cfg(arch, tag))
            except Exception as err:
                raise ModelUnavailableError(
                    f"CLIP {arch} ({tag}) weights could not be loaded ({type(err).__name__}); "
                    f"{_HOW_TO_GET}."
                ) from err

        return cls._deferred(
            build, encoder_id=f"clip:{arch}:{tag}", arch=arch, device=device, source=file
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, arch: str = DEFAULT_ARCH, device: str = "auto"
    ) -> ClipEncoder:
        """CLIP ``arch`` with weights from a local open_clip checkpoint (.bin, .pt, .safetensors).

        The id carries the file's name, size and mtime: replacing the file re-embeds the library,
        without hashing gigabytes at every start. The file is read at the first encode.
        """
        file = Path(path).expanduser()
        if not file.is_file():
            raise ModelUnavailableError(f"The CLIP checkpoint {str(file)!r} does not exist.")
        problem = _unreadable_checkpoint(file)
        if problem:
            raise ModelUnavailableError(
                f"{file.name} is not a CLIP {arch} checkpoint open_clip can load ({problem}); "
                "pass the matching architecture or another file."
            )
        stat = file.stat()
        stamp = hashlib.sha256(
            f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        ).hexdigest()[:12]

        def build() -> _Built:
            import open_clip

            if arch not in open_clip.list_models():
                raise ModelUnavailableError(f"Unknown CLIP architecture {arch!r} for {file.name}.")
            try:
                return _build_skeleton(arch, file, None)
            except Exception as err:
                raise ModelUnavailableError(
                    f"{file.name} is not a CLIP {arch} checkpoint open_clip can load "
                    f"({type(err).__name__}); pass the matching architecture or another file."
                ) from err

        return cls._deferred(
            build,
            encoder_id=f"clip:{arch}:file-{file.name}-{stamp}",
            arch=arch,
            device=device,
            source=file,
        )

    @classmethod
    def random(
        cls,
        arch: str = DEFAULT_ARCH,
        *,
        model_cfg: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> ClipEncoder:
        """CLIP with random weights (``pretrained=None``), for tests and speed benchmarks.

        ``model_cfg`` (open_clip's ``embed_dim`` / ``vision_cfg`` / ``text_cfg`` dict) builds a
        custom, e.g. tiny, model instead of the named ``arch``. Seeded, so the same arguments give
        the same vectors; the id says the weights are random so they are never mixed with real ones.
        """
        import open_clip
        import torch

        if model_cfg is None:
            cfg = open_clip.get_model_config(arch)
            if cfg is None:
                raise ModelUnavailableError(f"Unknown CLIP architecture {arch!r}.")
            name = arch
        else:
            cfg = json.loads(json.dumps(dict(model_cfg)))  # a deep copy that must be JSON-able
            digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
            name = f"custom-{digest}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build_random(cfg)
        context = int(cfg.get("text_cfg", {}).get("context_length", 77))
        if model_cfg is None:
            tokenizer = _tokenizer_for(arch)
        else:
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
        return cls(
            model,
            tokenizer,
            encoder_id=f"clip:{name}:random-seed{seed}",
            arch=name,
            device=device,
        )

    # -- the Encoder protocol --------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        side = self._cached_text_side()
        if side is None:
            side = self._cached_image_side()
        if side is not None:
            return int(side.dim)
        self._ready()
        return self._dim

    @property
    def input_size(self) -> int:
        if self._cached_image_side() is not None:
            return self._size  # set from the cached image side's preprocessing
        self._ready()
        return self._size

    @property
    def arch(self) -> str:
        """The open_clip architecture name (``custom-<hash>`` for a custom config)."""
        return self._arch

    @property
    def device(self) -> str:
        if self._model is None and self._cached_image_side() is not None:
            return "cpu"
        self._ready()
        return str(self._device)

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """(n, dim) unit vectors from the image tower, in batches of ``batch_size``.

        From the cached image side when there is one (no open_clip import), else from open_clip.
        """
        side = self._cached_image_side() if images else None
        if side is not None:
            try:
                with self._lock:
                    configure_torch_threads()
                    side.load()
                vectors: NDArray[np.float32] = encode_in_batches(
                    images,
                    self._batch_size,
                    int(side.dim),
                    lambda chunk: side.encode(self._pixels(chunk)).float().numpy(),
                )
                return vectors
            except Exception:
                self._drop_image_side(side.directory)  # open_clip answers, and writes it anew
        if images:
            self._ready("image")

        def batch(chunk: Sequence[Image.Image]) -> NDArray[np.float32]:
            pixels = self._pixels(chunk)
            pixels = pixels.to(device=self._device, dtype=self._dtype, non_blocking=True)
            out: NDArray[np.float32] = self._model.encode_image(pixels).float().cpu().numpy()
            return out

        return encode_in_batches(images, self._batch_size, self.dim, batch)

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, dim) unit vectors from the text tower.

        From the cached text side when there is one (no open_clip import), else from open_clip.
        """
        side = self._cached_text_side() if texts else None
        if side is not None:
            try:
                with self._lock:
                    side.load()
                parts = [side.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)]
                return l2_normalise(np.concatenate(parts))
            except Exception:
                self._drop_text_side(side.directory)  # open_clip answers, and writes it anew
        if texts:
            self._ready("text")

        def batch(chunk: Sequence[str]) -> NDArray[np.float32]:
            tokens = self._tokenizer(list(chunk)).to(self._device)
            out: NDArray[np.float32] = self._model.encode_text(tokens).float().cpu().numpy()
            return out

        return encode_in_batches(texts, 256, self.dim, batch)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """open_clip's eval transform (resize shortest side, centre crop, normalise) in one pass.

        Cropping via ``resize(box=...)`` resamples only the pixels that survive the crop, and the
        normalisation runs once per batch instead of once per image through torchvision.
        """
        import torch

        size = self._size
        batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            w, h = rgb.size
            if self._resize_mode == "squash":
                box = (0, 0, w, h)
            else:  # "shortest" (the default); "longest" (pad) is only used by a few SigLIPs
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                box = (left, top, left + side, top + side)
            if box == (0, 0, size, size):
                batch[i] = np.asarray(rgb)
            else:
                batch[i] = np.asarray(rgb.resize((size, size), self._resample, box=box))
        tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        return tensor.mul_(self._scale).add_(self._shift).contiguous()


def _tokenizer_for(arch: str) -> Callable[..., torch.Tensor]:
    import open_clip

    try:
        tokenizer: Callable[..., torch.Tensor] = open_clip.get_tokenizer(
            arch, cache_dir=str(hf_hub_cache_dir())
        )
    except Exception as err:  # HF tokenizers (e.g. multilingual models) live on the hub too
        raise ModelUnavailableError(
            f"The text tokenizer for CLIP {arch} is not on this machine ({type(err).__name__}); "
            f"{_HOW_TO_GET}."
        ) from err
    return tokenizer


def _build_random(cfg: dict[str, Any], preprocess: Mapping[str, Any] | None = None) -> Any:
    """An open_clip model from a config dict with random weights and no tower downloads.

    ``preprocess`` (a pretrained tag's mean, std, interpolation...) overrides open_clip's defaults.
    """
    from open_clip.model import CLIP, CustomTextCLIP, set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    vision = cfg.setdefault("vision_cfg", {})
    text = cfg.setdefault("text_cfg", {})
    # timm / HF towers would otherwise fetch their own pretrained weights from the hub.
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in text
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = False
    cfg.pop("multimodal_cfg", None)  # CoCa's decoder is not needed to embed
    model = (CustomTextCLIP if custom else CLIP)(**cfg)
    final = merge_preprocess_dict(PreprocessCfg(), dict(preprocess or {}))
    final["size"] = getattr(model.visual, "image_size", vision.get("image_size", 224))
    set_model_preprocess_cfg(model, final)
    return model


# -- lazy, tower-by-tower loading ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Built:
    """A built model; with ``checkpoint`` set its parameters are on meta, to be read from it."""

    model: Any
    tokenizer: Callable[..., torch.Tensor]
    checkpoint: Path | None
    dim: int | None


def _tower_of(key: str) -> str:
    """Which tower a state-dict key belongs to: "image" for ``visual.*``, else "text"."""
    return "image" if key.startswith("visual.") else "text"


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create every module's parameters on torch's meta device, buffers as usual.

    The random initialisation then costs nothing (0.9 s for ViT-B-32 on 2 cores, issue 16) and
    allocates nothing, while buffers computed at construction (the text causal mask) stay real.
    """
    import torch

    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param: Any) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            kind = type(param)
            module._parameters[name] = kind(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def _build_skeleton(arch: str, checkpoint: Path, tag_cfg: Mapping[str, Any] | None) -> _Built:
    """CLIP ``arch`` with parameters on meta, configured as a pretrained tag's weights expect."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelUnavailableError(f"Unknown CLIP architecture {arch!r}.")
    cfg = json.loads(json.dumps(cfg))
    if tag_cfg and tag_cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    dim = int(cfg["embed_dim"])
    with _parameters_on_meta():
        model = _build_random(cfg, tag_cfg)
    return _Built(model, _tokenizer_for(arch), checkpoint, dim)


def _move_buffers(model: Any, device: Any, dtype: Any) -> None:
    """Buffers (real, unlike the meta parameters) onto the model's device and float dtype."""
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                float_dtype = dtype if buffer.is_floating_point() else None
                module._buffers[name] = buffer.to(device=device, dtype=float_dtype)


def _unreadable_checkpoint(file: Path) -> str | None:
    """Why ``file`` cannot be a checkpoint, judged from its first bytes; None when it may be.

    Cheap (no torch), so that ``auto`` still falls back to the embedded encoder on a damaged
    download although the weights themselves are only read at the first encode.
    """
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
            if file.suffix == ".safetensors":
                if len(head) < 8:
                    return "the file is truncated"
                (length,) = struct.unpack("<Q", head)
                if length > 100_000_000 or handle.read(1) != b"{":
                    return "the file is not safetensors"
                return None
    except OSError as err:
        return err.strerror or type(err).__name__
    if len(head) < 8:
        return "the file is truncated"
    return None


def _read_state(checkpoint: Path, tower: str) -> dict[str, Any]:
    """The state dict of ``checkpoint``, only ``tower``'s keys where the format allows it.

    safetensors is read key by key; a pickled checkpoint is memory-mapped when it can be.
    """
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as handle:
            keys = list(handle.keys())
            if any(_tower_of(k) == "image" for k in keys):  # open_clip's own layout
                keys = [k for k in keys if _tower_of(k) == tower]
            return {k: handle.get_tensor(k) for k in keys}
    from open_clip.factory import load_state_dict

    return dict(load_state_dict(str(checkpoint), device="cpu", weights_only=True))


def _load_tower(model: Any, checkpoint: Path, tower: str, device: Any, dtype: Any) -> None:
    """Read ``tower``'s weights from ``checkpoint`` into the meta parameters of ``model``.

    The same conversions as open_clip's ``load_checkpoint``, then ``assign`` so that the loaded
    tensors become the parameters (no second copy).
    """
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    state = convert_state_dict(model, _read_state(checkpoint, tower))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        here = getattr(model, key, None)
        if key in state and here is not None and here.ndim != state[key].ndim:
            state[key] = state[key].reshape(here.shape)
    bias = getattr(model, "logit_bias", None)
    if "logit_bias" not in state and bias is not None and "logit_scale" in state:
        state["logit_bias"] = state["logit_scale"].new_zeros(state["logit_scale"].shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    wanted = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
        for k, v in state.items()
        if _tower_of(k) == tower
    }
    model.load_state_dict(wanted, strict=False, assign=True)
    missing = [n for n, p in model.named_parameters() if _tower_of(n) == tower and p.is_meta]
    if missing:
        raise ModelUnavailableError(
            f"{checkpoint.name} lacks the {tower} weights of this CLIP ({missing[0]}); "
            "pass the matching architecture or another file."
        )
