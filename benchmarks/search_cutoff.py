"""Where the matches of a search end: the calibrated cut-off, measured on the sample photos.

Run: ``.venv/bin/python -m benchmarks.search_cutoff [--encoder embedded]``. Prints, per query,
what is above the line, and the score distributions of matching and non-matching pairs; writes
``benchmarks/results/search_cutoff.json``.

Library: 23 scikit-image samples (the photos, and the generic images that float to the top of
unrelated queries: cell, retina, phantom, textures, a page of text...) plus, for ``similar``, a
mirrored half-size copy of five of them. Text queries: 12 with a known answer among the photos
and 8 about nothing in the library. Photo queries (``similar``): the five originals, whose
only real match is their copy. A query's hits are labelled *match* by
:func:`visuallens_app.library.search.standout` (the query's cosine to a photo against that
photo's cosines to a null set, in standard deviations) at ``TEXT_MATCH_Z`` / ``IMAGE_MATCH_Z``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import ImageOps

RESULTS = Path(__file__).parent / "results" / "search_cutoff.json"

PHOTOS = (
    "chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera", "hubble_deep_field",
    "moon", "coins", "clock_motion", "cell", "retina", "phantom", "ihc", "brick", "grass",
    "gravel", "page", "text", "horse", "chessboard_RGB", "logo", "color",
)  # fmt: skip
COPIED = ("chelsea", "coffee", "rocket", "motorcycle_left", "coins")
QUERIES: dict[str, tuple[str, ...]] = {
    "a cup of coffee": ("coffee",),
    "a cat": ("chelsea",),
    "an astronaut": ("astronaut",),
    "a rocket on the launch pad": ("rocket",),
    "a motorcycle": ("motorcycle_left",),
    "the moon": ("moon",),
    "a person with a camera": ("camera",),
    "coins": ("coins",),
    "a clock": ("clock_motion",),
    "a page of text": ("page", "text"),
    "a horse": ("horse",),
    "stars in the night sky": ("hubble_deep_field",),
    "a bowl of ramen": (),
    "a sailing boat": (),
    "a wedding cake": (),
    "a tennis match": (),
    "a birthday party": (),
    "a mountain lake": (),
    "a red sports car": (),
    "a dog on the beach": (),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="embedded")
    parser.add_argument("--z", type=float, help="try another cut-off (both kinds of query)")
    args = parser.parse_args()
    if args.z is not None:
        from visuallens_app.library import search as search_module

        search_module.TEXT_MATCH_Z = search_module.IMAGE_MATCH_Z = args.z

    from benchmarks.samples import sample_photo
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.search import PhotoSearch
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.registry import load_encoder

    encoder = load_encoder(args.encoder, device="cpu").encoder
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        (folder / "copies").mkdir(parents=True)
        for name in PHOTOS:
            image = sample_photo(name)
            image.save(folder / f"{name}.jpg", quality=90)
            if name in COPIED:
                small = image.resize((image.width // 2, image.height // 2))
                ImageOps.mirror(small).save(folder / "copies" / f"{name}.jpg", quality=75)
        with PhotoStore(Path(tmp) / "library") as store:
            run_to_end(index_folders(store, encoder, [folder]))
            search = PhotoSearch(store, encoder)
            total = len(PHOTOS) + len(COPIED)
            for query, wanted in QUERIES.items():
                hits = search.text(query, k=total)
                rows.append(_row("text", query, hits, {f"{w}.jpg" for w in wanted}, copies=False))
            for name in COPIED:
                hits = search.similar(folder / f"{name}.jpg", k=total)
                rows.append(_row("similar", name, hits, {f"{name}.jpg"}, copies=True))

    def counts(kind: str) -> dict[str, int]:
        mine = [r for r in rows if r["kind"] == kind]
        return {
            "queries": len(mine),
            "true_matches": sum(int(r["found"]) for r in mine),  # type: ignore[call-overload]
            "wanted": sum(int(r["wanted"]) for r in mine),  # type: ignore[call-overload]
            "false_matches": sum(int(r["false"]) for r in mine),  # type: ignore[call-overload]
            "pairs": sum(int(r["pairs"]) for r in mine),  # type: ignore[call-overload]
        }

    for row in rows:
        print(f"{row['kind']:8s} {row['query']!s:28s} above the line: {row['above']}")
    summary = {kind: counts(kind) for kind in ("text", "similar")}
    for kind, c in summary.items():
        print(
            f"{kind}: {c['true_matches']} of {c['wanted']} wanted photos above the line, "
            f"{c['false_matches']} of {c['pairs'] - c['wanted']} other photos above it"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"encoder": encoder.id, "z": args.z, "summary": summary, "queries": rows}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


def _row(kind: str, query: str, hits: list, wanted: set[str], *, copies: bool) -> dict[str, object]:
    def name(hit: object) -> str:
        path = Path(hit.photo.path)  # type: ignore[attr-defined]
        return path.name if path.parent.name == "copies" or not copies else f"original {path.name}"

    above = [name(h) for h in hits if h.match]
    return {
        "kind": kind,
        "query": query,
        "above": above,
        "wanted": len(wanted),
        "found": len(set(above) & wanted),
        "false": len(set(above) - wanted),
        "pairs": len(hits),
        "scores": [round(float(np.float32(h.score)), 4) for h in hits[:5]],
    }


if __name__ == "__main__":
    main()
