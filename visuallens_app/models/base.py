"""The one interface every image-text encoder implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

T = TypeVar("T")


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


def encode_in_batches(
    items: Sequence[T],
    batch_size: int,
    dim: int,
    encode_batch: Callable[[Sequence[T]], NDArray[np.float32]],
) -> NDArray[np.float32]:
    """(n, dim) unit rows: ``encode_batch`` over slices of ``items``, under torch's inference mode.

    Normalised in fp32 after concatenation, so fp16 features computed on a GPU end at length 1.
    """
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    import torch

    with torch.inference_mode():
        parts = [
            encode_batch(items[start : start + batch_size])
            for start in range(0, len(items), batch_size)
        ]
    return l2_normalise(np.concatenate(parts).astype(np.float32, copy=False))


def l2_normalise(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def load_now(encoder: Encoder) -> None:
    """Load every weight of ``encoder`` now; encoders otherwise load each side at its first use.

    For the GUI, which loads on a worker thread at start so that the first search is instant.
    """
    load = getattr(encoder, "load", None)
    if callable(load):
        load()


@dataclass(frozen=True, eq=False)
class PhotoSignals:
    """What an encoder's classifier says about each photo beyond its vector (row-aligned).

    ``confidence`` is the top class's probability (low for blurry, odd or generated images,
    which ConSE places near the centre of the space, close to every prompt); ``document`` is
    the probability mass on document- and screen-like classes (menus, crosswords, web sites,
    book jackets...). NaN where unknown.
    """

    confidence: NDArray[np.float32]
    document: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.confidence)

    @classmethod
    def unknown(cls, n: int) -> PhotoSignals:
        """Signals for ``n`` photos whose encoder has no classifier to ask."""
        return cls(np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32))


@runtime_checkable
class SignalEncoder(Protocol):
    """An encoder that can also report :class:`PhotoSignals` (the embedded one; CLIP cannot)."""

    def encode_images_with_signals(
        self, images: Sequence[Image.Image]
    ) -> tuple[NDArray[np.float32], PhotoSignals]:
        """The vectors of ``encode_images`` and each photo's signals."""
        ...
