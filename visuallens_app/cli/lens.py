"""Lens commands: recommend, catalog validate/list, aspects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import (
    add_common,
    add_vlm_option,
    emit,
    interrupt_cancels,
    load_encoder,
    load_vlm,
    open_store,
    run_job,
    vlm_source,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "recommend",
        help="recommend items of a category, explained by your own photos",
        description=(
            "Rank the catalog's items of one category for you: the photos in your library that "
            "relate to the category are found, their aspects (latte art, exposed brick...) "
            "collected, and every item scored against them. Everything runs on this machine."
        ),
    )
    p.add_argument("--category", required=True, help='what to recommend, e.g. "coffee shop"')
    p.add_argument(
        "--catalog",
        type=Path,
        metavar="DIR",
        help="catalog folder (items.jsonl or items.csv; default: settings, else the shipped one)",
    )
    p.add_argument("-k", type=int, default=10, help="how many recommendations (default 10)")
    p.add_argument(
        "-w",
        type=int,
        default=None,
        help=(
            "history photos retrieved per category, at least (default 64; more when many "
            "photos are clearly about the category)"
        ),
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="show the supporting photos (with captions), and matched aspects of each item",
    )
    add_vlm_option(p, "captions and re-ranking")
    p.add_argument(
        "--captioner", dest="vlm", metavar="DIR", help=argparse.SUPPRESS
    )  # before the shared VLM setting: the captions model
    p.add_argument(
        "--no-captions",
        action="store_true",
        help=(
            "no captions of the retrieved photos (default: captioned, and cached in the "
            "library, when a vision-language model is configured or given)"
        ),
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help=(
            "re-rank with the vision-language model, as the paper does (the grid of your "
            "photos + a prompt, one forward pass; slow on a CPU)"
        ),
    )
    p.add_argument("--rerank-model", metavar="DIR|NAME", help=argparse.SUPPRESS)
    add_common(p)
    p.set_defaults(handler=cmd_recommend)

    p = subparsers.add_parser(
        "caption",
        help="caption every photo in the library (for the re-ranker and explanations)",
        description=(
            "Caption the library's photos with the vision-language model, so that "
            "recommendations never wait for it. Photos already captioned by this model are "
            "skipped; an interrupted run continues where it stopped."
        ),
    )
    add_vlm_option(p, "captions")
    p.add_argument("--captioner", dest="vlm", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--library", type=Path, metavar="DIR", help="library directory")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_caption)

    p = subparsers.add_parser(
        "catalog",
        help="check or list a catalog of recommendable items",
        description="Validate a catalog folder or list its categories.",
    )
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION")
    v = sub.add_parser(
        "validate",
        help="report every problem in a catalog folder",
        description="Print one line per problem; exit status 1 if the catalog cannot be used.",
    )
    v.add_argument("dir", type=Path, metavar="DIR", help="catalog folder")
    v.add_argument("--json", action="store_true", help="print JSON for scripts")
    v.set_defaults(handler=cmd_catalog_validate)
    ls = sub.add_parser("list", help="list categories with item counts")
    ls.add_argument("--catalog", type=Path, metavar="DIR", help="catalog folder")
    ls.add_argument("--json", action="store_true", help="print JSON for scripts")
    ls.set_defaults(handler=cmd_catalog_list)
    p.set_defaults(handler=_catalog_help(p))

    p = subparsers.add_parser(
        "aspects",
        help="show the aspect words that describe a photo",
        description=(
            "Score the aspect vocabulary against one photo with the active encoder, normalised "
            "over your library so that generic words do not win every photo."
        ),
    )
    p.add_argument("photo", type=Path, metavar="PHOTO", help="an image file")
    p.add_argument("-k", type=int, default=10, help="how many aspects (default 10)")
    p.add_argument(
        "--caption",
        action="store_true",
        help="also caption the photo with the vision-language model (--vlm, else settings)",
    )
    add_vlm_option(p, "the caption")
    p.add_argument("--captioner", metavar="DIR", help=argparse.SUPPRESS)
    add_common(p)
    p.set_defaults(handler=cmd_aspects)


def _catalog_help(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _catalog(path: Path | None) -> Any:
    from visuallens_app.lens.catalog import load_catalog, load_default_catalog
    from visuallens_app.settings import Settings

    folder = path or (Path(s) if (s := Settings.load().catalog_dir) else None)
    return load_default_catalog() if folder is None else load_catalog(folder).catalog


def _captioner(args: argparse.Namespace) -> Any:
    """The captioner the user asked for (option, else settings), or None for no captions."""
    from visuallens_app.vlm.captions import VlmCaptioner

    if getattr(args, "no_captions", False) or not vlm_source(args, "captions"):
        return None
    return VlmCaptioner(load_vlm(args, "captions"))


def _reranker(args: argparse.Namespace) -> Any:
    """The re-ranker, when asked for (``--rerank`` or the older ``--rerank-model``)."""
    from visuallens_app.lens.rerank import MLLMReranker

    if args.rerank_model:
        return MLLMReranker(load_vlm(args, "rerank", source=str(args.rerank_model)))
    if args.rerank:
        return MLLMReranker(load_vlm(args, "rerank"))
    return None


def cmd_recommend(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from visuallens_app.jobs import CancelToken
    from visuallens_app.lens.pipeline import Recommender, candidates_for
    from visuallens_app.lens.service import (
        NOTHING_RELATES,
        LensOptions,
        check_options,
        prepare,
        recommend,
    )
    from visuallens_app.library.paths import display_path
    from visuallens_app.settings import Settings

    settings = Settings.load()
    options = LensOptions(k=args.k, w=args.w if args.w is not None else settings.retrieval_size)
    check_options(options)
    catalog = _catalog(args.catalog)
    # An unknown category or a missing model folder fails before the encoder loads.
    candidates_for(catalog, args.category)
    options = replace(options, captioner=_captioner(args), reranker=_reranker(args))
    encoder = load_encoder(args, quiet=args.json)
    with open_store(args) as store:
        recommender = Recommender(store, encoder)
        # A large catalog's first question embeds its descriptions: minutes, with a bar.
        cancel = CancelToken()
        with interrupt_cancels(cancel, "stopping after the descriptions being read"):
            run_job(
                prepare(recommender, catalog, args.category, cancel),
                show=not args.json,
                lines_when_piped=True,
            )
        report = recommend(recommender, catalog, args.category, options)

    def photo_line(path: Path, contribution: float, caption: str | None) -> str:
        line = f"      photo {display_path(path)}  ({contribution:+.3f})"
        return f'{line}  "{caption}"' if caption else line

    def text() -> str:
        lines = [report.library_note] if report.library_note else []
        for item in report.items:
            lines.append(f"{item.rank:2d}. {item.item.name}  ({item.score:+.2f})")
            if args.explain:
                lines.extend(
                    photo_line(e.photo.path, e.contribution, e.photo.caption) for e in item.evidence
                )
                if not item.relates:
                    lines.append(f"      {NOTHING_RELATES.lower()}")
                if item.aspects:
                    lines.append(
                        "      aspects " + ", ".join(f"{t} ({c:+.2f})" for t, c in item.aspects)
                    )
        if args.explain and report.profile_aspects:
            lines.append(
                "Your profile for this category: " + ", ".join(t for t, _ in report.profile_aspects)
            )
        if args.explain:
            lines.extend(report.notes)
        return "\n".join(lines)

    emit(args, report.as_json(), text)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from visuallens_app.lens.aspects import caption_photos
    from visuallens_app.vlm.captions import VlmCaptioner

    captioner = VlmCaptioner(load_vlm(args, "captions"))
    with open_store(args) as store:
        count = run_job(caption_photos(store, captioner), show=not args.json)
    emit(args, {"captioned": count}, lambda: f"Captioned {count} photo(s).")
    return 0


def cmd_catalog_validate(args: argparse.Namespace) -> int:
    from visuallens_app.errors import CatalogError
    from visuallens_app.lens.catalog import load_catalog

    try:
        loaded = load_catalog(args.dir)
    except CatalogError as err:
        message = str(err)
        emit(args, {"ok": False, "items": 0, "problems": [message]}, lambda: message)
        return 1
    problems = [str(p) for p in loaded.problems]
    n = len(loaded.catalog.items)

    def text() -> str:
        summary = f"{n} item(s) in {len(loaded.catalog.categories())} categories"
        return "\n".join([*problems, f"{summary}, {len(problems)} problem(s)."])

    emit(args, {"ok": not problems, "items": n, "problems": problems}, text)
    return 1 if problems else 0


def cmd_catalog_list(args: argparse.Namespace) -> int:
    from collections import Counter

    catalog = _catalog(args.catalog)
    counts = Counter(item.category for item in catalog.items)
    rows = [{"category": c, "items": counts[c]} for c in sorted(counts)]

    def text() -> str:
        width = max((len(c) for c in counts), default=0)
        return "\n".join(f"{r['category']:<{width}}  {r['items']}" for r in rows)

    emit(args, rows, text)
    return 0


def cmd_aspects(args: argparse.Namespace) -> int:
    from visuallens_app.errors import LibraryError, VisualLensError
    from visuallens_app.lens.aspects import aspects_for_photo
    from visuallens_app.lens.pipeline import default_vocabulary

    if not args.photo.is_file():
        raise LibraryError(f"{args.photo} is not a file.")
    vocabulary = default_vocabulary()
    if vocabulary is None:
        raise VisualLensError("The aspect vocabulary (resources/aspects.txt) is missing.")
    encoder = load_encoder(args, quiet=args.json)
    with open_store(args) as store:
        aspects = aspects_for_photo(args.photo, encoder, vocabulary, store=store, k=args.k)
    caption = None
    if args.caption or args.captioner:
        from visuallens_app.library.decode import DecodeError, decode_photo
        from visuallens_app.vlm.captions import VlmCaptioner

        source = str(args.captioner) if args.captioner else None
        captioner = VlmCaptioner(load_vlm(args, "captions", source=source))
        try:
            image = decode_photo(args.photo, target=384).image
        except DecodeError as err:
            raise LibraryError(f"Cannot read {args.photo}: {err}.") from err
        caption = captioner.caption([image])[0]
    data: dict[str, object] = {"aspects": [{"term": t, "score": round(s, 4)} for t, s in aspects]}
    if caption is not None:
        data["caption"] = caption

    def text() -> str:
        lines = [f"{s:+6.2f}  {t}" for t, s in aspects]
        return "\n".join(([f"caption: {caption}"] if caption else []) + lines)

    emit(args, data, text)
    return 0
