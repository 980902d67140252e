"""One interface over where photo vectors are searched: the FAISS file, or a vector database.

The SQLite store stays the source of truth. A :class:`VectorStore` is derived from it and is
brought back in line with it (:func:`open_vector_store`) whenever the store's fingerprint moved,
so either kind may be lost, emptied or left behind at any moment and only costs a rebuild.

``spec`` names the kind (the ``vector_store`` setting, ``--vector-store`` on the command line):

- ``faiss`` (default): the FAISS index saved in the library (:class:`VectorIndex`).
- ``http://HOST:PORT`` or ``https://...``: a Qdrant server (``QDRANT_API_KEY`` for a key).
- ``local:DIR``: Qdrant's in-process mode, storing under DIR: the same client code and API as
  the server, for one machine and for the tests.

The Qdrant kinds need the ``scale`` extra (``pip install 'visuallens-studio[scale]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import LibraryError
from visuallens_app.index.recall import SearchResults
from visuallens_app.jobs import CancelToken, Job, run_to_end

#: What ``--vector-store`` accepts, for error messages and help texts.
SPEC_HELP = "faiss (default), http://HOST:PORT or https://... (a Qdrant server), or local:DIR"

Fetch = Callable[[], tuple[NDArray[np.int64], NDArray[np.float32]]]


class VectorStoreUnavailableError(LibraryError):
    """The vector database cannot be reached or refused a request; the library is untouched."""


@runtime_checkable
class VectorStore(Protocol):
    """Nearest photos by cosine similarity over one library's vectors from one encoder."""

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        ...

    @property
    def fingerprint(self) -> str:
        """The store state (``PhotoStore.fingerprint``) these vectors reflect."""
        ...

    def __len__(self) -> int: ...

    def search(
        self, queries: NDArray[np.float32], k: int, *, exclude: set[int] | None = None
    ) -> SearchResults:
        """The ``k`` best (photo id, cosine) pairs per query, best first."""
        ...

    def add(
        self, ids: NDArray[np.int64], vectors: NDArray[np.float32], *, fingerprint: str
    ) -> None:
        """Insert or replace ``ids``; ``fingerprint`` is the store's new state."""
        ...

    def remove(self, ids: NDArray[np.int64] | Sequence[int], *, fingerprint: str) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed."""
        ...


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Whose vectors a store holds: one library (by its id) and one encoder, never mixed."""

    library_id: str
    encoder_id: str
    #: The library's own folder for derived files (the FAISS kind saves its index there).
    index_dir: Path
    #: The file name stem of the FAISS index (one per encoder).
    index_name: str


def check_spec(spec: str) -> str | None:
    """Why ``spec`` is not a vector store this app can use, or None when it is."""
    text = spec.strip()
    if text == "faiss":
        return None
    if text.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return f"{text!r} is not a valid URL"
        return None if parts.hostname else f"{text!r} names no host"
    if text.startswith("local:"):
        return (
            None if text[len("local:") :].strip() else "local: needs a folder, e.g. local:~/qdrant"
        )
    return f"{text!r} is not a vector store; use {SPEC_HELP}"


def describe(spec: str) -> str:
    """The store ``spec`` names, in words, for status lines."""
    text = spec.strip()
    if text == "faiss":
        return "FAISS index in the library"
    if text.startswith("local:"):
        return f"Qdrant (in-process) at {Path(text[6:]).expanduser()}"
    return f"Qdrant server at {text}"


def open_vector_store(
    spec: str,
    target: StoreTarget,
    *,
    fingerprint: str,
    fetch: Fetch,
    cancel: CancelToken | None = None,
) -> VectorStore:
    """The vector store ``spec`` names for ``target``, brought in line with the store first."""
    if spec.strip() == "faiss":
        from visuallens_app.index.vector_index import VectorIndex

        return VectorIndex.load_or_build(
            target.index_dir, target.index_name, fingerprint=fingerprint, fetch=fetch
        )
    return run_to_end(
        open_vector_store_job(spec, target, fingerprint=fingerprint, fetch=fetch, cancel=cancel)
    )


def open_vector_store_job(
    spec: str,
    target: StoreTarget,
    *,
    fingerprint: str,
    fetch: Fetch,
    cancel: CancelToken | None = None,
) -> Job[VectorStore]:
    """:func:`open_vector_store` as a long job: a rebuild from SQLite reports progress.

    Raises
    ------
    LibraryError
        ``spec`` is not a vector store, or its extra is not installed.
    VectorStoreUnavailableError
        The server is down or unreachable (one sentence; nothing in the library is lost).
    """
    problem = check_spec(spec)
    if problem is not None:
        raise LibraryError(f"The vector store {problem}.")
    text = spec.strip()
    if text == "faiss":
        from visuallens_app.index.vector_index import VectorIndex

        index: VectorStore = yield from VectorIndex.load_or_build_job(
            target.index_dir, target.index_name, fingerprint=fingerprint, fetch=fetch, cancel=cancel
        )
        return index
    from visuallens_app.index.qdrant_store import QdrantVectorStore

    store: VectorStore = yield from QdrantVectorStore.open_job(
        text, target, fingerprint=fingerprint, fetch=fetch, cancel=cancel
    )
    return store
