"""The layer x alpha sweep with the paper's protocol, cached per example so it resumes, and plotted.

Protocol (``shared/specs/steering.md``): shuffle the questions with seed 42, hold out the last 150
(30% when the set has fewer than 300, so the grid search keeps most of a small set), grid-search
layer x alpha on the rest, keep the cell with the best gain over unsteered (ties: the smaller
alpha, then the lower layer), and report held-out accuracy unsteered, steered with that cell and
with the prompting baseline, with paired bootstrap confidence intervals of the differences.

Cost: every question is prepared once (:func:`visuallens_app.steering.apply.prepare`: processor,
vision tower and embeddings run once) and each cell re-runs only the language model on the
recorded inputs. Every answer is written to ``cells.sqlite`` in the output folder as soon as its
question is done, keyed by the question, the kind (unsteered, prompting, steered) and the cell; a
cancelled sweep started again with the same inputs skips what is there and ends with the same
table. Inputs that differ (another benchmark, vector, model or mask) start the cache afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.jobs import CancelToken, Partial, Progress, StreamingJob
from visuallens_app.steering import SteeringError
from visuallens_app.steering.bench import BenchItem, concept_prompt, open_photo
from visuallens_app.steering.vectors import SteeringVector

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

SEED, HOLDOUT, SMALL_FRACTION = 42, 150, 0.3
BOOTSTRAP_RESAMPLES = 1000

Cell = tuple[int, float]


# -- the protocol (pure) ---------------------------------------------------------------------------


def split(n: int, *, seed: int = SEED, holdout: int = HOLDOUT) -> tuple[list[int], list[int]]:
    """(grid-search indices, held-out indices) of ``n`` questions (module doc)."""
    if n < 2:
        raise SteeringError(f"A sweep needs at least 2 questions; the benchmark has {n}.")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    size = holdout if n >= 2 * holdout else max(1, round(n * SMALL_FRACTION))
    return order[:-size], order[-size:]


def best_cell(accuracy: dict[Cell, float], unsteered: float) -> tuple[Cell, float]:
    """The cell of the highest gain over ``unsteered``; ties: the smaller alpha, then layer."""
    if not accuracy:
        raise SteeringError("The sweep has no cells: give at least one layer and one alpha.")
    cell = min(accuracy, key=lambda c: (-round(accuracy[c] - unsteered, 12), abs(c[1]), c[0]))
    return cell, accuracy[cell] - unsteered


def bootstrap_difference(
    a: NDArray[np.bool_], b: NDArray[np.bool_], *, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict[str, float]:
    """Accuracy of ``a`` minus ``b`` (paired, same questions) and its 95% bootstrap interval."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    diff = float(x.mean() - y.mean()) if len(x) else 0.0
    if len(x) == 0:
        return {"difference": 0.0, "low": 0.0, "high": 0.0}
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(x), size=(resamples, len(x)))
    samples = x[picks].mean(axis=1) - y[picks].mean(axis=1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": diff, "low": float(low), "high": float(high)}


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepCell(Partial):
    """A partial result: one cell's grid-search accuracy over the questions answered so far."""

    layer: int
    alpha: float
    correct: int
    answered: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else 0.0

    @property
    def finished(self) -> bool:
        return self.answered >= self.total


@dataclass(frozen=True)
class SweepResult:
    """The grid, the chosen cell and the held-out report (``to_json`` is ``sweep.json``)."""

    layers: list[int]
    alphas: list[float]
    accuracy: dict[Cell, float]  # grid-search accuracy per cell
    unsteered: float  # grid-search accuracy without steering
    prompting: float
    best: Cell
    gain: float
    grid_size: int
    heldout: dict[str, Any]

    def table(self) -> list[list[float]]:
        """Accuracy rows by layer, columns by alpha."""
        return [[self.accuracy[(layer, alpha)] for alpha in self.alphas] for layer in self.layers]

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "alphas": self.alphas,
            "grid": {
                "questions": self.grid_size,
                "unsteered": self.unsteered,
                "prompting": self.prompting,
                "accuracy": self.table(),
            },
            "best": {"layer": self.best[0], "alpha": self.best[1], "gain": self.gain},
            "heldout": self.heldout,
        }


# -- the cache -------------------------------------------------------------------------------------


