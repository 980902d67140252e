"""A caption file -> labelled hard negatives (JSONL), rule-based or by an LLM rewrite, as a job.

Each caption is written as it is (every token good) and with up to N edits per category; a
caption with nothing of a category is a counted skip, an LLM rewrite that fails the validity
check (:func:`~visuallens_app.tldr.perturb.check_edit`) a counted discard.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from visuallens_app.jobs import CancelToken, ProgressMeter, StreamingJob
from visuallens_app.tldr.labels import LabelledRecord, TldrDataError, read_jsonl
from visuallens_app.tldr.lexicon import load_lexicon
from visuallens_app.tldr.perturb import CATEGORIES, PROPOSERS, check_edit, perturb

#: Proposes one edit per (caption, category) request, in order (e.g. a local LLM).
Rewriter = Callable[[Sequence[tuple[str, str]]], list[str]]


@dataclass
class PerturbSummary:
    """What :func:`perturb_file` did: captions read, records written, skips per category."""

    captions: int = 0
    records: int = 0
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # captions with nothing to edit
    discarded: dict[str, int] = field(default_factory=dict)  # rewrites failing the check
    problems: list[str] = field(default_factory=list)  # "line N: reason"

    def as_json(self) -> dict[str, object]:
        return {
            "captions": self.captions,
            "records": self.records,
            "written": self.written,
            "skipped": self.skipped,
            "discarded": self.discarded,
            "problems": self.problems,
        }

    def table(self) -> str:
        lines = [f"{self.captions} captions -> {self.records} records"]
        names = sorted({*self.written, *self.skipped, *self.discarded}, key=_category_order)
        lines += [
            f"  {c:15s} {self.written.get(c, 0):6d} written {self.skipped.get(c, 0):6d} skipped"
            + (f" {self.discarded[c]:6d} discarded" if c in self.discarded else "")
            for c in names
        ]
        if self.problems:
            lines.append(f"{len(self.problems)} line(s) skipped (listed on stderr)")
        return "\n".join(lines)


def _category_order(name: str) -> int:
    return CATEGORIES.index(name) if name in CATEGORIES else -1


def caption_of(data: object) -> tuple[str, str | None, str | None]:
    """(caption, image, id) of a DOCCI-shaped line; TldrDataError when it has no caption."""
    if not isinstance(data, dict):
        raise TldrDataError("the line is not a JSON object")
    text = data.get("caption", data.get("text"))
    if not isinstance(text, str) or not text.strip():
        raise TldrDataError('the line has no "caption" text')
    image = data.get("image")
    source = data.get("id", data.get("source_id"))
    return text, None if image is None else str(image), None if source is None else str(source)


def perturb_file(
    source: Path,
    out: Path,
    *,
    categories: Sequence[str] = CATEGORIES,
    per_caption: int = 1,
    seed: int = 0,
    rewriter: Rewriter | None = None,
    cancel: CancelToken | None = None,
) -> StreamingJob[PerturbSummary]:
    """Read ``{"caption", "image", "id"}`` lines, write each original and up to ``per_caption``
    edits per category as labelled JSONL; bad lines are reported in the summary, one each.

    With ``rewriter`` (the LLM-rewrite mode), it proposes one edit per caption and category
    instead of the rules; an edit failing :func:`check_edit` is discarded and counted.
    """
    for category in categories:
        if category not in PROPOSERS:
            raise TldrDataError(
                f"Unknown category {category!r}; choose from {', '.join(CATEGORIES)}."
            )
    lex = load_lexicon()
    rng = random.Random(seed)
    lines = list(read_jsonl(source))
    meter = ProgressMeter(len(lines), stage="perturb", unit="captions")
    summary = PerturbSummary()
    yield meter.progress()
    with out.open("w", encoding="utf-8") as handle:

        def write(record: LabelledRecord) -> None:
            handle.write(json.dumps(record.as_json(), ensure_ascii=False) + "\n")
            summary.records += 1

        for line in lines:
            if cancel is not None:
                cancel.check()
            meter.advance()
            try:
                if line.problem is not None:
                    raise TldrDataError(line.problem)
                text, image, source_id = caption_of(line.data)
            except TldrDataError as err:
                summary.problems.append(f"line {line.number}: {err}")
                continue
            source_id = source_id or f"line-{line.number}"
            summary.captions += 1
            write(LabelledRecord.of_original(text, source_id, image))
            edited: list[tuple[str, str]] = []
            if rewriter is not None:
                proposals = rewriter([(text, category) for category in categories])
                for category, proposal in zip(categories, proposals, strict=True):
                    if check_edit(text, proposal, category, lex) is None:
                        edited.append((category, proposal))
                    else:
                        summary.discarded[category] = summary.discarded.get(category, 0) + 1
            else:
                for category in categories:
                    edits = perturb(text, category, n=per_caption, rng=rng, lexicon=lex)
                    if not edits:
                        summary.skipped[category] = summary.skipped.get(category, 0) + 1
                    edited += [(category, p.text) for p in edits]
            for category, new_text in edited:
                write(LabelledRecord.of_edit(text, new_text, category, source_id, image))
                summary.written[category] = summary.written.get(category, 0) + 1
            if meter.due():
                yield meter.progress(f"{summary.records} records")
    yield meter.progress(f"{summary.records} records")
    return summary


__all__ = ["PerturbSummary", "Rewriter", "caption_of", "perturb_file"]
