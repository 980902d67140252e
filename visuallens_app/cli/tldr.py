"""``visuallens tldr``: hard negatives, per-token hallucination scores, the paper's metrics.

``tldr perturb`` makes labelled JSONL from captions, ``tldr score`` scores one text about one
image, ``tldr eval`` runs a detector over labelled JSONL, ``tldr correct`` fixes or suggests
replacements for the flagged words, ``tldr annotate-export`` writes the annotation mode's
items. ``tldr train`` is added by ``visuallens_app.cli.tldr_train`` when that module is present.
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
        help="token-level hallucination scores: perturb, score, eval, correct, annotate-export",
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

    p = sub.add_parser(
        "correct",
        help="correct the flagged words of a text (with a VLM) or suggest replacements",
        description=(
            "Score TEXT against IMAGE, then, with a generative vision-language model (--vlm or "
            "Settings), ask it to fix the flagged sentences with the paper's prompt (minimal "
            "edits; unflagged sentences kept as they are) and print the corrected text, its diff "
            "and its new scores; without one (or with --suggest), print ranked replacements for "
            "each flagged phrase, scored by the detector."
        ),
    )
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("text", metavar="TEXT")
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
    add_vlm_option(p, "the correction")
    p.add_argument("--suggest", action="store_true", help="suggestions even with a VLM set")
    p.add_argument("--per-phrase", type=int, default=5, metavar="N", help="suggestions each (5)")
    p.add_argument("--max-new-tokens", type=int, default=160, metavar="N")
    p.set_defaults(handler=cmd_correct)

    p = sub.add_parser(
        "annotate-export",
        help="export the annotation mode's items (JSONL or a Label Studio import file)",
        description=(
            "Write every item of the annotation store: JSONL with character offsets, labels, "
            "per-token P(good) and seconds spent, or a Label Studio import file (spans "
            "labelled 'hallucination' over the text)."
        ),
    )
    p.add_argument("--format", choices=("jsonl", "label-studio"), default="jsonl")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--store",
        type=Path,
        metavar="FILE",
        help="the annotation store (default: <library>/tldr/annotations.sqlite)",
    )
    p.add_argument("--library", type=Path, metavar="DIR", help="library directory")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_annotate_export)

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


def cmd_correct(args: argparse.Namespace) -> int:
    from visuallens_app.cli.common import vlm_source
    from visuallens_app.tldr.correct import (
        DEFAULT_CORRECTION_TOKENS,
        correct_with_vlm,
        suggestions,
    )
    from visuallens_app.tldr.inputs import TldrInputError, check_text, open_image

    check_text(args.text)
    if args.per_phrase < 1:
        raise TldrInputError("--per-phrase must be at least 1.")
    if args.max_new_tokens < 1:
        raise TldrInputError("--max-new-tokens must be at least 1.")
    image = open_image(args.image)
    use_vlm = not args.suggest and bool(vlm_source(args, "tldr"))
    # --vlm is the correcting model here; a reward-model detector uses the base it records.
    detector = make_detector(argparse.Namespace(**{**vars(args), "vlm": None}))
    scores = detector.score(image, "", args.text)
    for warning in scores.warnings:
        print(f"visuallens: {warning}", file=sys.stderr)
    flagged = scores.flagged(args.threshold)
    data: dict[str, Any] = {"scores": scores.as_json(args.threshold)}
    if not flagged:
        data["mode"] = "none"
        emit(args, data, lambda: "No word is flagged: there is nothing to correct.")
        return 0
    if not use_vlm:
        found = suggestions(
            detector,
            image,
            args.text,
            scores,
            per_phrase=args.per_phrase,
            threshold=args.threshold,
        )
        data["mode"] = "suggestions"
        data["suggestions"] = [s.as_json() for s in found]
        emit(args, data, lambda: _suggestions_text(found, hint=not args.suggest))
        return 0
    vlm = load_vlm(args, "tldr")
    correction = run_job(
        correct_with_vlm(
            vlm,
            image,
            args.text,
            scores,
            threshold=args.threshold,
            max_new_tokens=args.max_new_tokens or DEFAULT_CORRECTION_TOKENS,
        ),
        show=not args.json,
    )
    for warning in correction.warnings:
        print(f"visuallens: {warning}", file=sys.stderr)
    rescored = detector.score(image, "", correction.corrected)
    data["mode"] = "correction"
    data["correction"] = correction.as_json()
    data["rescored"] = rescored.as_json(args.threshold)

    def text() -> str:
        inline = "".join(
            old
            if op == "equal"
            else (f"[-{old}-]" if old else "") + (f"{{+{new}+}}" if new else "")
            for op, old, new in correction.diff
        )
        before, after = len(flagged), len(rescored.flagged(args.threshold))
        return (
            f"{correction.corrected}\n\nChanges: {inline if correction.changed else '(none)'}\n"
            f"Flagged words: {before} before, {after} after."
        )

    emit(args, data, text)
    return 0


def _marked(old: str, new: str) -> str:
    return (f"[-{old}-]" if old else "") + (f"{{+{new}+}}" if new else "")


def _suggestions_text(found: list[Any], *, hint: bool) -> str:
    lines = []
    for s in found:
        own = "-" if s.p_good is None else f"{s.p_good:.3f}"
        lines.append(f"{s.original!r} at {s.start}-{s.end} (P(good) {own}):")
        if not s.replacements:
            lines.append("    no alternatives known for this word")
        for text, p in s.replacements:
            lines.append(f"    {text:24s} {'-' if p is None else f'{p:.3f}'}")
    if hint:
        lines.append("(no vision-language model is configured: give --vlm to have it correct)")
    return "\n".join(lines)


def cmd_annotate_export(args: argparse.Namespace) -> int:
    from visuallens_app.cli.common import library_dir
    from visuallens_app.tldr.annotate import (
        AnnotationError,
        AnnotationStore,
        default_annotations_path,
    )

    path = args.store or default_annotations_path(library_dir(args))
    if not path.is_file():
        raise AnnotationError(
            f"There is no annotation store at {path}; annotate in the Hallucinations panel first "
            "or give --store FILE."
        )
    with AnnotationStore(path) as store:
        if args.format == "jsonl":
            count = store.export_jsonl(args.out)
        else:
            count = store.export_label_studio(args.out)
    data = {"store": str(path), "out": str(args.out), "format": args.format, "items": count}
    emit(args, data, lambda: f"Wrote {count} item(s) to {args.out} ({args.format}).")
    return 0