class SweepCache:
    """Answers already computed, in SQLite; ``key`` names the inputs they belong to."""

    def __init__(self, path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS answers (question INTEGER, kind TEXT, layer INTEGER, "
            "alpha TEXT, predicted INTEGER, PRIMARY KEY (question, kind, layer, alpha))"
        )
        row = self.db.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
        with self.db:
            if row is None or row[0] != key:
                self.db.execute("DELETE FROM answers")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('key', ?)", (key,))

    def load(self) -> dict[tuple[int, str, int, str], int]:
        rows = self.db.execute("SELECT question, kind, layer, alpha, predicted FROM answers")
        return {(q, k, layer, a): p for q, k, layer, a, p in rows}

    def write(self, rows: list[tuple[int, str, int, str, int]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


def sweep_key(
    vlm: VisionLanguageModel, items: Sequence[BenchItem], vector: SteeringVector, mask: str
) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(vlm.fingerprint.encode())
    digest.update(mask.encode())
    for layer in vector.layers:
        digest.update(np.ascontiguousarray(vector.at(layer), np.float32).tobytes())
    for item in items:
        digest.update(repr((str(item.image), item.question, item.choices, item.answer)).encode())
    return digest.hexdigest()


def _alpha_key(alpha: float) -> str:
    return repr(float(alpha))


# -- running ---------------------------------------------------------------------------------------


def run_sweep(
    vlm: VisionLanguageModel,
    items: Sequence[BenchItem],
    vector: SteeringVector,
    layers: Sequence[int],
    alphas: Sequence[float],
    *,
    out_dir: str | Path,
    mask: str = "image",
    instruction: str | None = None,
    holdout: int = HOLDOUT,
    cancel: CancelToken | None = None,
) -> StreamingJob[SweepResult]:
    """Sweep ``layers`` x ``alphas`` on ``items`` (a job; unit: questions; module doc).

    Writes ``cells.sqlite``, ``sweep.json`` and ``heatmap.png`` into ``out_dir``.
    """
    from visuallens_app.steering.apply import prepare, steerings
    from visuallens_app.vlm.scoring import option_token_ids

    token = cancel or CancelToken()
    vector.fits(vlm)
    for layer in layers:
        vector.at(layer)
    cells: list[Cell] = [(int(layer), float(alpha)) for layer in layers for alpha in alphas]
    if not cells:
        raise SteeringError("The sweep has no cells: give at least one layer and one alpha.")
    prompt_text = instruction if instruction is not None else concept_prompt(vector.concept)
    folder = Path(out_dir).expanduser()
    cache = SweepCache(folder / "cells.sqlite", sweep_key(vlm, items, vector, mask))
    grid, heldout = split(len(items), holdout=holdout)
    total = len(grid) + len(heldout)
    try:
        known = cache.load()

        def predict(prepared: Any, ids: list[int], steering: Any = ()) -> int:
            return int(np.argmax(prepared.probabilities(ids, steering)))

        def missing(question: int, kind: str, cell: Cell = (-1, 0.0)) -> bool:
            return (question, kind, cell[0], _alpha_key(cell[1])) not in known

        def answer_question(question: int, wanted: list[tuple[str, Cell]]) -> None:
            item = items[question]
            image = open_photo(item.image, line=item.line)
            ids = option_token_ids(vlm, item.letters)
            rows: list[tuple[int, str, int, str, int]] = []
            todo = [(kind, cell) for kind, cell in wanted if missing(question, kind, cell)]
            if any(kind != "prompting" for kind, _ in todo):
                prepared = prepare(vlm, image, item.prompt())
                for kind, cell in todo:
                    if kind == "unsteered":
                        rows.append((question, kind, -1, _alpha_key(0.0), predict(prepared, ids)))
                    elif kind == "steered":
                        steering = steerings(vector, [cell[0]], cell[1], prepared.mask(mask))
                        predicted = predict(prepared, ids, steering)
                        rows.append((question, kind, cell[0], _alpha_key(cell[1]), predicted))
            if any(kind == "prompting" for kind, _ in todo):
                prompted = prepare(vlm, image, item.prompt(prompt_text))
                rows.append((question, "prompting", -1, _alpha_key(0.0), predict(prompted, ids)))
            cache.write(rows)
            known.update({row[:4]: row[4] for row in rows})

        def correct(question: int, kind: str, cell: Cell = (-1, 0.0)) -> bool:
            key = (question, kind, cell[0], _alpha_key(cell[1]))
            return known[key] == items[question].answer

        done = 0
        baseline: list[tuple[str, Cell]] = [("unsteered", (-1, 0.0)), ("prompting", (-1, 0.0))]
        wanted = baseline + [("steered", cell) for cell in cells]
        yield Progress(0, total, "Grid search", stage="grid", unit="questions")
        answered: list[int] = []
        for question in grid:
            token.check()
            answer_question(question, wanted)
            answered.append(question)
            done += 1
            for layer, alpha in cells:
                hits = sum(correct(q, "steered", (layer, alpha)) for q in answered)
                yield SweepCell(layer, alpha, hits, len(answered), len(grid))
            yield Progress(done, total, "Grid search", stage="grid", unit="questions")
        accuracy = {c: float(np.mean([correct(q, "steered", c) for q in grid])) for c in cells}
        unsteered = float(np.mean([correct(q, "unsteered") for q in grid]))
        prompting = float(np.mean([correct(q, "prompting") for q in grid]))
        best, gain = best_cell(accuracy, unsteered)
        for question in heldout:
            token.check()
            answer_question(question, [*baseline, ("steered", best)])
            done += 1
            yield Progress(done, total, "Held-out questions", stage="held-out", unit="questions")
    finally:
        cache.close()
    plain = np.array([correct(q, "unsteered") for q in heldout])
    steered = np.array([correct(q, "steered", best) for q in heldout])
    prompted = np.array([correct(q, "prompting") for q in heldout])
    report = {
        "questions": len(heldout),
        "unsteered": float(plain.mean()),
        "steered": float(steered.mean()),
        "prompting": float(prompted.mean()),
        "steered_vs_unsteered": bootstrap_difference(steered, plain),
        "steered_vs_prompting": bootstrap_difference(steered, prompted),
    }
    result = SweepResult(
        [int(v) for v in layers],
        [float(a) for a in alphas],
        accuracy,
        unsteered,
        prompting,
        best,
        gain,
        len(grid),
        report,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    heatmap(result).save(folder / "heatmap.png")
    return result


def parse_alphas(spec: str) -> list[float]:
    """Alphas from ``"0.1,0.5,1"`` or a range ``"0.1:1.0:0.3"`` (start:stop:step, stop included)."""
    try:
        if ":" in spec:
            start, stop, step = (float(v) for v in spec.split(":"))
            if step <= 0:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            return [round(start + i * step, 10) for i in range(max(0, count))]
        values = [float(v) for v in spec.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise SteeringError(
            f"Cannot read the alphas {spec!r}; write them like 0.1,0.5,1 or 0.1:1.0:0.3."
        ) from err
    if not values:
        raise SteeringError("Give at least one alpha, e.g. --alphas 0.1,0.5,1.")
    return values


# -- the heatmap -----------------------------------------------------------------------------------


def _colour(gain: float, scale: float) -> tuple[int, int, int]:
    """White at no gain, blue for gains, red for losses (a diverging scale)."""
    t = max(-1.0, min(1.0, gain / scale))
    if t >= 0:
        return (round(255 - 200 * t), round(255 - 120 * t), 255)
    return (255, round(255 + 170 * t), round(255 + 170 * t))


def heatmap(result: SweepResult, *, cell_px: int = 72) -> Image.Image:
    """The grid as a PNG-ready image: accuracy per cell, coloured by its gain; the best outlined.

    Drawn with Pillow, not matplotlib, to keep the install small; the panel draws its live one.
    """
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    rows, cols = len(result.layers), len(result.alphas)
    left, top, bottom = 70, 40, 40
    width, height = left + cols * cell_px + 10, top + rows * cell_px + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    gains = [result.accuracy[c] - result.unsteered for c in result.accuracy]
    scale = max(0.01, *(abs(g) for g in gains))
    title = f"accuracy (unsteered {result.unsteered:.3f}); blue: gain"
    draw.text((8, 8), title, fill="black", font=font)
    for r, layer in enumerate(result.layers):
        y = top + r * cell_px
        draw.text((8, y + cell_px // 2 - 6), f"layer {layer}", fill="black", font=font)
        for c, alpha in enumerate(result.alphas):
            x = left + c * cell_px
            value = result.accuracy[(layer, alpha)]
            box = (x, y, x + cell_px - 2, y + cell_px - 2)
            draw.rectangle(box, fill=_colour(value - result.unsteered, scale))
            if (layer, alpha) == result.best:
                draw.rectangle(box, outline="black", width=3)
            draw.text((x + 12, y + cell_px // 2 - 6), f"{value:.3f}", fill="black", font=font)
    for c, alpha in enumerate(result.alphas):
        x = left + c * cell_px
        draw.text((x + 12, top + rows * cell_px + 8), f"a={alpha:g}", fill="black", font=font)
    return image


__all__ = [
    "SweepCache",
    "SweepCell",
    "SweepResult",
    "best_cell",
    "bootstrap_difference",
    "heatmap",
    "parse_alphas",
    "run_sweep",
    "split",
]
