"""The vector store on Qdrant: a server (``http://HOST:PORT``) or in-process (``local:DIR``).

Qdrant holds the vectors, and with each one as payload the photo id, the encoder id and the
library id; every search and every count filters on the last two, so several libraries and
encoders share one server without ever mixing. One collection per vector dimension
(``visuallens_d384``...), and one small ``visuallens_meta`` collection recording, per library and
encoder, the store fingerprint the server last caught up with.

The server is a derived copy like the FAISS file: :meth:`QdrantVectorStore.open_job` compares
that fingerprint with the store's and, when they differ (new photos, a server that was down, an
emptied or re-created server), diffs the server against SQLite by a digest of each vector and
uploads or deletes only what differs. The fingerprint is written last, so a sync killed midway
is simply redone. Any failure to talk to the server is :class:`VectorStoreUnavailableError`, one
sentence; nothing is written to the library by this module, so nothing there is ever lost.

qdrant-client is imported inside functions only (the ``scale`` extra).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import Cancelled, LibraryError
from visuallens_app.index.recall import SearchResults, check_cancel
from visuallens_app.index.stores import Fetch, StoreTarget, VectorStoreUnavailableError
from visuallens_app.index.vector_index import _check_pair
from visuallens_app.jobs import CancelToken, Job, Progress, ProgressMeter

META_COLLECTION = "visuallens_meta"
#: Points per upload request: big enough to amortise the round trip, small enough for a 32 MB
#: request limit at 2048 dimensions.
UPLOAD_CHUNK = 1024
#: Seconds a request may take before the server counts as unreachable.
TIMEOUT_S = 30
_NAMESPACE = uuid.UUID("5b0c6c8e-7a51-4d0c-9a53-2f4e6c1d9e70")

#: Qdrant's local mode locks its folder per client, so each process keeps one client per spec.
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
#: One lock per client: local mode is not thread-safe (the GUI searches from worker threads).
_call_locks: dict[str, threading.RLock] = {}


def _call_lock(spec: str) -> threading.RLock:
    with _clients_lock:
        return _call_locks.setdefault(spec, threading.RLock())


def data_collection(dim: int) -> str:
    """The collection holding ``dim``-dimensional vectors of every library and encoder."""
    return f"visuallens_d{dim}"


def point_id(target: StoreTarget, photo_id: int) -> str:
    """A stable point id: the same photo of the same library and encoder is one point."""
    return str(uuid.uuid5(_NAMESPACE, f"{target.library_id}/{target.encoder_id}/{photo_id}"))


def _meta_id(target: StoreTarget) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"meta/{target.library_id}/{target.encoder_id}"))


def _digests(vectors: NDArray[np.float32]) -> list[str]:
    """A short digest per row: a changed photo (same id, new content) gets uploaded again."""
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in vectors]


def _where(spec: str) -> str:
    return (
        f"the Qdrant folder {Path(spec[6:]).expanduser()}"
        if spec.startswith("local:")
        else f"the Qdrant server at {spec}"
    )


@contextlib.contextmanager
def _talking(spec: str) -> Iterator[None]:
    """Turn any failure to reach or use the server into one sentence for the user."""
    try:
        yield
    except (LibraryError, MemoryError, Cancelled):  # a cancel is not the server's failure
        raise
    except Exception as err:  # httpx, grpc, pydantic, portalocker: all mean "not usable now"
        reason = " ".join(str(err).split()) or type(err).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise VectorStoreUnavailableError(
            f"The vector store is not reachable ({_where(spec)}: {reason}); the photos and "
            "their vectors are safe in the library, and the store is filled again from it "
            "when it is back."
        ) from err


def client_for(spec: str) -> Any:
    """The process's Qdrant client for ``spec`` (``http(s)://...`` or ``local:DIR``)."""
    try:
        from qdrant_client import QdrantClient
    except ImportError as err:
        raise LibraryError(
            "A Qdrant vector store needs the scale extra: pip install 'visuallens-studio[scale]'."
        ) from err
    with _clients_lock:
        client = _clients.get(spec)
        if client is None:
            with _talking(spec):
                if spec.startswith("local:"):
                    folder = Path(spec[6:]).expanduser()
                    folder.mkdir(parents=True, exist_ok=True)
                    # Calls are serialised by _call_lock, so any thread may make them.
                    client = QdrantClient(path=str(folder), force_disable_check_same_thread=True)
                else:
                    client = QdrantClient(
                        url=spec,
                        api_key=os.environ.get("QDRANT_API_KEY") or None,
                        timeout=TIMEOUT_S,
                        check_compatibility=False,
                    )
            if not _clients:
                # Before the interpreter tears down modules, which qdrant's own __del__ needs.
                atexit.register(close_clients)
            _clients[spec] = client
        return client


