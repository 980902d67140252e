"""Model commands: which encoder would run and why, and fetching CLIP weights."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from visuallens_app.cli.common import add_common, emit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "models",
        help="show encoders, or fetch CLIP weights",
        description=(
            "Without a sub-command: which encoder `--encoder auto` picks on this machine and why. "
            "`download-clip` fetches CLIP weights into the local cache once (needs network); "
            "afterwards everything runs offline."
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
    from tqdm import tqdm

    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED
    from visuallens_app.models.registry import download_clip_weights

    arch = args.arch or DEFAULT_ARCH
    tag = args.pretrained or DEFAULT_PRETRAINED
    bar = tqdm(unit="B", unit_scale=True, disable=args.json or not sys.stderr.isatty())

    def progress(done: int, total: int | None) -> None:
        if total:
            bar.total = total
        bar.n = done
        bar.refresh()

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
