"""Vector index over photo embeddings: a FAISS cache derived from the store, rebuilt when stale.

Importing this package does not import faiss; that happens on the first build, load or search.
"""

from visuallens_app.index.recall import SearchResults, recall_at_k
from visuallens_app.index.vector_index import (
    DEFAULT_EXACT_THRESHOLD,
    DEFAULT_TARGET_RECALL,
    IndexKind,
    VectorIndex,
)

__all__ = [
    "DEFAULT_EXACT_THRESHOLD",
    "DEFAULT_TARGET_RECALL",
    "IndexKind",
    "SearchResults",
    "VectorIndex",
    "recall_at_k",
]
