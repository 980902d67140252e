"""``visuallens tldr train``: the paper's reward model, trained on the perturbation engine's JSONL.

:func:`register_train` adds the command to the ``tldr`` group's subparsers (``cli/tldr.py`` calls
it); the work is :func:`visuallens_app.tldr.training.train_reward_model`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visuallens_app.cli import common


def register_train(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to the ``tldr`` subparsers; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train the paper's token-level reward model on labelled captions",
        description=(
            "Train a TLDR reward model: a local vision-language model without its LM head, a "
            "linear head on every response token (and optionally LoRA on the projector and the "
            "language model), with per-token binary cross-entropy on DATA.jsonl (written by "
            "`visuallens tldr perturb`). Progress is checkpointed into --out after every epoch "
            "and on Ctrl-C; running the same command again resumes."
        ),
    )
    parser.add_argument("data", type=Path, metavar="DATA.jsonl", help="labelled captions")
    common.add_vlm_option(parser, "the reward model")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--naive",
        action="store_true",
        help="the paper's baseline: the loss on each response's last token only",
    )
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        metavar="R",
        help="LoRA rank on the projector and language model (default 0: the head only; the "
        "paper uses 512)",
    )
    parser.add_argument("--lora-alpha", type=int, default=128, metavar="A", help="(128)")
    parser.add_argument("--lora-dropout", type=float, default=0.1, metavar="P", help="(0.1)")
    parser.add_argument("--epochs", type=int, default=3, metavar="N", help="(default 3)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="B", help="(default 4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        metavar="N",
        help="linear warm-up before the cosine decay (default: 200, at most a tenth of the run)",
    )
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from visuallens_app.jobs import Partial
    from visuallens_app.tldr.reward import LoraSettings
    from visuallens_app.tldr.training import (
        DataWarning,
        EpochFinished,
        TrainingConfig,
        train_reward_model,
    )

    lora = (
        LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout)
        if args.lora_rank > 0
        else None
    )
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        naive=args.naive,
        lora=lora,
    )
    vlm = common.load_vlm(args, "tldr")

    def on_partial(partial: Partial) -> None:
        if isinstance(partial, DataWarning):
            print(f"visuallens: {partial.message}", file=sys.stderr)
        elif isinstance(partial, EpochFinished) and not args.json:
            print(
                f"Epoch {partial.epoch}/{partial.epochs}: mean token loss {partial.loss:.4f} "
                f"(step {partial.step}, checkpoint saved).",
                file=sys.stderr,
            )

    result = common.run_job(
        train_reward_model(vlm, args.data, args.out, config), on_partial=on_partial
    )
    data = {
        "out": str(result.folder),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "epoch_losses": [round(v, 6) for v in result.epoch_losses],
        "metrics": result.metrics,
        "naive": args.naive,
        "lora": lora.as_json() if lora else None,
        "warnings": list(result.warnings),
    }

    def text() -> str:
        final = result.metrics.get("final_loss")
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
        loss = f"final loss {final:.4f}" if isinstance(final, float) else "no loss"
        return (
            f"Trained {'a naive ' if args.naive else 'a '}reward model on "
            f"{result.metrics['records']} captions in {result.steps} steps{resumed}: {loss}; "
            f"saved in {result.folder}."
        )

    common.emit(args, data, text)
    return 0


__all__ = ["register_train", "run_train"]
