"""Loading a local vision-language model: any folder or cached Hub name that transformers' Auto
classes load, checked first so that every way it can be wrong is one sentence.

A source is either a folder saved with ``save_pretrained`` or a Hub name (``org/name``) already in
the Hugging Face cache. Nothing is downloaded unless the user asked (:func:`download_vlm`), no
remote code runs (``trust_remote_code`` stays off) and only safetensors weights are read: pickled
``pytorch_model.bin`` files can execute code when loaded, so a folder that has nothing else is
refused with the command that converts it.

Before transformers sees the folder: config.json exists and parses, the model type is a
vision-language one (transformers' image-text-to-text mapping, or a ``vision_config``), every
weight shard the index names is present, and the weights fit in the memory free on the device.
torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visuallens_app import devices
from visuallens_app.errors import ModelUnavailableError, first_sentence

log = logging.getLogger(__name__)

#: What ``visuallens models download-vlm`` fetches when no name is given: 256 M parameters, runs
#: on a laptop CPU in about 1 GB of memory (float32).
DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"

#: Attention implementations a caller may ask for; "eager" is the one that returns attention maps.
ATTENTION = ("auto", "eager", "sdpa")

#: Bytes per weight by dtype name, for the memory check.
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1}

#: Share of the free memory the weights may take: activations and the OS need the rest.
_MEMORY_HEADROOM = 0.85

#: Progress of a download: (bytes done, bytes total or None when unknown).
DownloadProgress = Callable[[int, int | None], None]

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

HINT = (
    "give a folder saved with save_pretrained, or a Hub name downloaded with "
    "`visuallens models download-vlm NAME`"
)


@dataclass(eq=False)
class VisionLanguageModel:
    """A loaded vision-language model and its processor, with what the runtime needs to know.

    ``fingerprint`` changes whenever the weights would answer differently (another folder, or new
    files in the same one): stored captions and cached scores are keyed by it.
    """

    source: str
    folder: Path
    model: Any
    processor: Any
    device: str
    dtype: Any
    attn_implementation: str
    fingerprint: str
    load_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def text_config(self) -> Any:
        """The language model's config (the VLM's own when it is not nested)."""
        getter = getattr(self.config, "get_text_config", None)
        return getter() if callable(getter) else self.config

    @property
    def family(self) -> str:
        return str(getattr(self.config, "model_type", "unknown"))

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        from visuallens_app.vlm.layers import decoder_layers

        return len(decoder_layers(self.model))

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def name(self) -> str:
        """What the user would call it: the Hub name, or the folder's name."""
        return self.source if not Path(self.source).exists() else self.folder.name

    def describe(self) -> str:
        """One line for a status bar: name, family, size, where it runs."""
        millions = self.parameters / 1e6
        if millions >= 1000:
            size = f"{millions / 1000:.1f} B"
        else:
            size = f"{millions:.0f} M" if millions >= 10 else f"{millions:.2g} M"
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.name} ({self.family}, {size} parameters) on {self.device}, {dtype}"


def is_local_source(source: str) -> bool:
    """Whether ``source`` names a folder rather than a Hub repository (``org/name``)."""
    text = source.strip()
    if Path(text).expanduser().exists() or text.startswith(("/", ".", "~")):
        return True
    return _HUB_NAME.fullmatch(text) is None


def resolve_source(source: str, *, allow_download: bool = False) -> Path:
    """The local folder holding ``source``: the folder itself, or the Hub name's cached snapshot.

    Only when ``allow_download`` may the Hub be asked; otherwise a name that is not in the cache
    is one sentence saying how to get it.
    """
    text = source.strip()
    if not text:
        raise ModelUnavailableError(f"No vision-language model is configured; {HINT}.")
    if is_local_source(text):
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise ModelUnavailableError(
                f"No vision-language model at {folder}: the folder does not exist; {HINT}."
            )
        return folder
    from huggingface_hub import snapshot_download

    if allow_download and not _cached(text):
        _require_hub(text)
    try:
        return Path(
            snapshot_download(text, local_files_only=not allow_download, allow_patterns=_PATTERNS)
        )
    except Exception as err:  # the hub client raises a dozen types; every one means "not here"
        if allow_download:
            raise ModelUnavailableError(
                f"Could not download {text} from the Hugging Face Hub ({first_sentence(err)}); "
                "check the name and the network, or give a local folder."
            ) from err
        raise ModelUnavailableError(
            f"{text} is not on this machine; run `visuallens models download-vlm {text}` with a "
            "network, or give a local folder."
        ) from err


