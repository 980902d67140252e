"""Model commands: which encoder would run and why, what is on this machine, and downloads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import add_common, emit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "models",
        help="show encoders and vision-language models, or fetch weights",
        description=(
            "Without a sub-command: which encoder `--encoder auto` picks on this machine and why. "
            "`list` shows every encoder and vision-language model on this machine; "
            "`download-clip` and `download-vlm` fetch weights into the local cache once (needs "
            "network); afterwards everything runs offline."
        ),
    )
    add_common(p, encoder=False)
    p.set_defaults(handler=cmd_models)
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    d = sub.add_parser("download-clip", help="download CLIP weights into the local cache")
    d.add_argument("--arch", default=None, help="open_clip architecture (default ViT-B-32)")
    d.add_argument("--pretrained", default=None, help="pretrained tag (default laion2b_s34b_b79k)")
    add_common(d, encoder=False)
    d.set_defaults(handler=cmd_download_clip)
    ls = sub.add_parser(
        "list", help="encoders and vision-language models on this machine, with sizes"
    )
    add_common(ls, encoder=False)
    ls.set_defaults(handler=cmd_list)
    v = sub.add_parser(
        "download-vlm",
        help="download a vision-language model (captions, re-ranking, inspection panels)",
        description=(
            "Fetch a Hugging Face vision-language model into the local cache (only its configs, "
            "tokenizer and safetensors weights) and check that the app can load it. Any model "
            "that transformers' AutoModelForImageTextToText loads works; the default runs on a "
            "laptop CPU. Then set it with `--vlm NAME` or in Settings."
        ),
    )
    v.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME",
        help="Hub name, e.g. HuggingFaceTB/SmolVLM-256M-Instruct (the default)",
    )
    add_common(v, encoder=False)
    v.set_defaults(handler=cmd_download_vlm)


def cmd_models(args: argparse.Namespace) -> int:
    from visuallens_app.devices import available_device
    from visuallens_app.models.clip import (
        DEFAULT_ARCH,
        DEFAULT_PRETRAINED,
        local_clip_weights,
    )

    local = local_clip_weights(DEFAULT_ARCH, DEFAULT_PRETRAINED)
    data = {
        "auto": "clip" if local else "embedded",
        "clip": {
            "arch": DEFAULT_ARCH,
            "pretrained": DEFAULT_PRETRAINED,
            "weights": str(local) if local else None,
        },
        "device": available_device("auto"),
    }

    def text() -> str:
        if local:
            why = f"CLIP {DEFAULT_ARCH} ({DEFAULT_PRETRAINED}) weights are cached at {local}"
        else:
            why = (
                "CLIP weights are not on this machine "
                "(`visuallens models download-clip` fetches them once)"
            )
        return f"--encoder auto uses the {data['auto']} encoder on {data['device']}: {why}."

    emit(args, data, text)
    return 0


def cmd_download_clip(args: argparse.Namespace) -> int:
    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED
    from visuallens_app.models.registry import download_clip_weights

    arch = args.arch or DEFAULT_ARCH
    tag = args.pretrained or DEFAULT_PRETRAINED
    bar, progress = _byte_bar(args)
    try:
        path = download_clip_weights(arch, tag, progress)
    finally:
        bar.close()
    emit(
        args,
        {"arch": arch, "pretrained": tag, "path": str(path)},
        lambda: f"CLIP {arch} ({tag}) weights are in {path}; --encoder auto now uses them.",
    )
    return 0


def _byte_bar(args: argparse.Namespace) -> tuple[Any, Any]:
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, disable=args.json or not sys.stderr.isatty())

    def progress(done: int, total: int | None) -> None:
        if total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def cmd_download_vlm(args: argparse.Namespace) -> int:
    from visuallens_app.vlm.loading import DEFAULT_VLM, download_vlm

    name = args.name or DEFAULT_VLM
    bar, progress = _byte_bar(args)
    try:
        folder = download_vlm(name, progress)
    finally:
        bar.close()
    emit(
        args,
        {"name": name, "path": str(folder)},
        lambda: f"{name} is in {folder}; use it with --vlm {name} or set it in Settings.",
    )
    return 0


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cmd_list(args: argparse.Namespace) -> int:
    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED, local_clip_weights
    from visuallens_app.settings import VLM_FEATURES, Settings
    from visuallens_app.vlm.loading import is_local_source, list_local_vlms

    settings = Settings.load()
    clip = local_clip_weights(DEFAULT_ARCH, DEFAULT_PRETRAINED)
    encoders: list[dict[str, object]] = [
        {"name": "embedded", "where": "installed with the app (EfficientNet-Lite0 + MiniLM)"},
    ]
    if clip:
        encoders.append(
            {
                "name": f"clip:{DEFAULT_ARCH}/{DEFAULT_PRETRAINED}",
                "where": str(clip),
                "bytes": clip.stat().st_size,
            }
        )
    vlms: list[dict[str, object]] = [
        {"name": m.name, "family": m.model_type, "where": str(m.folder), "bytes": m.bytes}
        for m in list_local_vlms()
    ]
    configured = {feature: settings.vlm_for(feature) for feature in VLM_FEATURES}
    for source in dict.fromkeys(v for v in configured.values() if v):
        folder = Path(source).expanduser()
        if is_local_source(source) and folder.is_dir():
            vlms.append({"name": folder.name, "where": str(folder), "bytes": _folder_bytes(folder)})
    data = {"encoders": encoders, "vlms": vlms, "configured_vlm": configured}

    def size(row: dict[str, object]) -> str:
        value = row.get("bytes")
        return f"{int(value) / 2**20:,.0f} MB" if isinstance(value, int) else "-"

    def text() -> str:
        lines = ["Encoders:"]
        lines += [f"  {row['name']:<40} {size(row):>9}  {row['where']}" for row in encoders]
        if not clip:
            lines.append("  (CLIP: not on this machine; `visuallens models download-clip`)")
        lines.append("Vision-language models:")
        lines += [f"  {row['name']:<40} {size(row):>9}  {row['where']}" for row in vlms]
        if not vlms:
            lines.append(
                "  none on this machine; `visuallens models download-vlm` fetches a small one"
            )
        used = sorted({v for v in configured.values() if v})
        lines.append(
            "Configured: " + (", ".join(used) if used else "none (set one in Settings or --vlm)")
        )
        return "\n".join(lines)

    emit(args, data, text)
    return 0
