"""``visuallens tldr``: hard negatives, per-token hallucination scores, the paper's metrics.

``tldr perturb`` makes labelled JSONL from captions, ``tldr score`` scores one text about one
image, ``tldr eval`` runs a detector over labelled JSONL. ``tldr train`` is added by
``visuallens_app.cli.tldr_train`` when that module is present.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import add_vlm_option, emit, load_encoder, load_vlm, run_job

GROUNDING = "grounding"


def register(subparsers: Any) -> None:
    from visuallens_app.tldr.perturb import CATEGORIES

    group = subparsers.add_parser(
        "tldr",
        help="token-level hallucination scores: perturb, score, eval",
        description=(
            "TLDR: per-token hallucination scores for captions and answers about your photos "
            "(arXiv 2410.04734). Make synthetic hard negatives, score a text against a photo, "
            "and measure a detector with the paper's metrics."
        ),
    )
    sub = group.add_subparsers(dest="tldr_command", metavar="COMMAND")
    group.set_defaults(handler=lambda args: _help(group))

    p = sub.add_parser(
        "perturb",
        help="write labelled hard negatives (JSONL) from captions",
        description=(
            'Read {"caption", "image", "id"} lines and write each caption (all tokens good) and '
            "up to N minimal rule-based edits per category, with per-token labels by diff "
            "alignment (format: docs/tldr-data-format.md). Bad lines are reported one per line."
        ),
    )
    p.add_argument("source", type=Path, metavar="IN.jsonl")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.jsonl")
    p.add_argument(
        "--categories",
        nargs="+",
        choices=CATEGORIES,
        default=list(CATEGORIES),
        metavar="CATEGORY",
        help=f"which of {', '.join(CATEGORIES)} (default: all)",
    )
    p.add_argument("--per-caption", type=int, default=1, metavar="N", help="edits per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--llm",
        action="store_true",
        help="let a local model rewrite the captions (one edit per category), then check them",
    )
    add_vlm_option(p, "--llm rewrites")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_perturb)

    p = sub.add_parser(
        "score",
        help="score each token of a text about an image",
        description=(
            "Print every token of TEXT with its offsets, P(good), whether the detector checked "
            "it, and whether it is flagged (P(good) below the threshold)."
        ),
    )
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("text", metavar="TEXT")
    _detector_options(p)
    p.add_argument("--heatmaps", type=Path, metavar="DIR", help="write a PNG overlay per token")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser(
        "eval",
        help="token/sentence/response accuracy and mAP of a detector on labelled JSONL",
        description=(
            "Score every record of labelled JSONL (images relative to the file's folder) and "
            "print the paper's metrics, overall and per category, and hallucination rates."
        ),
    )
    p.add_argument("data", type=Path, metavar="DATA.jsonl")
    _detector_options(p)
    p.set_defaults(handler=cmd_eval)

    try:
        from visuallens_app.cli.tldr_train import register_train  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:
        pass
    else:
        register_train(sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector",
        default=GROUNDING,
        metavar="grounding|DIR",
        help="grounding (default: the offline encoder-based detector) or a reward-model folder",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="flag below this P(good) (0.5)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--encoder", default=None, metavar="NAME", help="encoder for grounding")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    add_vlm_option(p, "a reward-model detector (default: the base model its folder records)")


def make_detector(args: argparse.Namespace, *, heatmaps: bool = False) -> Any:
    """The detector ``--detector`` names: the grounding detector or a trained reward model."""
    from visuallens_app.tldr.inputs import TldrInputError

    if args.detector == GROUNDING:
        from visuallens_app.tldr.grounding import GroundingDetector

        return GroundingDetector(load_encoder(args, quiet=args.json), heatmaps=heatmaps)
    folder = Path(args.detector)
    if not folder.is_dir():
        raise TldrInputError(
            f"--detector must be 'grounding' or a trained reward-model folder; {folder} is neither."
        )
    # ---- HOOK: the paper's reward model (visuallens_app/tldr/reward.py, built separately) ----
    try:
        from visuallens_app.tldr.reward import load_detector  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise TldrInputError(
            "Reward-model detectors are not in this build yet; use --detector grounding."
        ) from None
    vlm = load_vlm(args, "tldr") if getattr(args, "vlm", None) else None
    return load_detector(folder, vlm=vlm)
    # ---- end of hook ----


def cmd_perturb(args: argparse.Namespace) -> int:
    from visuallens_app.tldr.labels import TldrDataError
    from visuallens_app.tldr.synthetic import perturb_file

    if args.per_caption < 1:
        raise TldrDataError("--per-caption must be at least 1.")
    if args.source.resolve() == args.out.resolve():
        raise TldrDataError("The output file must not be the input file.")
    job = perturb_file(
        args.source,
        args.out,
        categories=list(dict.fromkeys(args.categories)),
        per_caption=args.per_caption,
        seed=args.seed,
        rewriter=_rewriter(args) if args.llm else None,
    )
    summary = run_job(job, show=not args.json)
    for problem in summary.problems:
        print(f"visuallens: {args.source}: {problem}", file=sys.stderr)
    emit(args, {"out": str(args.out), **summary.as_json()}, summary.table)
    return 0


def _rewriter(args: argparse.Namespace) -> Any:
    from visuallens_app.tldr.rewrite import VlmRewriter

    return VlmRewriter(load_vlm(args, "tldr"))


def cmd_score(args: argparse.Namespace) -> int:
    from visuallens_app.tldr.inputs import check_text, open_image

    check_text(args.text)
    image = open_image(args.image)
    detector = make_detector(args, heatmaps=args.heatmaps is not None)
    scores = detector.score(image, "", args.text)
    for warning in scores.warnings:
        print(f"visuallens: {warning}", file=sys.stderr)
    written = _write_heatmaps(args.heatmaps, image, scores) if args.heatmaps else []
    data = scores.as_json(args.threshold)
    if args.heatmaps:
        data["heatmaps"] = [str(p) for p in written]

    def text() -> str:
        lines = [f"{'token':20s} {'span':>11s} {'P(good)':>8s}  checked  flagged"]
        for t in scores.tokens:
            p = "-" if t.p_good is None else f"{t.p_good:.3f}"
            flag = "FLAGGED" if t.flagged(args.threshold) else ""
            span = f"{t.start}-{t.end}"
            lines.append(
                f"{t.text[:20]:20s} {span:>11s} {p:>8s}  {'yes' if t.checked else 'no':7s}  {flag}"
            )
        flagged = scores.flagged(args.threshold)
        lines.append(
            f"{len(flagged)} of {sum(t.checked for t in scores.tokens)} checked tokens flagged"
        )
        if written:
            lines.append(f"{len(written)} heatmap(s) in {args.heatmaps}")
        return "\n".join(lines)

    emit(args, data, text)
    return 0


def _write_heatmaps(folder: Path, image: Any, scores: Any) -> list[Path]:
    from visuallens_app.tldr.overlay import heatmap_overlay

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, heatmap in sorted(scores.heatmaps.items()):
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", scores.tokens[index].text)[:40] or "token"
        path = folder / f"{index:04d}-{name}.png"
        heatmap_overlay(image, heatmap).save(path)
        written.append(path)
    return written


def cmd_eval(args: argparse.Namespace) -> int:
    from visuallens_app.tldr.evaluate import evaluate_detector
    from visuallens_app.tldr.labels import TldrDataError, read_records

    load = read_records(args.data)
    for problem in load.problems:
        print(f"visuallens: {args.data}: {problem}", file=sys.stderr)
    if not load.records:
        raise TldrDataError(f"{args.data} holds no labelled record to evaluate.")
    detector = make_detector(args)
    result = run_job(
        evaluate_detector(load.records, detector, args.data.parent, threshold=args.threshold),
        show=not args.json,
    )
    for problem in result.problems:
        print(f"visuallens: {args.data}: {problem}", file=sys.stderr)
    data = {"data": str(args.data), **result.as_json(), "skipped_lines": load.problems}
    emit(args, data, lambda: f"Detector {result.detector}\n{result.report.table()}")
    return 0
