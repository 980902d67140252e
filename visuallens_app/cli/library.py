"""Library commands: index, search, similar, status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visuallens_app.cli.common import (
    CancelToken,
    add_common,
    emit,
    interrupt_cancels,
    library_dir,
    load_encoder,
    open_store,
    run_job,
)
from visuallens_app.library.paths import display_path, normalise_root


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "index",
        help="index photo folders (incremental; safe to interrupt and re-run)",
        description=(
            "Scan folders for photos (JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC), embed the new and "
            "changed ones and store them in the library. Unchanged photos are not read again; "
            "deleted ones leave the library; a folder that is missing as a whole (an unmounted "
            "drive) keeps its photos, marked offline. Ctrl-C stops after the photos being "
            "encoded and keeps every photo encoded so far."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photo folders")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help=(
            "decode and embed on a Ray cluster (the scale extra): ADDRESS of a running one "
            "(ray://HOST:10001, HOST:6379 or auto), or none to start one on this machine; "
            "the photos must be readable at the same paths on every worker"
        ),
    )
    add_common(p)
    _add_vector_store(p)
    p.set_defaults(handler=cmd_index)

    p = subparsers.add_parser(
        "search",
        help="find photos by a text description",
        description=(
            "Find the indexed photos that best match a text: the matches best first, then, "
            'below a "weaker matches" line, the closest of the rest ("match" in --json).'
        ),
    )
    p.add_argument("text", help='what to look for, e.g. "a cup of coffee"')
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    add_common(p)
    _add_vector_store(p)
    p.set_defaults(handler=cmd_search)

    p = subparsers.add_parser(
        "similar",
        help="find photos that look like a given photo",
        description=(
            "Find the indexed photos most similar to IMAGE (indexed or not): the similar ones "
            'best first, then, below a "weaker matches" line, the closest of the rest.'
        ),
    )
    p.add_argument("image", type=Path, help="a photo file")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    add_common(p)
    _add_vector_store(p)
    p.set_defaults(handler=cmd_similar)

    p = subparsers.add_parser(
        "status",
        help="what the library holds",
        description="Photo counts by state, encoders and index sizes, and the library location.",
    )
    add_common(p, encoder=False)
    p.set_defaults(handler=cmd_status)


def _add_vector_store(parser: argparse.ArgumentParser) -> None:
    from visuallens_app.index.stores import SPEC_HELP

    parser.add_argument(
        "--vector-store",
        default=None,
        metavar="faiss|URL",
        help=f"where vectors are searched: {SPEC_HELP}; default: settings",
    )


def vector_store_spec(args: argparse.Namespace) -> str:
    """``--vector-store``, else the settings' choice; a value that is no store is one sentence."""
    from visuallens_app.errors import VisualLensError
    from visuallens_app.index.stores import check_spec
    from visuallens_app.settings import Settings

    spec = getattr(args, "vector_store", None) or Settings.load().vector_store
    problem = check_spec(spec)
    if problem is not None:
        raise VisualLensError(f"--vector-store: {problem}.")
    spec = str(spec).strip()
    if spec != "faiss":
        import importlib.util

        if importlib.util.find_spec("qdrant_client") is None:  # said before any model loads
            raise VisualLensError(
                f"The vector store {spec} is a Qdrant store, which needs the scale extra: "
                "pip install 'visuallens-studio[scale]'."
            )
    return spec


