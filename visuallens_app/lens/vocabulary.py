"""The aspect vocabulary: short descriptors ("dome", "neon", "spicy") scored zero-shot per photo.

VisualLens characterises each history photo by a few *aspect words*; without a captioning model the
app picks them from this fixed list by text-image similarity. The list ships as
``resources/aspects.txt``: one term per line, ``# header`` lines naming the group of the terms that
follow (cuisines, colours, activities...). Groups let the GUI and the explanations show
"materials: exposed brick" instead of a bare word, and let callers restrict scoring to some groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from visuallens_app.errors import VisualLensError
from visuallens_app.settings import resources_dir

#: Group of terms that appear before any ``# header``.
UNGROUPED = "ungrouped"


def normalize_term(term: str) -> str:
    """The form terms are stored and looked up in: lowercase, single spaces."""
    return " ".join(term.split()).casefold()


def default_vocabulary_path() -> Path:
    """The vocabulary shipped with the app."""
    return resources_dir() / "aspects.txt"


@dataclass(frozen=True)
class AspectVocabulary:
    """An ordered, duplicate-free list of aspect terms, each with the group it belongs to.

    The order is the row order of any term-embedding matrix built from it, so ``index(term)`` is
    the row of that term.
    """

    terms: tuple[str, ...]
    groups: dict[str, str] = field(default_factory=dict, hash=False)
    _positions: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        positions: dict[str, int] = {}
        for position, term in enumerate(self.terms):
            positions.setdefault(term, position)
        if len(positions) != len(self.terms):
            raise ValueError("aspect terms must be unique")
        object.__setattr__(self, "_positions", positions)

    @classmethod
    def from_terms(cls, terms: Iterable[str], group: str = UNGROUPED) -> AspectVocabulary:
        """A vocabulary from plain terms (a user's own list, a test); repeats are dropped."""
        unique = dict.fromkeys(t for t in (normalize_term(term) for term in terms) if t)
        return cls(terms=tuple(unique), groups=dict.fromkeys(unique, group))

    @classmethod
    def load(cls, path: Path | None = None) -> AspectVocabulary:
        """Read a vocabulary file (default: the shipped ``resources/aspects.txt``).

        Terms are normalised (lowercase, single spaces) and a repeated term keeps its first group,
        so a hand-edited file still loads. An unreadable or empty file is an error a user can fix.
        """
        path = path or default_vocabulary_path()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise VisualLensError(f"The aspect vocabulary {path} cannot be read.") from exc
        groups: dict[str, str] = {}
        group = UNGROUPED
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                header = normalize_term(stripped.lstrip("#"))
                group = header or group
                continue
            term = normalize_term(stripped)
            if term:
                groups.setdefault(term, group)
        if not groups:
            raise VisualLensError(f"The aspect vocabulary {path} has no terms.")
        # A comment block above the first group names no group: only headers followed by terms do.
        return cls(terms=tuple(groups), groups=groups)

    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalize_term(term) in self._positions

    def index(self, term: str) -> int:
        """Position of ``term`` (case and spacing ignored); ValueError when absent, like a tuple."""
        try:
            return self._positions[normalize_term(term)]
        except KeyError:
            raise ValueError(f"{term!r} is not in the aspect vocabulary") from None

    def group_of(self, term: str) -> str:
        """The group a term was listed under (``UNGROUPED`` when the file gave none)."""
        return self.groups.get(normalize_term(term), UNGROUPED)

    def by_group(self) -> dict[str, tuple[str, ...]]:
        """Terms per group, groups in file order: for the GUI's aspect picker and for reports."""
        grouped: dict[str, list[str]] = {}
        for term in self.terms:
            grouped.setdefault(self.group_of(term), []).append(term)
        return {name: tuple(terms) for name, terms in grouped.items()}
