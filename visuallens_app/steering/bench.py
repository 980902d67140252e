"""Multiple-choice benchmarks in the CV-Bench layout, their prompts, and the prompting baseline.

One JSONL line per question: ``image`` (a path, relative to the file's folder), ``question``,
``choices`` (2 to 26 strings), ``answer`` (``"(B)"``, ``"B"``, the 0-based index, or the choice's
text) and ``task`` (optional; e.g. ``"Count"``). The layout is documented in
``docs/steering-benchmark-format.md``. The model is asked with lettered choices and answers with
a letter; its answer is the letter with the highest first-token probability (greedy decoding of
one letter, without generating it).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from visuallens_app.steering import SteeringError

LETTERS = string.ascii_uppercase

#: How the choices are asked for (the CV-Bench/LLaVA multiple-choice wording).
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."

#: The prompting baseline the paper compares steering against: tell the model what to attend to.
CONCEPT_PROMPTS = {
    "spatial": "Pay close attention to where the objects are relative to each other.",
    "counting": "Pay close attention to how many objects of each kind there are.",
    "attribute": "Pay close attention to the colours, materials, sizes and shapes of the objects.",
    "entity": "Pay close attention to which objects and beings are in the image.",
    "action": "Pay close attention to what the people and animals are doing.",
    "temporal": "Pay close attention to the time of day and the order of events.",
    "comparison": "Pay close attention to how the objects compare in size, distance and amount.",
    "negation": "Pay close attention to what is absent as well as what is present.",
}


def concept_prompt(concept: str) -> str:
    """The instruction of the prompting baseline for ``concept`` (a generic one for a user's)."""
    return CONCEPT_PROMPTS.get(concept, f"Pay close attention to the {concept} in the image.")


@dataclass(frozen=True, slots=True)
class BenchItem:
    """One multiple-choice question about one photo; ``answer`` is the index of the right choice."""

    line: int
    image: Path
    question: str
    choices: tuple[str, ...]
    answer: int
    task: str = ""

    @property
    def letters(self) -> list[str]:
        return list(LETTERS[: len(self.choices)])

    def prompt(self, instruction: str = "") -> str:
        """The question with lettered choices; ``instruction`` first (the prompting baseline)."""
        lines = [instruction] if instruction else []
        lines.append(self.question.strip())
        lines.extend(f"({LETTERS[i]}) {choice}" for i, choice in enumerate(self.choices))
        lines.append(ANSWER_INSTRUCTION)
        return "\n".join(lines)


def _answer_index(value: object, choices: list[str]) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(choices) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = re.fullmatch(r"\(?([A-Za-z])\)?", text)
    if match:
        index = LETTERS.index(match.group(1).upper())
        return index if index < len(choices) else None
    return choices.index(text) if text in choices else None


def open_photo(path: Path, *, line: int | None = None) -> Image.Image:
    """A photo for the model: upright (EXIF), RGB, any format the library reads (HEIC too)."""
    from visuallens_app.library.decode import DecodeError, decode_photo

    try:
        return decode_photo(Path(path), target=1024).image
    except DecodeError as err:
        where = f"Line {line}: the" if line is not None else "The"
        raise SteeringError(f"{where} photo {path} cannot be read ({err}).") from err


def parse_benchmark(text: str, *, folder: Path, source: str = "") -> list[BenchItem]:
    """Every question of a JSONL text; the first bad line is one sentence with its number."""
    where = source or "the benchmark"
    items: list[BenchItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise SteeringError(f"Line {number} of {where} is not JSON ({err.msg}).") from err
        if not isinstance(record, dict):
            raise SteeringError(f"Line {number} of {where} is not a JSON object.")
        missing = [k for k in ("image", "question", "choices", "answer") if k not in record]
        if missing:
            raise SteeringError(f'Line {number} of {where} has no "{missing[0]}".')
        choices = record["choices"]
        if (
            not isinstance(choices, list)
            or not 2 <= len(choices) <= len(LETTERS)
            or not all(isinstance(c, (str, int, float)) for c in choices)
        ):
            raise SteeringError(f'Line {number} of {where}: "choices" must be 2 to 26 strings.')
        labels = [str(c) for c in choices]
        answer = _answer_index(record["answer"], labels)
        if answer is None:
            raise SteeringError(
                f"Line {number} of {where}: the answer {record['answer']!r} is not one of its "
                f"{len(labels)} choices."
            )
        image = Path(str(record["image"])).expanduser()
        items.append(
            BenchItem(
                number,
                image if image.is_absolute() else folder / image,
                str(record["question"]),
                tuple(labels),
                answer,
                str(record.get("task", "")),
            )
        )
    if not items:
        raise SteeringError(f"{where} has no questions.")
    return items


def load_benchmark(path: str | Path, *, task: str | None = None) -> list[BenchItem]:
    """The questions of a benchmark file (only ``task``'s when given); images checked to exist."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SteeringError(f"There is no benchmark file {file}.")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SteeringError(f"The benchmark file {file} cannot be read ({err}).") from err
    items = parse_benchmark(text, folder=file.parent, source=str(file))
    if task:
        items = [item for item in items if item.task.lower() == task.lower()]
        if not items:
            raise SteeringError(f"{file} has no questions of the task {task!r}.")
    for item in items:
        if not item.image.is_file():
            raise SteeringError(f"Line {item.line} of {file}: there is no image {item.image}.")
    return items


__all__ = [
    "CONCEPT_PROMPTS",
    "BenchItem",
    "concept_prompt",
    "load_benchmark",
    "open_photo",
    "parse_benchmark",
]
