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