#: Files a vision-language model needs: configs, tokenizer, processor, safetensors weights.
_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def check_folder(
    folder: Path, *, device: str = "cpu", dtype: str = "float32", check_memory: bool = True
) -> dict[str, Any]:
    """The folder's config, after every check that can be made without loading (module doc).

    ``check_memory=False`` skips the free-memory check (a pre-check before the device is known).
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelUnavailableError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder; {HINT}."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelUnavailableError(
            f"{config_path} cannot be read ({first_sentence(err)}); the folder is damaged or "
            "incompletely downloaded: download or save the model again."
        ) from err
    if not isinstance(config, dict):
        raise ModelUnavailableError(
            f"{config_path} is not a model configuration (it holds a JSON "
            f"{type(config).__name__}); download or save the model again."
        )
    model_type = str(config.get("model_type", ""))
    if not is_vision_language(config):
        kind = f"a text-only model ({model_type})" if model_type else "not a known model type"
        raise ModelUnavailableError(
            f"{folder} holds {kind}; captions, re-ranking, hallucination checks and steering "
            f"need a vision-language model such as {DEFAULT_VLM}."
        )
    weights = _weight_files(folder)
    if not weights:
        if any(folder.glob("pytorch_model*.bin")) or any(folder.glob("*.pt")):
            raise ModelUnavailableError(
                f"{folder} has only pickled weights (pytorch_model.bin), which can run code when "
                "loaded, so the app does not read them; convert them once with "
                "`model.save_pretrained(folder, safe_serialization=True)` in a trusted Python."
            )
        raise ModelUnavailableError(
            f"{folder} has no model weights (*.safetensors); the download is incomplete: "
            "download or save the model again."
        )
    needed = _estimated_bytes(weights, config, dtype)
    free = devices.free_memory_bytes(device) if check_memory else None
    if free is not None and needed > free * _MEMORY_HEADROOM:
        raise ModelUnavailableError(
            f"{folder.name} needs about {needed / 2**30:.1f} GB on {device} in {dtype} but only "
            f"{free / 2**30:.1f} GB is free; close other programs or choose a smaller model."
        )
    return config


def is_vision_language(config: dict[str, Any]) -> bool:
    """Whether a config.json describes a model that takes images and text."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = str(config.get("model_type", ""))
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "vision_config" in config


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of the folder; raises when an index names a missing shard."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelUnavailableError(
                f"{index} cannot be read ({first_sentence(err)}); download the model again."
            ) from err
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            raise ModelUnavailableError(
                f"{folder} lacks {len(missing)} of its {len(shards)} weight files (first: "
                f"{missing[0]}); the download is incomplete: download the model again."
            )
        return [folder / name for name in sorted(shards)]
    return sorted(folder.glob("*.safetensors"))


def _estimated_bytes(weights: list[Path], config: dict[str, Any], dtype: str) -> int:
    stored = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    on_disk = sum(path.stat().st_size for path in weights)
    ratio = _DTYPE_BYTES.get(dtype, 4) / _DTYPE_BYTES.get(stored, 4)
    return int(on_disk * ratio)