def close_clients() -> None:
    """Close every client of this process (releases local-mode folder locks)."""
    with _clients_lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):
                client.close()
        _clients.clear()


class QdrantVectorStore:
    """One library's vectors from one encoder, in a Qdrant collection shared with others."""

    def __init__(
        self, client: Any, spec: str, target: StoreTarget, *, dim: int, fingerprint: str
    ) -> None:
        """Wrap a client; use :meth:`open` or :meth:`open_job`, which sync with the store."""
        self._client = client
        self._spec = spec
        self._target = target
        self._dim = dim
        self._fingerprint = fingerprint
        self._collection = data_collection(dim)
        self._lock = _call_lock(spec)

    # ----------------------------------------------------------------------------------- open

    @classmethod
    def open(
        cls, spec: str, target: StoreTarget, *, fingerprint: str, fetch: Fetch
    ) -> QdrantVectorStore:
        """The store for ``target`` on ``spec``, in line with ``fingerprint``; see open_job."""
        from visuallens_app.jobs import run_to_end

        return run_to_end(cls.open_job(spec, target, fingerprint=fingerprint, fetch=fetch))

    @classmethod
    def open_job(
        cls,
        spec: str,
        target: StoreTarget,
        *,
        fingerprint: str,
        fetch: Fetch,
        cancel: CancelToken | None = None,
    ) -> Job[QdrantVectorStore]:
        """Connect, and when the server is behind the store, catch it up from ``fetch()``.

        Costs one request when the server is current; otherwise one read of the store's vectors
        and an upload of only the vectors the server lacks or holds stale.
        """
        from qdrant_client import models

        client = client_for(spec)
        lock = _call_lock(spec)
        with lock, _talking(spec):
            _ensure_collection(client, META_COLLECTION, 1)
            marks = client.retrieve(META_COLLECTION, [_meta_id(target)], with_payload=True)
        mark = marks[0].payload if marks else None
        if mark is not None and mark.get("fingerprint") == fingerprint:
            store = cls(client, spec, target, dim=int(mark["dim"]), fingerprint=fingerprint)
            with lock, _talking(spec):
                # Someone may have emptied or re-created the server since: then rebuild.
                if len(store) == int(mark["count"]):
                    return store

        yield Progress(0, 0, "reading vectors from the library", stage="loading")
        ids, vectors = fetch()
        ids, vectors = _check_pair(ids, vectors)
        dim = int(vectors.shape[1]) if vectors.ndim == 2 and vectors.shape[1] else 1
        store = cls(client, spec, target, dim=dim, fingerprint=fingerprint)
        with lock, _talking(spec):
            _ensure_collection(client, store._collection, dim, server=not spec.startswith("local:"))
            on_server = store._server_digests(cancel)
        wanted = dict(zip(ids.tolist(), _digests(vectors), strict=True))
        upload = [i for i, (pid, d) in enumerate(wanted.items()) if on_server.get(pid) != d]
        gone = [pid for pid in on_server if pid not in wanted]
        meter = ProgressMeter(len(upload), stage="syncing")
        yield meter.progress(f"uploading {len(upload)} vectors to {_where(spec)}")
        for start in range(0, len(upload), UPLOAD_CHUNK):
            check_cancel(cancel)
            rows = np.asarray(upload[start : start + UPLOAD_CHUNK], dtype=np.int64)
            with lock, _talking(spec):
                store._upsert(ids[rows], vectors[rows])
            meter.advance(len(rows))
            if meter.due():
                yield meter.progress(f"{meter.done} of {meter.total} vectors")
        if gone:
            with lock, _talking(spec):
                client.delete(
                    store._collection,
                    points_selector=models.PointIdsList(
                        points=[point_id(target, pid) for pid in gone]
                    ),
                )
        with lock, _talking(spec):
            store._write_mark(len(wanted))
        return store

    def _server_digests(self, cancel: CancelToken | None) -> dict[int, str]:
        """photo id -> vector digest of every point the server holds for this target."""
        found: dict[int, str] = {}
        offset: Any = None
        while True:
            check_cancel(cancel)
            points, offset = self._client.scroll(
                self._collection,
                scroll_filter=self._filter(),
                limit=4096,
                offset=offset,
                with_payload=["photo_id", "digest"],
                with_vectors=False,
            )
            for point in points:
                payload = point.payload or {}
                found[int(payload["photo_id"])] = str(payload.get("digest", ""))
            if offset is None:
                return found

    # --------------------------------------------------------------------------------- reads

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self._dim

    @property
    def fingerprint(self) -> str:
        """The store state the server last caught up with."""
        return self._fingerprint

    @property
    def spec(self) -> str:
        """Where the vectors are: the URL or ``local:DIR``."""
        return self._spec

    def __len__(self) -> int:
        with self._lock, _talking(self._spec):
            if not self._client.collection_exists(self._collection):
                return 0  # a server re-created empty
            return int(
                self._client.count(self._collection, count_filter=self._filter(), exact=True).count
            )

    def search(
        self, queries: NDArray[np.float32], k: int, *, exclude: set[int] | None = None
    ) -> SearchResults:
        """The ``k`` best (photo id, cosine) pairs per query, best first; ``exclude`` left out."""
        from qdrant_client import models

        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise ValueError(f"queries must have shape (m, {self._dim}) or ({self._dim},)")
        if k <= 0:
            return [[] for _ in range(q.shape[0])]
        query_filter = self._filter(exclude)
        requests = [
            models.QueryRequest(
                query=row.tolist(), filter=query_filter, limit=k, with_payload=["photo_id"]
            )
            for row in q
        ]
        with self._lock, _talking(self._spec):
            if not self._client.collection_exists(self._collection):
                return [[] for _ in range(q.shape[0])]
            responses = self._client.query_batch_points(self._collection, requests=requests)
        return [
            [(int((p.payload or {})["photo_id"]), float(p.score)) for p in response.points]
            for response in responses
        ]

    # ------------------------------------------------------------------------------ mutation

    def add(
        self, ids: NDArray[np.int64], vectors: NDArray[np.float32], *, fingerprint: str
    ) -> None:
        """Insert or replace ``ids``; ``fingerprint`` is the store's new state."""
        ids, vectors = _check_pair(ids, vectors)
        if len(ids) and vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must have dimension {self._dim}")
        with self._lock, _talking(self._spec):
            for start in range(0, len(ids), UPLOAD_CHUNK):
                stop = start + UPLOAD_CHUNK
                self._upsert(ids[start:stop], vectors[start:stop])
            self._fingerprint = fingerprint
            self._write_mark(len(self))

    def remove(self, ids: NDArray[np.int64] | Sequence[int], *, fingerprint: str) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed."""
        from qdrant_client import models

        wanted = [point_id(self._target, int(i)) for i in np.asarray(ids, np.int64).reshape(-1)]
        with self._lock, _talking(self._spec):
            present = self._client.retrieve(self._collection, wanted, with_payload=False)
            if present:
                self._client.delete(
                    self._collection,
                    points_selector=models.PointIdsList(points=[p.id for p in present]),
                )
            self._fingerprint = fingerprint
            self._write_mark(len(self))
        return len(present)

    # ------------------------------------------------------------------------------- helpers

    def _filter(self, exclude: set[int] | None = None) -> Any:
        from qdrant_client import models

        must: list[Any] = [
            models.FieldCondition(
                key="library", match=models.MatchValue(value=self._target.library_id)
            ),
            models.FieldCondition(
                key="encoder", match=models.MatchValue(value=self._target.encoder_id)
            ),
        ]
        must_not: list[Any] | None = (
            [models.FieldCondition(key="photo_id", match=models.MatchAny(any=sorted(exclude)))]
            if exclude
            else None
        )
        return models.Filter(must=must, must_not=must_not)

    def _upsert(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        from qdrant_client import models

        payloads = [
            {
                "photo_id": int(pid),
                "library": self._target.library_id,
                "encoder": self._target.encoder_id,
                "digest": digest,
            }
            for pid, digest in zip(ids.tolist(), _digests(vectors), strict=True)
        ]
        self._client.upsert(
            self._collection,
            points=models.Batch(
                ids=[point_id(self._target, int(pid)) for pid in ids.tolist()],
                vectors=vectors.tolist(),
                payloads=payloads,
            ),
            wait=True,
        )

    def _write_mark(self, count: int) -> None:
        from qdrant_client import models

        self._client.upsert(
            META_COLLECTION,
            points=[
                models.PointStruct(
                    id=_meta_id(self._target),
                    vector=[1.0],
                    payload={
                        "fingerprint": self._fingerprint,
                        "count": count,
                        "dim": self._dim,
                        "library": self._target.library_id,
                        "encoder": self._target.encoder_id,
                    },
                )
            ],
            wait=True,
        )


def _ensure_collection(client: Any, name: str, dim: int, *, server: bool = False) -> None:
    """Create ``name`` (cosine, ``dim``), on a server with indexes on the filter fields, once."""
    from qdrant_client import models

    if client.collection_exists(name):
        return
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
    )
    if server and name != META_COLLECTION:  # local mode has no payload indexes
        for field, schema in (
            ("library", models.PayloadSchemaType.KEYWORD),
            ("encoder", models.PayloadSchemaType.KEYWORD),
            ("photo_id", models.PayloadSchemaType.INTEGER),
        ):
            client.create_payload_index(name, field_name=field, field_schema=schema)