def cmd_index(args: argparse.Namespace) -> int:
    from visuallens_app.errors import LibraryError, SettingsError
    from visuallens_app.library.indexer import check_roots, index_folders
    from visuallens_app.library.search import PhotoSearch
    from visuallens_app.settings import Settings

    spec = vector_store_spec(args)
    with open_store(args) as store:  # a mistyped folder is refused before the model loads
        check_roots(store, args.paths)
    encoder = load_encoder(args)
    cancel = CancelToken()
    stopping = "stopping after the photos being encoded; they are kept"
    store_note = None
    with open_store(args) as store, interrupt_cancels(cancel, stopping):
        embed = None
        if args.ray is not None:
            from visuallens_app.library.ray_indexer import RayEmbedder

            settings = Settings.load()
            embed = RayEmbedder(
                address=args.ray or None,
                encoder_name=getattr(args, "encoder", None) or settings.encoder,
                device=getattr(args, "device", None) or settings.device,
                encoder_id=encoder.id,
                input_size=encoder.input_size,
                thumbnails=store.thumbnails,
            )
        job = index_folders(store, encoder, args.paths, cancel=cancel, embed=embed)
        report = run_job(job, show=not args.json)
        if not report.cancelled and store.encoder_dim(encoder.id) is not None:
            # Build the search index now, so the first search is instant.
            try:
                PhotoSearch(store, encoder, vector_store=spec).index()
            except LibraryError as err:  # store unreachable or refused: the photos are indexed
                store_note = str(err)
                print(f"visuallens: {err}", file=sys.stderr)
        roots = [normalise_root(p) for p in args.paths]
        empty = [r for r in roots if display_path(r) in report.empty_roots]
        for root in empty:  # a folder with no photo is not one of the library's folders
            store.remove_root(root)
    # The settings' folder list is the one the app follows for its own library; indexing into
    # another library (--library or VISUALLENS_LIBRARY) leaves it alone.
    settings = Settings.load()
    new_roots = [str(r) for r in roots if str(r) not in settings.photo_folders and r not in empty]
    if new_roots and settings.is_apps_library(library_dir(args)):
        settings.photo_folders.extend(new_roots)
        try:
            settings.save()
        except SettingsError as err:  # the photos are indexed; only remembering the folder failed
            print(f"visuallens: {err}", file=sys.stderr)

    def text() -> str:
        lines = [
            f"Indexed {report.indexed}, unchanged {report.unchanged}, removed {report.removed}"
            f" (encoder {report.encoder}).",
        ]
        for root in report.empty_roots:
            lines.append(
                f"No photos found in {root} (nor in its subfolders): nothing to index there, "
                "and it was not added to the library. Photos are JPEG, PNG, WebP, TIFF, BMP, "
                "GIF or HEIC files."
            )
        if report.reused_vectors:
            n = report.reused_vectors
            kept = "its vector" if n == 1 else "their vectors"
            lines.append(f"{_count(n, 'moved or duplicate photo')} kept {kept}.")
        for root in report.offline_roots:
            lines.append(f"Folder not reachable, its photos are kept and marked offline: {root}")
        if report.not_files == 1:
            lines.append(
                "Skipped 1 item named like a photo that is not a file (a named pipe, device or "
                "socket)."
            )
        elif report.not_files:
            lines.append(
                f"Skipped {report.not_files} items named like photos that are not files (named "
                "pipes, devices, sockets)."
            )
        if report.notes:
            n = len(report.notes)
            lines.append(f"{n} photo{'s were' if n > 1 else ' was'} indexed with a note:")
            lines.extend(f"  {path}: {note}" for path, note in report.notes)
        if report.failed:
            lines.append(f"{_count(len(report.failed), 'file')} could not be read:")
            lines.extend(f"  {path}: {reason}" for path, reason in report.failed)
        if report.cancelled:
            lines.append(
                f"Cancelled: the {_count(report.indexed, 'photo')} indexed before that "
                f"{'are' if report.indexed != 1 else 'is'} kept; run the same command again "
                "to index the rest."
            )
        return "\n".join(lines)

    emit(args, {**report.as_json(), "vector_store_unavailable": store_note}, text)
    return 130 if report.cancelled else 0


