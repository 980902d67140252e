"""The one interface every image-text encoder implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """Maps images and texts into one space of unit vectors, where cosine = inner product.

    ``id`` is stable across runs and changes whenever the vectors would change (architecture,
    weights, preprocessing): every stored vector records it, and vectors of different ids are
    never compared.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def input_size(self) -> int:
        """Side in pixels of the square the model sees; decoders downscale to about this."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """(n, dim) float32, rows L2-normalised. Images are RGB PIL images of any size."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, dim) float32, rows L2-normalised."""
        ...


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    """Which encoder ``auto`` picked and why, in a sentence for the user."""

    encoder: Encoder
    reason: str


def l2_normalise(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
