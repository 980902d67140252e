"""Where photo evidence stops meaning anything: related vs unrelated photo/item pairs, measured.

Run: ``.venv/bin/python -m benchmarks.evidence_floor [--encoder embedded]``. Prints the two
score distributions and the floor they give, and writes ``benchmarks/results/evidence_floor.json``.

Pairs. Every scikit-image sample photo that shows a thing (cat, coffee, astronaut, rocket,
motorcycle, camera man, deep field, moon, coins, clock; and the generic hubs: cell, retina,
phantom, immunohistochemistry) against every item of the shipped catalog (456 items, 14
categories). A pair is *related* when the item's name, description or tags name what the photo
shows (the keywords below, whole words), *unrelated* otherwise. The labels are keyword-based, so
both sides hold a little noise (an item may relate without naming it); the floor is set where
unrelated pairs stop and only the clearly related remain, not at the noisy edge.

Scores, as the lens computes evidence for one question (the category's candidates):

- ``cosine``: the photo's cosine to the item (its image vector where it has images, else text);
- ``centred``: that cosine minus the photo's cosine to the category's mean item, which is what
  :func:`visuallens_app.lens.explain.photo_support` ranks evidence by.

The floor is the smallest ``cosine`` that at most ``--false-share`` (default 0.5%) of unrelated
pairs reach: above it a photo *relates* to the item, below it the item's card says that nothing
in the user's photos relates to it. It is a property of the encoder's space, so rerun this after
any change to an encoder (a new encoder id) and update its ``evidence_floor``
(models/embedded.py).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "evidence_floor.json"

#: Sample photo -> words an item must name to count as related to it.
RELATED: dict[str, tuple[str, ...]] = {
    "chelsea": ("cat", "cats", "kitten", "kittens", "feline"),
    "coffee": ("coffee", "espresso", "latte", "cappuccino", "cafe", "café", "barista"),
    "astronaut": ("astronaut", "astronauts", "space", "spaceflight", "nasa", "rocket"),
    "rocket": ("rocket", "rockets", "space", "spaceflight", "launch", "nasa", "aerospace"),
    "motorcycle_left": ("motorcycle", "motorcycles", "motorbike", "biker", "bikers"),
    "camera": ("camera", "cameras", "photography", "photographer", "photographers"),
    "hubble_deep_field": ("galaxy", "galaxies", "astronomy", "planetarium", "telescope"),
    "moon": ("moon", "lunar", "astronomy", "planetarium"),
    "coins": ("coin", "coins", "numismatic", "numismatics"),
    "clock_motion": ("clock", "clocks", "watchmaking", "horology"),
    "cell": ("microscope", "microscopy", "biology", "cell", "cells"),
    "retina": ("eye", "eyes", "retina", "anatomy", "medical", "medicine"),
    "phantom": ("anatomy", "medical", "medicine", "x-ray", "radiology"),
    "ihc": ("microscope", "microscopy", "biology", "tissue", "pathology"),
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-zé0-9]+(?:-[a-z0-9]+)*", text.casefold()))


def measure(encoder_name: str, false_share: float) -> dict[str, object]:
    from benchmarks.samples import sample_photo
    from visuallens_app.lens.catalog import load_default_catalog
    from visuallens_app.lens.matching import embed_items, item_text
    from visuallens_app.models.registry import load_encoder

    encoder = load_encoder(encoder_name, device="cpu").encoder
    items = load_default_catalog().items
    vectors = embed_items(items, encoder)
    view = vectors.view()
    names = list(RELATED)
    photos = encoder.encode_images([sample_photo(n) for n in names])
    cosine = photos @ view.T  # (photos, items)
    categories = sorted({it.category for it in items})
    centred = np.empty_like(cosine)
    for category in categories:
        cols = np.array([i for i, it in enumerate(items) if it.category == category])
        mean = view[cols].mean(axis=0)
        centred[:, cols] = cosine[:, cols] - (photos @ mean)[:, None]
    words = [_words(item_text(it)) for it in items]
    related = np.array(
        [[bool(words[i] & set(RELATED[n])) for i in range(len(items))] for n in names]
    )

    def summary(values: np.ndarray) -> dict[str, float]:
        q = np.quantile(values, [0.5, 0.9, 0.95, 0.99])
        return {
            "n": int(values.size),
            "median": round(float(q[0]), 4),
            "p90": round(float(q[1]), 4),
            "p95": round(float(q[2]), 4),
            "p99": round(float(q[3]), 4),
            "max": round(float(values.max()), 4),
        }

    out: dict[str, object] = {"encoder": encoder.id, "false_share": false_share}
    # Per photo, standardised over the whole catalog: how unusual this item is *for this
    # photo*, which discounts hubs (photos close to everything).
    zscore = (cosine - cosine.mean(axis=1, keepdims=True)) / cosine.std(axis=1, keepdims=True)
    # The same, standardised over the aspect vocabulary instead (a null set every encoder
    # already embeds for the lens, whatever the catalog).
    from visuallens_app.lens.history import encode_texts_cached
    from visuallens_app.lens.vocabulary import AspectVocabulary

    terms = photos @ encode_texts_cached(encoder, AspectVocabulary.load().terms).T
    vocab_z = (cosine - terms.mean(axis=1, keepdims=True)) / terms.std(axis=1, keepdims=True)
    scored = (("cosine", cosine), ("centred", centred), ("z", zscore), ("vocab_z", vocab_z))
    for label, scores in scored:
        pos, neg = scores[related], scores[~related]
        floor = float(np.quantile(neg, 1.0 - false_share))
        # AUC: the chance a related pair outscores an unrelated one.
        auc = float((pos[:, None] > neg[None, :]).mean())
        out[label] = {
            "floors": {
                f"{share:g}": [
                    round(float(np.quantile(neg, 1.0 - share)), 3),
                    round(float((pos > np.quantile(neg, 1.0 - share)).mean()), 3),
                ]
                for share in (0.002, 0.005, 0.01, 0.02, 0.05)
            },
            "related": summary(pos),
            "unrelated": summary(neg),
            "floor": round(floor, 4),
            "related_above_floor": round(float((pos > floor).mean()), 3),
            "auc": round(auc, 3),
        }
    per_photo = {}
    for row, name in enumerate(names):
        pos = cosine[row][related[row]]
        per_photo[name] = {
            "related_items": int(related[row].sum()),
            "best_related": round(float(pos.max()), 4) if pos.size else None,
            "best_unrelated": round(float(cosine[row][~related[row]].max()), 4),
        }
    out["per_photo"] = per_photo
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="embedded")
    parser.add_argument("--false-share", type=float, default=0.005)
    args = parser.parse_args()
    result = measure(args.encoder, args.false_share)
    for label in ("cosine", "centred", "z", "vocab_z"):
        r = result[label]
        assert isinstance(r, dict)
        print(
            f"{label:8s} related {r['related']}\n{'':8s} unrelated {r['unrelated']}\n"
            f"{'':8s} floor (unrelated p{100 * (1 - args.false_share):g}) {r['floor']}: "
            f"{100 * r['related_above_floor']:.0f}% of related pairs above it; AUC {r['auc']}\n"
            f"{'':8s} floor and share of related above it, by share of unrelated above it: "
            f"{r['floors']}"
        )
    print(json.dumps(result["per_photo"], indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
