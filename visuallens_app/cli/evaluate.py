"""Evaluation commands: ``eval`` (a benchmark file or a synthetic sweep) and ``eval-synth``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import add_vlm_option, emit, load_encoder, load_vlm, run_job

#: Irrelevant-history shares a synthetic sweep runs by default (the central-claim check).
DEFAULT_SHARES = (0.2, 0.5, 0.8)


def register(subparsers: Any) -> None:
    from visuallens_app.lens.evaluate import DEFAULT_METHODS, METHODS, PAPER_MIN_HISTORY

    p = subparsers.add_parser(
        "eval",
        help="measure Hit@1/3/10 and MRR on a benchmark (or a synthetic one)",
        description=(
            "Rank every question of a JSONL benchmark (format: docs/benchmark-format.md) with "
            "each method and print Hit@1, Hit@3, Hit@10 and MRR with 95% bootstrap confidence "
            "intervals. With --synthetic N, generate N questions with planted preferences per "
            "irrelevant-history share instead and show how each method copes."
        ),
    )
    p.add_argument("benchmark", type=Path, nargs="?", metavar="BENCH.jsonl")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help=f"which of {', '.join(METHODS)} (default: all but rerank)",
    )
    p.add_argument(
        "--encoder",
        default=None,
        metavar="NAME",
        help=(
            "the encoder (as for `visuallens index`); for --synthetic, 'hashing' (the default "
            "there) is a model-free bag-of-words space"
        ),
    )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=0, help="candidate order and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument(
        "--min-history",
        type=int,
        default=PAPER_MIN_HISTORY,
        metavar="N",
        help=f"skip questions with fewer history photos (default {PAPER_MIN_HISTORY}, the paper's)",
    )
    add_vlm_option(p, "the 'rerank' method (given: rerank is added to the methods)")
    p.add_argument("--rerank-model", dest="vlm", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="evaluate N synthetic questions per irrelevant share instead of a file",
    )
    p.add_argument(
        "--irrelevant-share",
        type=float,
        nargs="+",
        default=list(DEFAULT_SHARES),
        metavar="S",
        help="with --synthetic: shares of irrelevant history photos (default 0.2 0.5 0.8)",
    )
    p.add_argument(
        "--train-share",
        type=float,
        default=0.0,
        metavar="S",
        help="with --synthetic: share of questions used to fit the full method (default 0)",
    )
    p.add_argument(
        "--photos",
        action="store_true",
        help=(
            "with --synthetic: histories of 10-300 photos made as ImageNet probabilities and "
            "mapped by the embedded encoder (hubs, blurry photos, documents included)"
        ),
    )
    p.add_argument(
        "--fit-weights",
        action="store_true",
        help=(
            "with --synthetic --photos: fit the profile/aspects/evidence mixing weights on the "
            "train share (0.5 unless given) and evaluate the rest with them"
        ),
    )
    p.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help=(
            "with --fit-weights: write the weights there (resources/lens/match_weights.json "
            "is the file `recommend` reads)"
        ),
    )
    p.set_defaults(handler=cmd_eval)

    p = subparsers.add_parser(
        "eval-synth",
        help="write a synthetic benchmark file (JSONL + rendered photos)",
        description=(
            "Write N synthetic questions with planted preferences as a benchmark file, with a "
            "rendered caption card per history photo in OUT_photos/. It exercises the file "
            "path end to end; its photos are text cards, not a test of visual taste."
        ),
    )
    p.add_argument("out", type=Path, metavar="OUT.jsonl")
    p.add_argument("-n", "--examples", type=int, default=20, help="questions (default 20)")
    p.add_argument("--irrelevant-share", type=float, default=0.5, metavar="S")
    p.add_argument("--train-share", type=float, default=0.0, metavar="S")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_eval_synth)


def cmd_eval(args: argparse.Namespace) -> int:
    from visuallens_app.lens.evaluate import BenchmarkError, evaluate, load_benchmark

    methods = list(dict.fromkeys(args.methods))
    reranker = None
    if args.vlm or "rerank" in methods:
        from visuallens_app.lens.rerank import MLLMReranker

        reranker = MLLMReranker(load_vlm(args, "rerank"))
        if "rerank" not in methods:
            methods.append("rerank")

    if args.synthetic is not None:
        if args.benchmark is not None:
            raise BenchmarkError("Give either a benchmark file or --synthetic N, not both.")
        if args.photos:
            return _photo_benchmark(args, methods)
        if args.fit_weights or args.write:
            raise BenchmarkError("--fit-weights and --write need --synthetic N --photos.")
        return _synthetic_sweep(args, methods)
    if args.benchmark is None:
        raise BenchmarkError("Give a benchmark file (BENCH.jsonl) or --synthetic N.")

    load = load_benchmark(args.benchmark, min_history=args.min_history)
    if load.problems and not args.json:
        print(f"{len(load.problems)} problem(s) in {load.path}:", file=sys.stderr)
        for problem in load.problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        if len(load.problems) > 10:
            print(f"  ... and {len(load.problems) - 10} more", file=sys.stderr)
    encoder = load_encoder(args, quiet=args.json)
    report = run_job(
        evaluate(
            load.examples,
            encoder,
            methods=methods,
            seed=args.seed,
            reranker=reranker,
            bootstrap=args.bootstrap,
        ),
        show=not args.json,
        lines_when_piped=True,
    )
    data = {
        "benchmark": str(load.path),
        "encoder": encoder.id,
        **report.as_json(),
        "problems": [str(p) for p in load.problems],
    }
    emit(args, data, report.table)
    return 0


def _synthetic_sweep(args: argparse.Namespace, methods: list[str]) -> int:
    from visuallens_app.lens.evaluate import evaluate
    from visuallens_app.lens.synthetic import HashingTextEncoder, SyntheticConfig, make_benchmark

    if "rerank" in methods:
        methods.remove("rerank")  # synthetic questions have vectors, not photos
        print("visuallens: synthetic questions have no photos; rerank left out.", file=sys.stderr)
    encoder: Any
    if args.encoder in (None, "hashing"):
        encoder = HashingTextEncoder()
    else:
        encoder = load_encoder(args, quiet=args.json)
    results: dict[str, object] = {}
    texts: list[str] = []
    for share in args.irrelevant_share:
        config = SyntheticConfig(irrelevant_share=share)
        # One seed for every share: the same users and candidates, only histories differ.
        synthetic = make_benchmark(
            encoder, args.synthetic, config=config, seed=args.seed, train_share=args.train_share
        )
        report = run_job(
            evaluate(
                synthetic.examples,
                encoder,
                methods=methods,
                seed=args.seed,
                vocabulary=synthetic.vocabulary,
                bootstrap=args.bootstrap,
            ),
            show=not args.json,
        )
        entry: dict[str, object] = report.as_json()
        lines = [f"Irrelevant share {share:.2f}:", report.table()]
        if "full" in report.methods and "no_retrieval" in report.methods:
            advantage = report.difference("full", "no_retrieval")
            entry["full_minus_no_retrieval_mrr"] = advantage.as_json()
            lines.append(f"full - no_retrieval MRR: {advantage!s} (paired bootstrap)")
        results[f"{share:g}"] = entry
        texts.append("\n".join(lines))
    data = {"encoder": encoder.id, "synthetic": args.synthetic, "shares": results}
    emit(args, data, lambda: "\n\n".join(texts))
    return 0


def _photo_benchmark(args: argparse.Namespace, methods: list[str]) -> int:
    """``eval --synthetic N --photos [--fit-weights [--write FILE]]``."""
    from visuallens_app.lens.evaluate import BenchmarkError, evaluate, fit_shipped_weights
    from visuallens_app.lens.matching import match_weights_path, write_match_weights
    from visuallens_app.lens.synthetic_photos import make_photo_benchmark

    if "rerank" in methods:
        methods.remove("rerank")
        print("visuallens: synthetic questions have no photos; rerank left out.", file=sys.stderr)
    if args.write and not args.fit_weights:
        raise BenchmarkError("--write needs --fit-weights.")
    encoder = load_encoder(args, quiet=args.json)
    if not hasattr(encoder, "vectors_from_probabilities"):
        raise BenchmarkError(
            f"--photos needs the embedded encoder (it maps class probabilities), not {encoder.id}."
        )
    train_share = args.train_share or (0.5 if args.fit_weights else 0.0)
    examples = make_photo_benchmark(
        encoder, args.synthetic, seed=args.seed, train_share=train_share
    )
    data: dict[str, object] = {"encoder": encoder.id, "synthetic_photos": args.synthetic}
    lines: list[str] = []
    if args.fit_weights:
        train = [e for e in examples if e.split == "train"]
        weights, train_mrr = run_job(
            fit_shipped_weights(train, encoder, seed=args.seed), show=not args.json
        )
        data["fitted_weights"] = {
            **weights.as_json(),
            "train_mrr": train_mrr,
            "train": len(train),
        }
        lines.append(
            f"Fitted on {len(train)} train question(s): profile {weights.profile:g}, "
            f"aspects {weights.aspects:g}, evidence {weights.evidence:g} "
            f"(train MRR {100 * train_mrr:.1f})."
        )
        if args.write:
            command = (
                f"visuallens eval --synthetic {args.synthetic} --photos --encoder embedded "
                f"--fit-weights "
                f"--seed {args.seed} --write {args.write}"
            )
            written = write_match_weights(
                args.write,
                weights,
                encoder=encoder.id,
                benchmark=f"synthetic photos, {len(train)} train questions, seed {args.seed}",
                train_mrr=round(train_mrr, 6),
                command=command,
            )
            data["written"] = str(written)
            lines.append(f"Wrote {written}.")
            if written.resolve() != match_weights_path().resolve():
                lines.append(f"(`recommend` reads {match_weights_path()}.)")
        # Score the held-out questions with what was just fitted.
        examples = tuple(e for e in examples if e.split != "train")
    report = run_job(
        evaluate(
            examples,
            encoder,
            methods=methods,
            seed=args.seed,
            bootstrap=args.bootstrap,
            fitted_weights=weights if args.fit_weights else None,
        ),
        show=not args.json,
    )
    data.update(report.as_json())
    lines.append(report.table())
    for baseline in ("naive", "no_retrieval", "retrieval_only"):
        if "full" in report.methods and baseline in report.methods:
            delta = report.difference("full", baseline)
            data[f"full_minus_{baseline}_mrr"] = delta.as_json()
            lines.append(f"full - {baseline} MRR: {delta!s} (paired bootstrap)")
    emit(args, data, lambda: "\n".join(lines))
    return 0


def cmd_eval_synth(args: argparse.Namespace) -> int:
    from visuallens_app.lens.synthetic import (
        HashingTextEncoder,
        SyntheticConfig,
        make_benchmark,
        write_benchmark,
    )

    synthetic = make_benchmark(
        HashingTextEncoder(),
        args.examples,
        config=SyntheticConfig(irrelevant_share=args.irrelevant_share),
        seed=args.seed,
        train_share=args.train_share,
    )
    path = write_benchmark(synthetic, args.out)
    photos = len({t for texts in synthetic.photo_texts.values() for t in texts})
    data = {"benchmark": str(path), "examples": len(synthetic.examples), "photos": photos}
    emit(
        args,
        data,
        lambda: f"Wrote {len(synthetic.examples)} questions to {path} ({photos} photos).",
    )
    return 0
