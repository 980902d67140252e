"""Annotation mode's storage: photos with captions, token labels toggled, text corrected, timed.

The paper's human annotators corrected captions 3.4x faster with token highlights than with a
binary signal. An :class:`AnnotationStore` keeps what the annotation mode makes, one item per
(photo, caption): the tokens with character offsets, a label per token (1 good, 0 hallucinated,
the paper's convention), the detector's P(good) per token, the corrected text, and the seconds
spent (an :class:`AnnotationTimer` accumulates them per item). It is its own SQLite file,
``<library>/tldr/annotations.sqlite`` by default, with versioned migrations like the library's.
Exports: JSONL with character offsets, labels, per-token scores and seconds, and a Label Studio
import file (text spans labelled ``hallucination``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from visuallens_app._sqlite_utils import Migrations, sqlite_utils
from visuallens_app.errors import VisualLensError
from visuallens_app.library.store import apply_migrations
from visuallens_app.tldr.detector import DEFAULT_THRESHOLD, TokenScores
from visuallens_app.tldr.labels import BAD, GOOD
from visuallens_app.tldr.lexicon import tokenize

ITEMS = "tldr_annotations"
_COLUMNS = "id, image, text, tokens, corrected, detector, seconds, created, updated"
HALLUCINATION = "hallucination"
annotation_migrations = Migrations("visuallens.tldr.annotations")
P = ParamSpec("P")
T = TypeVar("T")


class AnnotationError(VisualLensError):
    """An annotation item or file that cannot be used; the message is one sentence."""


def default_annotations_path(library: Path) -> Path:
    return library / "tldr" / "annotations.sqlite"


@annotation_migrations()
def m001_annotations(db: Any) -> None:
    db[ITEMS].create(
        {
            "id": int,
            "image": str,
            "text": str,  # the original caption
            "tokens": str,  # JSON: [{"text", "start", "end", "label", "p_good", "checked"}]
            "corrected": str,  # NULL until the annotator corrects the text
            "detector": str,
            "seconds": float,
            "created": str,
            "updated": str,
        },
        pk="id",
        not_null={"image", "text", "tokens"},
        defaults={"seconds": 0.0, "detector": ""},
        if_not_exists=True,
    )
    db[ITEMS].create_index(["image"], if_not_exists=True)


@dataclass(frozen=True, slots=True)
class AnnotatedToken:
    """A token of the original text: span, the annotator's label, the detector's P(good)."""

    text: str
    start: int
    end: int
    label: int = GOOD  # 1 good, 0 hallucinated
    p_good: float | None = None
    checked: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "p_good": self.p_good,
            "checked": self.checked,
        }


@dataclass(frozen=True)
class AnnotationItem:
    """One photo and caption being annotated."""

    id: int
    image: str
    text: str
    tokens: tuple[AnnotatedToken, ...]
    corrected: str | None
    detector: str
    seconds: float
    created: str
    updated: str

    @property
    def labels(self) -> list[int]:
        return [t.label for t in self.tokens]

    def bad_spans(self) -> list[tuple[int, int]]:
        """Character spans of the tokens labelled hallucinated, neighbours joined."""
        return _spans(self.text, [t for t in self.tokens if t.label == BAD])

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": self.image,
            "text": self.text,
            "corrected": self.corrected,
            "tokens": [{"text": t.text, "start": t.start, "end": t.end} for t in self.tokens],
            "labels": self.labels,
            "p_good": [t.p_good for t in self.tokens],
            "checked": [t.checked for t in self.tokens],
            "detector": self.detector,
            "seconds": round(self.seconds, 3),
            "updated": self.updated,
        }


def _spans(text: str, tokens: Sequence[AnnotatedToken]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for t in tokens:
        if spans and not text[spans[-1][1] : t.start].strip():
            spans[-1] = (spans[-1][0], t.end)
        else:
            spans.append((t.start, t.end))
    return spans


def tokens_from_scores(
    scores: TokenScores, threshold: float = DEFAULT_THRESHOLD
) -> list[AnnotatedToken]:
    """The detector's tokens as a first guess: flagged ones labelled hallucinated."""
    return [
        AnnotatedToken(
            t.text, t.start, t.end, BAD if t.flagged(threshold) else GOOD, t.p_good, t.checked
        )
        for t in scores.tokens
    ]


