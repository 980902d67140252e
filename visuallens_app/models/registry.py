"""Which encoder to load, on which device, and why: the one entry point the GUI and CLI share.

``load_encoder("auto")`` prefers CLIP when its weights are already on this machine and falls back
to the embedded encoder otherwise, never touching the network; an explicit ``"clip"`` may
download. Loaded encoders are kept per process, so the GUI and CLI never load the same one twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from visuallens_app.devices import available_device
from visuallens_app.errors import ModelUnavailableError
from visuallens_app.models.base import Encoder, EncoderChoice

# Choices by (name as asked, device), and encoders by what they load, so "auto" and "embedded"
# share one EmbeddedEncoder. An RLock because loading a choice fills both maps.
_choices: dict[tuple[str, str], EncoderChoice] = {}
_encoders: dict[tuple[str, str], Encoder] = {}
_cache_lock = threading.RLock()
#: Progress of a weights download: (bytes done, bytes total or None when unknown).
DownloadProgress = Callable[[int, int | None], None]


def parse_encoder_name(name: str) -> tuple[str, str | None, str | None]:
    """Split an encoder name into (kind, arch or checkpoint path, pretrained tag).

    ``auto`` / ``embedded`` / ``clip`` / ``clip:ARCH`` / ``clip:ARCH/TAG`` / ``clip:/path/file``
    / a bare path to a checkpoint file. kind is one of auto, embedded, clip, checkpoint.
    """
    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED

    raw = (name or "auto").strip()
    low = raw.lower()
    if low in ("auto", "embedded"):
        return low, None, None
    if low == "clip":
        return "clip", DEFAULT_ARCH, DEFAULT_PRETRAINED
    rest = raw[5:] if low.startswith("clip:") else raw
    if _looks_like_path(rest):
        return "checkpoint", str(Path(rest).expanduser()), None
    if not low.startswith("clip:"):
        raise ModelUnavailableError(
            f"Unknown encoder {raw!r}; "
            "use auto, embedded, clip, clip:ARCH/TAG or a checkpoint path."
        )
    arch, _, tag = rest.partition("/")
    if not arch:
        raise ModelUnavailableError(f"Encoder {raw!r} names no CLIP architecture.")
    return "clip", arch, tag or DEFAULT_PRETRAINED


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "~", ".", "\\"))
        or (len(text) > 1 and text[1] == ":")  # C:\...
        or text.endswith((".pt", ".pth", ".bin", ".safetensors"))
        or Path(text).expanduser().is_file()
    )


def load_encoder(name: str = "auto", device: str = "auto") -> EncoderChoice:
    """Load (once per process) the encoder ``name`` names, with a sentence saying which and why.

    Parameters
    ----------
    name
        ``auto`` (CLIP if its weights are on this machine, else embedded; never downloads),
        ``embedded``, ``clip`` (ViT-B-32 / laion2b_s34b_b79k, may download), ``clip:ARCH/TAG``,
        or a path to an open_clip checkpoint file (ViT-B-32 unless ``clip:ARCH`` says otherwise
        through :class:`~visuallens_app.models.clip.ClipEncoder` directly).
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.

    Raises
    ------
    ModelUnavailableError
        Weights missing and not fetchable, unknown name or device; ``str(err)`` is one sentence.
    """
    resolved_device = _device_for_key(device)
    key = ((name or "auto").strip(), resolved_device)
    with _cache_lock:
        cached = _choices.get(key)
        if cached is None:
            cached = _choices[key] = _choose(key[0], resolved_device)
        return cached


def _device_for_key(device: str) -> str:
    """``device`` checked against the machine, except auto and cpu: those need no check, and the
    check imports torch, which a command with nothing to encode never needs (issue 13); the
    encoders resolve ``auto`` when they load."""
    pref = (device or "auto").strip().lower()
    return pref if pref in ("auto", "cpu") else available_device(pref)


def _on(device: str) -> str:
    return "" if device == "auto" else f" on {device}"


def clear_encoder_cache() -> None:
    """Forget loaded encoders (tests, or after the user downloads new weights)."""
    with _cache_lock:
        _choices.clear()
        _encoders.clear()


def _shared(what: str, device: str, load: Callable[[], Encoder]) -> Encoder:
    """The encoder loaded for ``what`` on ``device``, loading it on first use."""
    with _cache_lock:
        encoder = _encoders.get((what, device))
        if encoder is None:
            encoder = _encoders[(what, device)] = load()
        return encoder


def _choose(name: str, device: str) -> EncoderChoice:
    from visuallens_app.models.clip import ClipEncoder, clip_weights_available

    def clip_pretrained(arch: str, tag: str) -> Encoder:
        return _shared(
            f"clip:{arch}/{tag}", device, lambda: ClipEncoder.pretrained(arch, tag, device=device)
        )

    kind, arch, tag = parse_encoder_name(name)
    if kind == "auto":
        from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED

        if clip_weights_available(DEFAULT_ARCH, DEFAULT_PRETRAINED):
            try:
                clip = clip_pretrained(DEFAULT_ARCH, DEFAULT_PRETRAINED)
            except ModelUnavailableError as err:
                # A corrupt cache entry must not stop the app: say why and carry on offline.
                return EncoderChoice(
                    _embedded(device),
                    f"Using the embedded encoder (EfficientNet-Lite0 + MiniLM, offline): {err}",
                )
            return EncoderChoice(
                clip,
                f"Using CLIP {DEFAULT_ARCH} ({DEFAULT_PRETRAINED}){_on(device)}: "
                "weights found in the local cache.",
            )
        return EncoderChoice(
            _embedded(device),
            "Using the embedded encoder (EfficientNet-Lite0 + MiniLM, offline): "
            "CLIP weights are not on this machine; "
            "`visuallens models download-clip` or --encoder clip to fetch them.",
        )
    if kind == "embedded":
        return EncoderChoice(
            _embedded(device),
            "Using the embedded encoder (EfficientNet-Lite0 + MiniLM, offline), as asked.",
        )
    if kind == "checkpoint":
        assert arch is not None
        path = arch
        clip = _shared(
            f"checkpoint:{path}", device, lambda: ClipEncoder.from_checkpoint(path, device=device)
        )
        return EncoderChoice(
            clip, f"Using CLIP from the checkpoint {Path(path).name}{_on(device)} ({clip.id})."
        )
    assert arch is not None
    assert tag is not None
    was_cached = clip_weights_available(arch, tag)
    clip = clip_pretrained(arch, tag)
    where = "weights found in the local cache" if was_cached else "weights downloaded"
    return EncoderChoice(clip, f"Using CLIP {arch} ({tag}){_on(device)}: {where}.")


def _embedded(device: str) -> Encoder:
    from visuallens_app.models.embedded import EmbeddedEncoder

    return _shared("embedded", device, lambda: EmbeddedEncoder(device=device))


def download_clip_weights(
    arch: str | None = None,
    tag: str | None = None,
    progress_callback: DownloadProgress | None = None,
) -> Path:
    """Fetch CLIP weights into the cache open_clip reads from; returns the local file.

    For the GUI's "Download CLIP weights" button and ``visuallens models download-clip``. Runs
    the same resolution open_clip uses (Hugging Face hub file, safetensors first, else the URL).

    Raises
    ------
    ModelUnavailableError
        The machine is offline, the hub refuses, or the tag is unknown.
    """
    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED, fetch_clip_weights

    return fetch_clip_weights(
        arch or DEFAULT_ARCH, tag or DEFAULT_PRETRAINED, progress_callback=progress_callback
    )