def _count(n: int, noun: str) -> str:
    """'1 photo', '2 photos'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _print_hits(args: argparse.Namespace, hits: list[Any], store: Any) -> int:
    def text() -> str:
        if not hits:
            return "No results."
        lines = [] if any(h.match for h in hits) else ["No photo matches well; the closest:"]
        for number, hit in enumerate(hits):
            if not hit.match and number and hits[number - 1].match:
                lines.append("-- weaker matches --")
            offline = "  (offline)" if hit.photo.offline else ""
            lines.append(f"{hit.score:6.3f}  {hit.as_json()['path']}{offline}")
        return "\n".join(lines)

    rows: list[dict[str, object]] = []
    if args.json:  # scripts get each result's thumbnail, rebuilt here if it was deleted
        for hit in hits:
            thumbnail = store.thumbnails.ensure(hit.photo.content_hash, hit.photo.path)
            rows.append({**hit.as_json(), "thumbnail": str(thumbnail) if thumbnail else None})
    emit(args, rows, text)
    return 0


def _check_k(args: argparse.Namespace) -> None:
    from visuallens_app.errors import VisualLensError

    if args.k is not None and args.k < 1:
        raise VisualLensError(f"-k must be at least 1 (it is {args.k}).")


def cmd_search(args: argparse.Namespace) -> int:
    from visuallens_app.errors import VisualLensError
    from visuallens_app.library.search import PhotoSearch

    if not args.text.strip():
        raise VisualLensError('Give a text to search for, e.g. visuallens search "a red bicycle".')
    _check_k(args)
    spec = vector_store_spec(args)
    encoder = load_encoder(args, quiet=args.json)
    with open_store(args) as store:
        hits = PhotoSearch(store, encoder, vector_store=spec).text(args.text, k=args.k)
        return _print_hits(args, hits, store)


def cmd_similar(args: argparse.Namespace) -> int:
    from visuallens_app.errors import LibraryError
    from visuallens_app.library.search import PhotoSearch

    if args.image.is_dir():
        raise LibraryError(f"{args.image} is a folder; give one photo to find similar ones.")
    if not args.image.exists():
        raise LibraryError(f"{args.image} does not exist: check the file name.")
    if not args.image.is_file():
        raise LibraryError(f"{args.image} is not a file.")
    _check_k(args)
    spec = vector_store_spec(args)
    encoder = load_encoder(args, quiet=args.json)
    with open_store(args) as store:
        hits = PhotoSearch(store, encoder, vector_store=spec).similar(
            normalise_root(args.image), k=args.k
        )
        return _print_hits(args, hits, store)


def cmd_status(args: argparse.Namespace) -> int:
    from visuallens_app.index import VectorIndex
    from visuallens_app.index.stores import describe
    from visuallens_app.library.search import index_name
    from visuallens_app.settings import Settings

    with open_store(args) as store:
        counts = store.counts()
        encoders = store.encoders()
        store_roots = [display_path(r) for r in store.roots()]
        indexes = {}
        current = {}
        for encoder_id in encoders:
            manifest = VectorIndex.manifest(store.index_dir, index_name(encoder_id))
            indexes[encoder_id] = manifest
            # The manifest says what the file claims; the store says what is true. The index is
            # current only when it was built from the store as it is now.
            current[encoder_id] = bool(
                manifest and manifest.get("fingerprint") == store.fingerprint(encoder_id)
            )
        data = {
            "library": display_path(library_dir(args)),
            "photos": counts,
            "roots": store_roots,
            "encoders": encoders,
            "indexes": indexes,
            "index_current": current,
            "vector_store": Settings.load().vector_store,
        }

    def text() -> str:
        lines = [
            f"Library: {data['library']}",
            f"Photos: {counts['ok']} available, {counts['offline']} offline, "
            f"{counts['failed']} unreadable",
        ]
        lines += [f"Folder: {r}" for r in store_roots]
        if data["vector_store"] != "faiss":
            lines.append(f"Vector store: {describe(str(data['vector_store']))}")
        for encoder_id, n in encoders.items():
            manifest = indexes.get(encoder_id)
            if not manifest:
                state = "no index file yet (built on the next search)"
            elif current[encoder_id]:
                state = f"{manifest['kind']} search index, current"
            else:
                state = "the saved search index is out of date (rebuilt on the next search)"
            lines.append(f"Encoder {encoder_id}: {_count(n, 'photo')}, {state}")
        return "\n".join(lines)

    emit(args, data, text)
    return 0
