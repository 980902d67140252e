"""The saved steering vectors: one safetensors file each in the library's ``steering/vectors/``.

They live in the library folder (``Settings.library_path``), not the cache: a vector is something
the user made and names, computed in minutes and chosen again later, so clearing the cache must
not lose it. A vector is known by its file name without ``.safetensors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visuallens_app.steering import SteeringError
from visuallens_app.steering.vectors import SteeringVector, load_vector

SUFFIX = ".safetensors"


def default_vectors_dir() -> Path:
    from visuallens_app.settings import Settings

    return Settings.load().library_path / "steering" / "vectors"


def default_name(vector: SteeringVector) -> str:
    """``{concept}-{method}-{model}-L{first}-{last}``, safe as a file name."""
    layers = vector.layers
    span = f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}-{layers[-1]}"
    raw = f"{vector.concept}-{vector.method}-{Path(vector.model).name}-{span}"
    return re.sub(r"[^\w.-]+", "_", raw)


@dataclass(frozen=True, slots=True)
class StoredVector:
    """A vector file in the store, with its metadata (read without the arrays' values)."""

    name: str
    path: Path
    info: dict[str, Any]


class VectorStore:
    """List, save, load and delete vectors in one folder (default: :func:`default_vectors_dir`)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_vectors_dir()

    def path(self, name: str) -> Path:
        if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
            raise SteeringError(f"{name!r} is not a vector name (letters, digits, . _ - only).")
        return self.folder / f"{name.removesuffix(SUFFIX)}{SUFFIX}"

    def save(self, vector: SteeringVector, name: str | None = None) -> StoredVector:
        chosen = name or default_name(vector)
        path = vector.save(self.path(chosen))
        return StoredVector(chosen.removesuffix(SUFFIX), path, vector.describe())

    def resolve(self, name_or_path: str | Path) -> Path:
        """A stored vector's file by name, or any vector file by path."""
        given = Path(name_or_path).expanduser()
        if given.is_file():
            return given
        text = str(name_or_path)
        if "/" not in text and re.fullmatch(r"[\w.-]+", text):
            stored = self.path(text)
            if stored.is_file():
                return stored
        raise SteeringError(
            f"There is no steering vector {text!r}; see `visuallens steer list` for the saved ones."
        )

    def load(self, name_or_path: str | Path) -> SteeringVector:
        return load_vector(self.resolve(name_or_path))

    def list(self) -> list[StoredVector]:
        """Every readable vector, newest first; a damaged file is skipped, not fatal."""
        if not self.folder.is_dir():
            return []
        found: list[StoredVector] = []
        for path in self.folder.glob(f"*{SUFFIX}"):
            try:
                info = load_vector(path).describe()
            except SteeringError:
                continue
            found.append(StoredVector(path.name.removesuffix(SUFFIX), path, info))
        return sorted(found, key=lambda s: (str(s.info.get("created", "")), s.name), reverse=True)

    def delete(self, name: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            raise SteeringError(f"There is no saved steering vector {name!r}.")
        path.unlink()
        return path


__all__ = ["StoredVector", "VectorStore", "default_name", "default_vectors_dir"]