def _locked(
    method: Callable[Concatenate[AnnotationStore, P], T],
) -> Callable[Concatenate[AnnotationStore, P], T]:
    def wrapper(self: AnnotationStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AnnotationStore:
    """The annotation items in one SQLite file (created with its folder on first use).

    One connection, usable from any thread (the GUI's workers and its main thread); every
    method holds the store's lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite_utils.Database(
                sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            )
            self._db.execute("PRAGMA busy_timeout = 5000")
            apply_migrations(self._db, annotation_migrations)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err).lower():
                raise
            raise AnnotationError(
                f"{self.path} cannot be opened as an annotation store ({err})."
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    @_locked
    def add(
        self,
        image: str | Path,
        text: str,
        *,
        scores: TokenScores | None = None,
        tokens: Iterable[AnnotatedToken] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        corrected: str | None = None,
        seconds: float = 0.0,
    ) -> AnnotationItem:
        """A new item: tokens given, else the detector's (flagged = hallucinated), else all good."""
        if not text.strip():
            raise AnnotationError("The caption is empty: there is nothing to annotate.")
        if tokens is not None:
            items = list(tokens)
        elif scores is not None:
            if scores.response != text:
                raise AnnotationError("The scores belong to a different text than the caption.")
            items = tokens_from_scores(scores, threshold)
        else:
            items = [AnnotatedToken(t.text, t.start, t.end) for t in tokenize(text)]
        _check_tokens(text, items)
        now = _now()
        table = self._db.table(ITEMS)
        with self._db.conn:
            table.insert(
                {
                    "image": str(image),
                    "text": text,
                    "tokens": json.dumps([t.as_json() for t in items]),
                    "corrected": corrected,
                    "detector": scores.detector if scores is not None else "",
                    "seconds": float(seconds),
                    "created": now,
                    "updated": now,
                }
            )
        assert table.last_pk is not None
        return self.get(int(table.last_pk))

    @_locked
    def update(
        self,
        item_id: int,
        *,
        labels: Sequence[int] | None = None,
        corrected: str | None = None,
        seconds: float | None = None,
        add_seconds: float = 0.0,
    ) -> AnnotationItem:
        """Change an item's labels (one per token), corrected text or seconds spent."""
        item = self.get(item_id)
        tokens = item.tokens
        if labels is not None:
            if len(labels) != len(tokens):
                raise AnnotationError(
                    f"Item {item_id} has {len(tokens)} tokens but {len(labels)} labels were given."
                )
            if any(label not in (GOOD, BAD) for label in labels):
                raise AnnotationError("A label must be 1 (good) or 0 (hallucinated).")
            tokens = tuple(replace(t, label=int(v)) for t, v in zip(tokens, labels, strict=True))
        total = (item.seconds if seconds is None else float(seconds)) + float(add_seconds)
        if total < 0:
            raise AnnotationError("The seconds spent cannot be negative.")
        changes: dict[str, Any] = {
            "tokens": json.dumps([t.as_json() for t in tokens]),
            "seconds": total,
            "updated": _now(),
        }
        if corrected is not None:
            changes["corrected"] = corrected
        with self._db.conn:
            self._db.table(ITEMS).update(item_id, changes)
        return self.get(item_id)

    @_locked
    def toggle(self, item_id: int, index: int) -> AnnotationItem:
        """Flip token ``index``'s label (good <-> hallucinated)."""
        item = self.get(item_id)
        if not 0 <= index < len(item.tokens):
            raise AnnotationError(f"Item {item_id} has no token {index}.")
        labels = item.labels
        labels[index] = BAD if labels[index] == GOOD else GOOD
        return self.update(item_id, labels=labels)

    def add_seconds(self, item_id: int, seconds: float) -> AnnotationItem:
        return self.update(item_id, add_seconds=seconds)

    @_locked
    def delete(self, item_id: int) -> None:
        self.get(item_id)
        with self._db.conn:
            self._db.table(ITEMS).delete(item_id)

    # -- reading ---------------------------------------------------------------------------------

    @_locked
    def get(self, item_id: int) -> AnnotationItem:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM {ITEMS} WHERE id = ?", [item_id]).fetchone()
        if row is None:
            raise AnnotationError(f"There is no annotation item {item_id}.")
        return _item(row)

    @_locked
    def list(self, image: str | Path | None = None) -> list[AnnotationItem]:
        """Every item in the order added (only those of ``image`` when given)."""
        if image is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM {ITEMS} ORDER BY id").fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM {ITEMS} WHERE image = ? ORDER BY id", [str(image)]
            ).fetchall()
        return [_item(row) for row in rows]

    def __len__(self) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM {ITEMS}").fetchone()[0])

    # -- exports ---------------------------------------------------------------------------------

    @_locked
    def export_jsonl(self, path: Path) -> int:
        """One JSON line per item (offsets, labels, per-token P(good), seconds); the count."""
        items = self.list()
        _write(path, "".join(json.dumps(i.as_json(), ensure_ascii=False) + "\n" for i in items))
        return len(items)

    @_locked
    def export_label_studio(self, path: Path) -> int:
        """A Label Studio import file (JSON list of tasks); the number of tasks.

        Each task's ``data`` is ``{image, text}``; its ``annotations`` hold the annotator's
        hallucinated spans (and the seconds spent as ``lead_time``), its ``predictions`` the
        detector's flagged spans with their P(good). The labelling config these fit: a
        ``<Labels name="label" toName="text">`` with a ``hallucination`` label over
        ``<Text name="text" value="$text"/>``.
        """
        tasks = [label_studio_task(item) for item in self.list()]
        _write(path, json.dumps(tasks, indent=2, ensure_ascii=False) + "\n")
        return len(tasks)


