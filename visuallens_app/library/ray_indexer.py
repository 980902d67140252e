"""Decode and embed on a Ray cluster, for archives too big for one machine's encoder.

:class:`RayEmbedder` plugs into :func:`~visuallens_app.library.indexer.index_folders` in place of
the local thread pool. Everything else stays the local indexer's: the scanner lists the files and
diffs them against the store, and every result comes back to this process, where the one store
writer commits it batch by batch. So a job killed at any moment resumes like a local one: the next
run's scan skips what was committed, and nothing is written twice.

On the cluster the files become a Ray Dataset; decode + encode is one ``map_batches`` over an
actor pool (each actor loads the encoder once), as many actors as the cluster has GPUs, or CPUs
when it has none. The workers read the photos at the paths this machine scanned, so the archive
must be mounted at the same path on every node (a NAS), and have this app installed.

ray is imported inside functions only (the ``scale`` extra).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.errors import LibraryError
from visuallens_app.library import thumbnails
from visuallens_app.library.decode import DecodedPhoto, DecodeError, PhotoMeta, decode_photo
from visuallens_app.library.indexer import BATCH_SIZE, _Decoded
from visuallens_app.library.paths import display_path
from visuallens_app.library.scan import ScannedFile
from visuallens_app.library.thumbnails import ThumbnailCache
from visuallens_app.models.base import SignalEncoder

log = logging.getLogger(__name__)

#: Environment the workers need to find the same code, caches and thread policy as this process.
_PASSED_ENV = (
    "VISUALLENS_CACHE_DIR",
    "VISUALLENS_TORCH_THREADS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
)


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise LibraryError(
            "Indexing on Ray needs the scale extra: pip install 'visuallens-studio[scale]'."
        ) from err
    return ray


class EmbedBatch:
    """The Ray actor's work: decode and embed one batch of files (one encoder per actor)."""

    def __init__(self, encoder_name: str, device: str, encoder_id: str, input_size: int) -> None:
        from visuallens_app.models.registry import load_encoder

        self.encoder = load_encoder(encoder_name, device=device).encoder
        if self.encoder.id != encoder_id:
            # Another machine's weights would put its vectors in another space: refuse.
            raise LibraryError(
                f"A Ray worker loaded the encoder {self.encoder.id}, not {encoder_id}: install "
                "the same encoder weights on every worker."
            )
        self.input_size = input_size

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Columns of the batch's files in, columns of what was found (and the vectors) out."""
        n = len(batch["fspath"])
        out: dict[str, list[Any]] = {key: [] for key in _RESULT_COLUMNS}
        images: list[Image.Image] = []
        rows: list[int] = []
        for i in range(n):
            path = Path(str(batch["fspath"][i]))
            try:
                photo = decode_photo(
                    path, target=self.input_size, expected_size=int(batch["size"][i])
                )
            except DecodeError as err:
                _append(out, error=str(err), transient=err.transient)
                continue
            gps = photo.meta.gps or (math.nan, math.nan)
            _append(
                out,
                ok=True,
                content_hash=photo.content_hash,
                width=photo.width,
                height=photo.height,
                format=photo.format,
                taken_at=photo.meta.taken_at or "",
                gps_lat=gps[0],
                gps_lon=gps[1],
                camera=photo.meta.camera or "",
                orientation=photo.meta.orientation,
                note=photo.note or "",
                # The very bytes the local indexer would write: the driver only stores them.
                thumbnail=thumbnails.encode(photo.thumbnail),
            )
            images.append(photo.image)
            rows.append(i)
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        # The classifier's confidence and document mass, as the local indexer stores them
        # (NaN: the encoder has none, e.g. CLIP).
        signals = np.full((n, 2), np.nan, np.float32)
        if images and isinstance(self.encoder, SignalEncoder):
            matrix, found = self.encoder.encode_images_with_signals(images)
            vectors[rows] = matrix
            signals[rows, 0] = found.confidence
            signals[rows, 1] = found.document
        elif images:
            vectors[rows] = self.encoder.encode_images(images)
        result: dict[str, NDArray[Any]] = {
            key: np.asarray(values, dtype=_RESULT_COLUMNS[key]) for key, values in out.items()
        }
        for key in ("fspath", "root", "size", "mtime_ns"):
            result[key] = np.asarray(batch[key])
        result["vector"] = vectors
        result["signals"] = signals
        return result


#: Result columns and their dtypes; strings are empty and GPS NaN when absent.
_RESULT_COLUMNS: dict[str, Any] = {
    "ok": bool,
    "error": object,
    "transient": bool,
    "content_hash": object,
    "width": np.int64,
    "height": np.int64,
    "format": object,
    "taken_at": object,
    "gps_lat": np.float64,
    "gps_lon": np.float64,
    "camera": object,
    "orientation": np.int64,
    "note": object,
    "thumbnail": object,
}
_EMPTY: dict[str, Any] = {
    "ok": False,
    "error": "",
    "transient": False,
    "content_hash": "",
    "width": 0,
    "height": 0,
    "format": "",
    "taken_at": "",
    "gps_lat": math.nan,
    "gps_lon": math.nan,
    "camera": "",
    "orientation": 1,
    "note": "",
    "thumbnail": b"",
}