def fingerprint(folder: Path) -> str:
    """A short hash of the folder's path and its files' sizes and times (not their bytes).

    Hashing gigabytes at every start would cost seconds; a size or time changes whenever the
    weights are replaced, which is what the fingerprint must notice.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(folder.resolve()).encode("utf-8"))
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def load_vlm(
    source: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "auto",
    allow_download: bool = False,
) -> VisionLanguageModel:
    """Load a vision-language model and its processor, ready for inference (``eval()``).

    Parameters
    ----------
    source
        A folder saved with ``save_pretrained`` or a Hub name in the local cache.
    device, dtype
        ``"auto"`` follows :mod:`visuallens_app.devices`; an explicit device is checked.
    attn_implementation
        ``"eager"`` when attention maps are wanted (sdpa returns none); ``"auto"`` lets
        transformers choose.
    allow_download
        Fetch a Hub name that is not cached (the user asked for it).
    """
    import transformers

    if attn_implementation not in ATTENTION:
        raise ModelUnavailableError(
            f"Unknown attention implementation {attn_implementation!r}; use {', '.join(ATTENTION)}."
        )
    resolved = devices.available_device(device)
    torch_dtype = devices.torch_dtype(resolved, dtype)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    folder = resolve_source(str(source), allow_download=allow_download)
    check_folder(folder, device=resolved, dtype=dtype_name)
    devices.configure_torch_threads()
    # transformers' partial annotations fight mypy --strict; the objects are used dynamically.
    tf: Any = transformers
    # Its per-shard "Loading weights" bars would break the CLI's one progress line.
    tf.utils.logging.disable_progress_bar()
    options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    started = time.perf_counter()
    try:
        processor = tf.AutoProcessor.from_pretrained(folder, **options)
        if attn_implementation != "auto":
            options["attn_implementation"] = attn_implementation
        model = tf.AutoModelForImageTextToText.from_pretrained(
            folder, dtype=torch_dtype, use_safetensors=True, **options
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as err:
        raise ModelUnavailableError(
            f"Could not load a vision-language model from {folder}: {first_sentence(err)}."
        ) from err
    if (
        getattr(processor, "tokenizer", None) is None
        or getattr(processor, "image_processor", None) is None
    ):
        raise ModelUnavailableError(
            f"{folder} has no image+text processor, so it cannot be prompted with a photo; {HINT}."
        )
    model.to(resolved)
    model.eval()
    implementation = str(getattr(model.config, "_attn_implementation", None) or "auto")
    vlm = VisionLanguageModel(
        source=str(source),
        folder=folder,
        model=model,
        processor=processor,
        device=resolved,
        dtype=torch_dtype,
        attn_implementation=implementation,
        fingerprint=fingerprint(folder),
        load_seconds=time.perf_counter() - started,
    )
    log.info("Loaded %s in %.1f s", vlm.describe(), vlm.load_seconds)
    return vlm


def download_vlm(name: str = DEFAULT_VLM, progress: DownloadProgress | None = None) -> Path:
    """Fetch ``name`` from the Hugging Face Hub into its cache; returns the snapshot folder.

    Only the files a model needs (configs, tokenizer, safetensors weights), with byte progress.
    Offline, or for an unknown name, one sentence.
    """
    from huggingface_hub import snapshot_download

    if os.environ.get("HF_HUB_OFFLINE", "") in ("", "0"):
        from visuallens_app.hub import HubUnreachableError

        try:
            _require_hub(name)
        except HubUnreachableError:
            if not _cached(name):
                raise
            return resolve_source(name)  # already here, and nothing newer can be fetched
    tqdm_class = _progress_tqdm(progress) if progress is not None else None
    try:
        folder = Path(snapshot_download(name, allow_patterns=_PATTERNS, tqdm_class=tqdm_class))
    except Exception as err:  # offline, unknown repo, gated repo, disk full...
        raise ModelUnavailableError(_download_failure(name, err)) from err
    check_folder(folder)
    return folder


def _cached(name: str) -> bool:
    """Whether the Hub name ``name`` already has a snapshot in the cache (no network)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name, local_files_only=True, allow_patterns=_PATTERNS)
    except Exception:  # not cached, or a broken cache entry: either way not usable offline
        return False
    return True


def _require_hub(name: str) -> None:
    """Fail at once, in one sentence, when ``name`` would have to come over no network."""
    from visuallens_app.hub import require_hub

    require_hub(
        name,
        cli_alternative="give --vlm a model folder copied from another machine",
        gui_alternative="choose a model folder copied from another machine",
    )


def _download_failure(name: str, err: BaseException) -> str:
    """The sentence for a failed download: offline, unknown, gated, or the disk."""
    from huggingface_hub import errors as hub

    from visuallens_app.errors import user_message

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if offline or isinstance(err, hub.OfflineModeIsEnabled):
        return f"Cannot download {name}: downloads are switched off here (HF_HUB_OFFLINE is set)."
    if isinstance(err, hub.GatedRepoError):
        return (
            f"{name} is gated: accept its licence on huggingface.co, log in with "
            "`hf auth login`, and download again."
        )
    if isinstance(err, hub.RepositoryNotFoundError):
        return f"There is no model {name} on the Hugging Face Hub (or it is private)."
    sentence = user_message(err)
    if sentence:
        return sentence
    text = f"{type(err).__name__}: {err}"
    if "Connect" in text or "Timeout" in text or "resolve" in text.lower():
        return (
            f"Cannot download {name}: the Hugging Face Hub cannot be reached from this machine; "
            "check the network connection."
        )
    return f"Could not download {name}: {first_sentence(err)}."


def _progress_tqdm(progress: DownloadProgress) -> Any:
    """A tqdm class that reports the bytes of the whole download to ``progress``."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if getattr(self, "unit", "") == "B":
                progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return Reporting


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A vision-language model found on this machine (``visuallens models list``)."""

    name: str
    folder: Path
    bytes: int
    model_type: str


def list_local_vlms() -> list[LocalModel]:
    """Vision-language models in the Hugging Face cache, largest first."""
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir()
    except Exception:  # no cache folder yet, or one the hub client cannot read
        return []
    found: list[LocalModel] = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            config_file = Path(revision.snapshot_path) / "config.json"
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(config, dict) and is_vision_language(config):
                found.append(
                    LocalModel(
                        repo.repo_id,
                        Path(revision.snapshot_path),
                        int(revision.size_on_disk),
                        str(config.get("model_type", "")),
                    )
                )
                break
    return sorted(found, key=lambda m: -m.bytes)


__all__ = [
    "DEFAULT_VLM",
    "LocalModel",
    "VisionLanguageModel",
    "check_folder",
    "download_vlm",
    "fingerprint",
    "is_vision_language",
    "list_local_vlms",
    "load_vlm",
    "resolve_source",
]
