"""Catalogs: the things that can be recommended (a folder with items.jsonl or items.csv)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One candidate: a name plus a description and optional images (absolute paths)."""

    id: str
    name: str
    category: str
    description: str
    images: tuple[Path, ...] = ()
    tags: tuple[str, ...] = ()
    rating: float | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    """A loaded catalog: its folder, a display name, and the items that validated."""

    name: str
    root: Path
    items: tuple[CatalogItem, ...] = field(default_factory=tuple)

    def categories(self) -> list[str]:
        return sorted({item.category for item in self.items})

    def in_category(self, category: str) -> list[CatalogItem]:
        wanted = category.strip().casefold()
        return [item for item in self.items if item.category.casefold() == wanted]
