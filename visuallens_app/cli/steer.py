"""``visuallens steer``: steering vectors computed, saved, listed, applied and swept.

``steer vector`` computes a concept's vector on the model's own language model and saves it (in
the library's ``steering/vectors/``, or ``--out FILE``); ``steer ask`` answers a question about a
photo with and without it; ``steer sweep`` runs the layer x alpha grid on a CV-Bench-layout
benchmark (docs/steering-benchmark-format.md); ``steer list`` and ``steer delete`` manage the
saved vectors. ``--json`` on each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import (
    add_common,
    add_vlm_option,
    emit,
    library_dir,
    load_vlm,
    run_job,
)


def register(subparsers: Any) -> None:
    steer = subparsers.add_parser(
        "steer",
        help="textual steering vectors applied to a vision-language model",
        description=(
            "Compute steering vectors from a concept's sentences (mean shift, linear probe or "
            "SAE features), ask a question about a photo with and without one, and sweep layer "
            "x alpha on a multiple-choice benchmark with the paper's held-out protocol."
        ),
    )
    commands = steer.add_subparsers(dest="steer_command", metavar="STEER_COMMAND")
    steer.set_defaults(handler=lambda args: _help(steer))

    vector = commands.add_parser("vector", help="compute and save a concept's steering vector")
    add_common(vector, encoder=False)
    vector.add_argument(
        "--concept",
        required=True,
        help="a shipped concept (spatial, counting, ...) or a JSONL file",
    )
    vector.add_argument(
        "--method",
        default="mean_shift",
        choices=("mean_shift", "probe", "sae"),
        help="default mean_shift",
    )
    vector.add_argument(
        "--sae", type=Path, metavar="DIR", help="SAELens folder (cfg.json + weights)"
    )
    vector.add_argument("--layers", required=True, help="decoder layers, e.g. 8-14 or 3,5,7")
    vector.add_argument("--out", type=Path, metavar="FILE", help="write here instead of the store")
    vector.add_argument("--name", help="name in the store (default: concept-method-model-layers)")
    add_vlm_option(vector, "steering")
    vector.set_defaults(handler=_vector)

    ask = commands.add_parser(
        "ask", help="answer a question about a photo with and without steering"
    )
    add_common(ask, encoder=False)
    ask.add_argument("image", type=Path, metavar="IMAGE")
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("--options", help="answer options to score, comma-separated (e.g. A,B)")
    ask.add_argument("--vector", required=True, metavar="NAME|FILE", help="a saved vector")
    ask.add_argument("--layer", required=True, help="layer(s) to steer, e.g. 8 or 8-10")
    ask.add_argument("--alpha", type=float, required=True, help="strength (0: no steering)")
    ask.add_argument("--mask", default="image", choices=("image", "text", "both"))
    ask.add_argument(
        "--every-step", action="store_true", help="steer every generated token, not only the prompt"
    )
    ask.add_argument("--max-new-tokens", type=int, default=32)
    add_vlm_option(ask, "steering")
    ask.set_defaults(handler=_ask)

    sweep = commands.add_parser("sweep", help="layer x alpha grid on a multiple-choice benchmark")
    add_common(sweep, encoder=False)
    sweep.add_argument("benchmark", type=Path, metavar="BENCH.jsonl")
    sweep.add_argument("--vector", required=True, metavar="NAME|FILE", help="a saved vector")
    sweep.add_argument("--layers", required=True, help="layers of the grid, e.g. 8-14")
    sweep.add_argument("--alphas", required=True, help="alphas, e.g. 0.1,0.5,1 or 0.1:1.0:0.3")
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="results and cache")
    sweep.add_argument("--mask", default="image", choices=("image", "text", "both"))
    sweep.add_argument("--task", help="only the questions of this task (e.g. Count)")
    sweep.add_argument("--instruction", help="the prompting baseline's instruction")
    add_vlm_option(sweep, "steering")
    sweep.set_defaults(handler=_sweep)

    listing = commands.add_parser("list", help="the saved steering vectors")
    add_common(listing, encoder=False)
    listing.set_defaults(handler=_list)

    delete = commands.add_parser("delete", help="delete a saved steering vector")
    add_common(delete, encoder=False)
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=_delete)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _store(args: argparse.Namespace) -> Any:
    from visuallens_app.steering.store import VectorStore

    return VectorStore(library_dir(args) / "steering" / "vectors")


def _vector(args: argparse.Namespace) -> int:
    from visuallens_app.steering.concepts import load_concepts
    from visuallens_app.steering.vectors import compute_vector, load_sae, parse_layers

    concepts = load_concepts(args.concept)
    sae = load_sae(args.sae) if args.sae else None
    vlm = load_vlm(args, "steering")
    layers = parse_layers(args.layers, vlm.num_layers)
    job = compute_vector(vlm, concepts, args.method, layers, sae=sae)
    vector = run_job(job, show=not args.json)
    if args.out:
        path, name = vector.save(args.out), args.out.stem
    else:
        stored = _store(args).save(vector, args.name)
        path, name = stored.path, stored.name
    info = {"name": name, "path": str(path), **vector.describe()}
    norms = ", ".join(f"L{k} {v:.3g}" for k, v in vector.norms.items())
    emit(
        args,
        info,
        lambda: f"Saved {name} ({vector.method}, {vector.concept}; norms {norms}) to {path}",
    )
    return 0


def _ask(args: argparse.Namespace) -> int:
    from visuallens_app.steering.apply import ask
    from visuallens_app.steering.bench import open_photo
    from visuallens_app.steering.vectors import parse_layers

    vector = _store(args).load(args.vector)
    image = open_photo(args.image)
    vlm = load_vlm(args, "steering")
    layers = parse_layers(args.layer, vlm.num_layers)
    options = [o.strip() for o in args.options.split(",") if o.strip()] if args.options else []
    job = ask(
        vlm,
        image,
        args.question,
        vector=vector,
        layers=layers,
        alpha=args.alpha,
        mask=args.mask,
        during="generation" if args.every_step else "prefill",
        options=options,
        max_new_tokens=args.max_new_tokens,
    )
    result = run_job(job, show=not args.json)

    def text() -> str:
        lines = []
        for side, answer in (("unsteered", result.unsteered), ("steered", result.steered)):
            lines.append(f"{side:>9}: {answer.text}")
            for option, p in answer.probabilities.items():
                lines.append(f"{'':>11}{option:<8} {p:6.3f} {'#' * round(p * 40)}")
        return "\n".join(lines)

    emit(args, result.to_json(), text)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from visuallens_app.steering.bench import load_benchmark
    from visuallens_app.steering.sweep import parse_alphas, run_sweep
    from visuallens_app.steering.vectors import parse_layers

    vector = _store(args).load(args.vector)
    items = load_benchmark(args.benchmark, task=args.task)
    alphas = parse_alphas(args.alphas)
    vlm = load_vlm(args, "steering")
    layers = parse_layers(args.layers, vlm.num_layers)
    job = run_sweep(
        vlm,
        items,
        vector,
        layers,
        alphas,
        out_dir=args.out,
        mask=args.mask,
        instruction=args.instruction,
    )
    result = run_job(job, show=not args.json)
    data = {
        **result.to_json(),
        "files": {n: str(args.out / n) for n in ("sweep.json", "heatmap.png")},
    }

    def text() -> str:
        held = result.heldout
        ci = held["steered_vs_unsteered"]
        header = "layer  " + " ".join(f"{a:>7g}" for a in result.alphas)
        rows = [
            f"{layer:>5}  " + " ".join(f"{v:7.3f}" for v in row)
            for layer, row in zip(result.layers, result.table(), strict=True)
        ]
        return "\n".join(
            [
                f"Grid search on {result.grid_size} questions (unsteered {result.unsteered:.3f}, "
                f"prompting {result.prompting:.3f}):",
                header,
                *rows,
                f"Best: layer {result.best[0]}, alpha {result.best[1]:g} "
                f"(gain {result.gain:+.3f}).",
                f"Held out ({held['questions']} questions): unsteered {held['unsteered']:.3f}, "
                f"steered {held['steered']:.3f} ({ci['difference']:+.3f}, 95% CI "
                f"{ci['low']:+.3f}..{ci['high']:+.3f}), prompting {held['prompting']:.3f}.",
                f"Wrote {args.out / 'sweep.json'} and {args.out / 'heatmap.png'}.",
            ]
        )

    emit(args, data, text)
    return 0


def _list(args: argparse.Namespace) -> int:
    stored = _store(args).list()
    data = [{"name": s.name, "path": str(s.path), **s.info} for s in stored]

    def text() -> str:
        if not stored:
            return "No saved steering vectors; compute one with `visuallens steer vector`."
        return "\n".join(
            f"{s.name}: {s.info['method']} {s.info['concept']}, layers "
            f"{','.join(map(str, s.info['layers']))}, {s.info['model']} ({s.info['created']})"
            for s in stored
        )

    emit(args, data, text)
    return 0


def _delete(args: argparse.Namespace) -> int:
    path = _store(args).delete(args.name)
    emit(args, {"deleted": args.name, "path": str(path)}, lambda: f"Deleted {args.name} ({path}).")
    return 0