def _append(out: dict[str, list[Any]], **values: Any) -> None:
    for key in _RESULT_COLUMNS:
        out[key].append(values.get(key, _EMPTY[key]))


class RayEmbedder:
    """An :data:`~visuallens_app.library.indexer.Embedder` that runs on a Ray cluster.

    Parameters
    ----------
    address
        A running cluster (``ray://HOST:10001``, ``HOST:6379``, ``auto``), or None to join the
        one this process already started or start one on this machine.
    encoder_name, device
        What each worker loads (``load_encoder``'s arguments); it must come out as
        ``encoder_id``, the encoder this process indexes with.
    thumbnails
        Where this process saves the thumbnails the workers send back.
    workers
        Actors to run; default: one per GPU of the cluster, else one per CPU.
    """

    def __init__(
        self,
        *,
        address: str | None,
        encoder_name: str,
        device: str,
        encoder_id: str,
        input_size: int,
        thumbnails: ThumbnailCache | None = None,
        workers: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.address = address
        self.encoder_name = encoder_name
        self.device = device
        self.encoder_id = encoder_id
        self.input_size = input_size
        self.thumbnails = thumbnails
        self.workers = workers
        self.batch_size = batch_size

    def __call__(self, files: Sequence[ScannedFile]) -> Iterator[_Decoded]:
        """Decode and embed ``files`` on the cluster; one result per file, as they finish."""
        if not files:
            return
        ray = _ray()
        started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as err:  # ConnectionError, TimeoutError, RuntimeError: one sentence
                where = self.address or "this machine"
                raise LibraryError(
                    f"Cannot start or reach the Ray cluster at {where}: {err}"
                ) from err
            started = True
        try:
            yield from self._run(ray, files)
        finally:
            if started:
                with contextlib.suppress(Exception):
                    ray.shutdown()

    def _run(self, ray: Any, files: Sequence[ScannedFile]) -> Iterator[_Decoded]:
        # Ray Data reports every execution at INFO; the indexer's own progress is what we show.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        workers = self.workers or max(1, gpus or int(resources.get("CPU", 1)))
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        # Workers import this very package, also when it runs from a checkout, not an install.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p
        )
        if gpus == 0:
            env.setdefault(
                "VISUALLENS_TORCH_THREADS", "1"
            )  # one CPU per actor, no oversubscription
        items = [
            {"fspath": f.fspath, "root": str(f.root), "size": f.size, "mtime_ns": f.mtime_ns}
            for f in files
        ]
        blocks = max(1, min(-(-len(items) // self.batch_size), 4 * workers, 1000))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        embedded = dataset.map_batches(
            EmbedBatch,
            fn_constructor_kwargs={
                "encoder_name": self.encoder_name,
                "device": self.device,
                "encoder_id": self.encoder_id,
                "input_size": self.input_size,
            },
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
            runtime_env={"env_vars": env},
        )
        try:
            for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                yield from self._results(batch)
        except LibraryError:
            raise
        except Exception as err:  # a worker that died for good, or an actor that failed to load
            cause: BaseException = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            reason = " ".join(str(cause).split())[:200]
            raise LibraryError(
                f"The Ray job stopped ({type(cause).__name__}: {reason}); "
                "every batch already written is kept: run the same command again to continue."
            ) from err

    def _results(self, batch: dict[str, NDArray[Any]]) -> Iterator[_Decoded]:
        for i in range(len(batch["fspath"])):
            file = ScannedFile(
                str(batch["fspath"][i]),
                Path(str(batch["root"][i])),
                int(batch["size"][i]),
                int(batch["mtime_ns"][i]),
            )
            if not bool(batch["ok"][i]):
                yield _Decoded(file, None, str(batch["error"][i]), bool(batch["transient"][i]))
                continue
            jpeg = bytes(batch["thumbnail"][i])
            thumbnail = Image.open(io.BytesIO(jpeg))
            thumbnail.load()
            content_hash = str(batch["content_hash"][i])
            if self.thumbnails is not None and not self.thumbnails.has(content_hash):
                try:
                    self.thumbnails.save_encoded(content_hash, jpeg)
                except OSError as err:  # a cache: a full or read-only disk must not stop indexing
                    log.warning(
                        "Cannot write the thumbnail of %s: %s", display_path(file.path), err
                    )
            lat, lon = float(batch["gps_lat"][i]), float(batch["gps_lon"][i])
            photo = DecodedPhoto(
                image=thumbnail,  # never encoded again: the vector came with it
                thumbnail=thumbnail,
                width=int(batch["width"][i]),
                height=int(batch["height"][i]),
                content_hash=content_hash,
                meta=PhotoMeta(
                    taken_at=str(batch["taken_at"][i]) or None,
                    gps=None if math.isnan(lat) else (lat, lon),
                    camera=str(batch["camera"][i]) or None,
                    orientation=int(batch["orientation"][i]),
                ),
                format=str(batch["format"][i]),
                note=str(batch["note"][i]) or None,
            )
            vector = np.asarray(batch["vector"][i], dtype=np.float32)
            confidence, document = (float(x) for x in batch["signals"][i])
            signals = None if math.isnan(confidence) else (confidence, document)
            yield _Decoded(file, photo, None, vector=vector, signals=signals)
