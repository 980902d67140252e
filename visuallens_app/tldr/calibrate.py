"""Fit the grounding detector's margin -> P(good) calibration on the sample photos.

``python -m visuallens_app.tldr.calibrate [--encoder embedded]`` reads the captions written for
scikit-image's sample photos (``resources/tldr/calibration_captions.json``), lets the perturbation
engine swap their objects (object and small-object categories), labels every token by diff
alignment, scores each judged phrase's margin with the encoder, fits a logistic regression on
(margin, label) and writes the fit with its data into ``resources/tldr/calibration.json``, keyed
by encoder id (other encoders' fits are kept).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from visuallens_app.models.base import Encoder
from visuallens_app.settings import resources_dir
from visuallens_app.tldr.grounding import Calibration, GroundingDetector, calibration_path
from visuallens_app.tldr.labels import LabelledRecord
from visuallens_app.tldr.perturb import perturb

CAPTIONS_FILE = "calibration_captions.json"


def sample_photo(name: str) -> Image.Image:
    """A scikit-image sample photo (offline: the files ship in its wheel)."""
    import skimage

    path = next((Path(skimage.__file__).parent / "data").glob(f"{name}.*"))
    with Image.open(path) as image:
        return image.convert("RGB")


def labelled_set(per_caption: int = 4, seed: int = 0) -> list[tuple[str, LabelledRecord]]:
    """(photo, record): each written caption and its object / small-object perturbations."""
    data = json.loads((resources_dir() / "tldr" / CAPTIONS_FILE).read_text(encoding="utf-8"))
    rng = random.Random(seed)
    out: list[tuple[str, LabelledRecord]] = []
    for photo, captions in data["photos"].items():
        for i, caption in enumerate(captions):
            source = f"{photo}-{i}"
            out.append((photo, LabelledRecord.of_original(caption, source, photo)))
            for category in ("object", "small_object"):
                for p in perturb(caption, category, n=per_caption, rng=rng):
                    record = LabelledRecord.of_edit(caption, p.text, category, source, photo)
                    out.append((photo, record))
    return out


def phrase_samples(
    encoder: Encoder, records: Sequence[tuple[str, LabelledRecord]]
) -> list[dict[str, Any]]:
    """One (margin, label) sample per judged phrase of every record."""
    detector = GroundingDetector(encoder, calibration=Calibration(1.0, 0.0))
    photos: dict[str, Image.Image] = {}
    samples = []
    for photo, record in records:
        image = photos.setdefault(photo, sample_photo(photo))
        _, margins, *_ = detector.margins(image, record.text)
        for m in margins:
            label = min(record.labels[m.phrase.first : m.phrase.last])
            samples.append(
                {
                    "photo": photo,
                    "text": record.text,
                    "phrase": m.phrase.key,
                    "margin": round(m.margin, 5),
                    "label": label,
                }
            )
    return samples


def fit(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Logistic regression of label on margin; slope, intercept and the fit's accuracy."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    x = np.array([[s["margin"]] for s in samples], dtype=float)
    y = np.array([s["label"] for s in samples], dtype=int)
    model = LogisticRegression(C=100.0).fit(x, y)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    accuracy = float(((x[:, 0] * slope + intercept >= 0).astype(int) == y).mean())
    return {
        "slope": round(slope, 4),
        "intercept": round(intercept, 4),
        "samples": len(samples),
        "good": int(y.sum()),
        "bad": int(len(y) - y.sum()),
        "accuracy": round(accuracy, 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visuallens_app.tldr.calibrate")
    parser.add_argument("--encoder", default="embedded", help="encoder name (default embedded)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped file")
    args = parser.parse_args(argv)
    from visuallens_app.models.registry import load_encoder

    encoder = load_encoder(args.encoder, device=args.device).encoder
    records = labelled_set()
    print(f"{len(records)} labelled captions; scoring with {encoder.id}...", file=sys.stderr)
    samples = phrase_samples(encoder, records)
    result = fit(samples)
    out = args.out or calibration_path()
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data["about"] = (
        "Margin -> P(good) fits of the TLDR grounding detector, per encoder id: P(good) = "
        "sigmoid(slope * margin + intercept), margin = score(sentence) - max score(sentence "
        "with the phrase swapped for an alternative). Rebuild: python -m "
        "visuallens_app.tldr.calibrate --encoder NAME."
    )
    data.setdefault("fits", {})[encoder.id] = {
        **result,
        "command": f"python -m visuallens_app.tldr.calibrate --encoder {args.encoder}",
        "data": samples,
    }
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