def _span_result(text: str, start: int, end: int, rid: str, score: float | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": rid,
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": end, "text": text[start:end], "labels": [HALLUCINATION]},
    }
    if score is not None:
        result["score"] = round(score, 4)
    return result


def label_studio_task(item: AnnotationItem) -> dict[str, Any]:
    """One Label Studio task: the annotator's spans as an annotation, the detector's as a
    prediction (score: 1 - the span's lowest P(good))."""
    annotation = [
        _span_result(item.text, s, e, f"a{item.id}-{n}", None)
        for n, (s, e) in enumerate(item.bad_spans())
    ]
    flagged = [t for t in item.tokens if t.checked and t.p_good is not None and t.p_good < 0.5]
    prediction = []
    for n, (s, e) in enumerate(_spans(item.text, flagged)):
        lowest = min(t.p_good for t in flagged if s <= t.start < e and t.p_good is not None)
        prediction.append(_span_result(item.text, s, e, f"p{item.id}-{n}", 1.0 - lowest))
    task: dict[str, Any] = {
        "id": item.id,
        "data": {"image": item.image, "text": item.text},
        "annotations": [
            {
                "result": annotation,
                "lead_time": round(item.seconds, 3),
                "updated_at": item.updated,
                **({"meta": {"corrected": item.corrected}} if item.corrected else {}),
            }
        ],
    }
    if item.detector:
        task["predictions"] = [{"model_version": item.detector, "result": prediction}]
    return task


def _write(path: Path, content: str) -> None:
    path = Path(path)
    if path.is_dir():
        raise AnnotationError(f"{path} is a folder; give a file to write the export to.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def _check_tokens(text: str, tokens: Sequence[AnnotatedToken]) -> None:
    for t in tokens:
        if not (0 <= t.start < t.end <= len(text)) or text[t.start : t.end] != t.text:
            raise AnnotationError(
                f"The token {t.text!r} at {t.start}-{t.end} does not match the caption's text."
            )
        if t.label not in (GOOD, BAD):
            raise AnnotationError("A label must be 1 (good) or 0 (hallucinated).")


def _item(row: Sequence[Any]) -> AnnotationItem:
    item_id, image, text, tokens, corrected, detector, seconds, created, updated = row
    return AnnotationItem(
        int(item_id),
        image,
        text,
        tuple(AnnotatedToken(**t) for t in json.loads(tokens)),
        corrected,
        detector or "",
        float(seconds or 0.0),
        created or "",
        updated or "",
    )


class AnnotationTimer:
    """Seconds spent per item: start when an item is shown, stop when the annotator moves on.

    At most one item runs at a time (starting another stops the running one). With a store,
    each stop adds the elapsed seconds to the item; without one, :meth:`seconds` keeps them.
    Pausing (the window lost focus) is :meth:`stop` then :meth:`start` again.
    """

    def __init__(
        self,
        store: AnnotationStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._running: tuple[int, float] | None = None
        self._totals: dict[int, float] = {}

    @property
    def running(self) -> int | None:
        return None if self._running is None else self._running[0]

    def start(self, item_id: int) -> None:
        if self._running is not None and self._running[0] == item_id:
            return
        self.stop()
        self._running = (item_id, self._clock())

    def stop(self) -> float:
        """Stop the running item; the seconds this stretch took (0 when none ran)."""
        if self._running is None:
            return 0.0
        item_id, began = self._running
        self._running = None
        elapsed = max(0.0, self._clock() - began)
        self._totals[item_id] = self._totals.get(item_id, 0.0) + elapsed
        if self._store is not None:
            self._store.add_seconds(item_id, elapsed)
        return elapsed

    def seconds(self, item_id: int) -> float:
        """Seconds timed for the item in this session, the running stretch included."""
        total = self._totals.get(item_id, 0.0)
        if self._running is not None and self._running[0] == item_id:
            total += max(0.0, self._clock() - self._running[1])
        return total


__all__ = [
    "HALLUCINATION",
    "AnnotatedToken",
    "AnnotationError",
    "AnnotationItem",
    "AnnotationStore",
    "AnnotationTimer",
    "default_annotations_path",
    "label_studio_task",
    "tokens_from_scores",
]
