"""The library store: SQLite (via sqlite-utils) is the source of truth, vectors included.

Photos are rows keyed by path; vectors are keyed by (content hash, encoder id), so a renamed or
moved photo keeps its vector and two encoders never share a space. Every write batch is one
transaction, which is what makes an indexing run resumable after a kill at any moment.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from visuallens_app._sqlite_utils import Migrations, sqlite_utils
from visuallens_app.errors import LibraryError
from visuallens_app.library.paths import path_from_db, path_to_db
from visuallens_app.library.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

DB_NAME = "library.sqlite"

migrations = Migrations("visuallens.library")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE roots (
            path TEXT PRIMARY KEY,
            added_at TEXT NOT NULL,
            last_scan_at TEXT
        );
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            root TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,
            taken_at TEXT,
            gps_lat REAL,
            gps_lon REAL,
            camera TEXT,
            orientation INTEGER NOT NULL DEFAULT 1,
            state TEXT NOT NULL DEFAULT 'ok',
            added_at TEXT NOT NULL
        );
        CREATE INDEX photos_root ON photos(root);
        CREATE INDEX photos_hash ON photos(content_hash);
        CREATE INDEX photos_taken ON photos(taken_at);
        CREATE TABLE vectors (
            content_hash TEXT NOT NULL,
            encoder_id TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (content_hash, encoder_id)
        ) WITHOUT ROWID;
        CREATE TABLE encoders (
            id TEXT PRIMARY KEY,
            dim INTEGER NOT NULL,
            first_used_at TEXT NOT NULL
        );
        CREATE TABLE failures (
            path TEXT PRIMARY KEY,
            root TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta (key, value) VALUES ('generation', '0');
        """
    )


@migrations()
def m002_narrow_vector_keys(db: sqlite_utils.Database) -> None:
    # Rows of `vectors` carry ~1.5 KB blobs, so probing them for "has this photo a vector from
    # this encoder" reads many sparse pages; this narrow covering index answers it alone.
    db.execute("CREATE INDEX vectors_by_encoder ON vectors(encoder_id, content_hash)")


@migrations()
def m003_library_id_and_sort_key(db: sqlite_utils.Database) -> None:
    # A random id per database: a derived FAISS file must never be trusted by a re-created
    # database whose counters happen to match the old one.
    db.execute("INSERT INTO meta (key, value) VALUES ('library_id', ?)", [uuid.uuid4().hex])
    # The timeline order: capture time, else file time, so undated photos (screenshots,
    # downloads) sit where they were made instead of after every dated photo.
    db.execute("ALTER TABLE photos ADD COLUMN sort_key TEXT NOT NULL DEFAULT ''")
    db.execute(
        "UPDATE photos SET sort_key = coalesce(taken_at, "
        "strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1e9, 'unixepoch'))"
    )
    db.execute("CREATE INDEX photos_sort ON photos(sort_key, id)")


@migrations()
def m004_photo_signals(db: sqlite_utils.Database) -> None:
    # What the encoder's classifier said about a photo beyond its vector: the top class's
    # probability and the mass on document-like classes (issue 10). NULL where the encoder has
    # no classifier (CLIP) or the vector predates this migration; the lens reads NULL as unknown.
    db.execute("ALTER TABLE vectors ADD COLUMN confidence REAL")
    db.execute("ALTER TABLE vectors ADD COLUMN document REAL")


@migrations()
def m005_query_cache(db: sqlite_utils.Database) -> None:
    # Embeddings of search texts, so that a repeated query needs no text model at all (issue 13).
    # Keyed by encoder id: an encoder whose vectors change has a new id and never reads these.
    db.execute(
        "CREATE TABLE query_vectors (encoder_id TEXT NOT NULL, text TEXT NOT NULL, "
        "vector BLOB NOT NULL, used_at REAL NOT NULL, PRIMARY KEY (encoder_id, text))"
    )
    db.execute("CREATE INDEX query_vectors_by_use ON query_vectors(used_at)")


#: How many search texts' embeddings a library keeps (the newest), and the longest text kept.
QUERY_CACHE_ROWS = 2000
QUERY_CACHE_MAX_CHARS = 1000


@dataclass(frozen=True, slots=True)
class PhotoRecord:
    """One photo as the rest of the app sees it."""

    id: int
    path: Path
    root: Path
    size: int
    mtime_ns: int
    content_hash: str
    width: int
    height: int
    format: str
    taken_at: str | None
    gps: tuple[float, float] | None
    camera: str | None
    state: str  # "ok" or "offline" (its folder is not reachable right now)

    @property
    def offline(self) -> bool:
        return self.state == "offline"


@dataclass(frozen=True, slots=True)
class NewPhoto:
    """A decoded photo ready to be written (the indexer builds these)."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    content_hash: str
    width: int
    height: int
    format: str
    taken_at: str | None = None
    gps: tuple[float, float] | None = None
    camera: str | None = None
    orientation: int = 1


@dataclass(frozen=True, slots=True)
class Failure:
    path: Path
    root: Path
    size: int
    mtime_ns: int
    reason: str


def encoder_key(encoder_id: str) -> str:
    """A short, file-name-safe key for an encoder id (index files, fingerprints)."""
    return hashlib.blake2b(encoder_id.encode(), digest_size=8).hexdigest()


def _photo_filter(
    root: Path | None, date_from: str | None, date_to: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of a folder and capture-date filter."""
    clauses: list[str] = []
    args: list[Any] = []
    if root is not None:
        # A photo folder or any folder inside one: everything under it, by a range on the
        # path index ("/a/b/" <= path < "/a/b0", as "0" follows "/").
        prefix = path_to_db(root).rstrip(os.sep) + os.sep
        clauses.append("(root = ? OR (path >= ? AND path < ?))")
        args += [path_to_db(root), prefix, prefix[:-1] + chr(ord(os.sep) + 1)]
    if date_from:
        clauses.append("taken_at >= ?")
        args.append(date_from)
    if date_to:
        clauses.append("taken_at <= ?")
        args.append(date_to + "\uffff" if len(date_to) == 10 else date_to)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _finite_or_null(pair: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """A signals pair as SQL values: NaN or missing becomes NULL."""
    if pair is None:
        return None, None
    confidence, document = (float(x) for x in pair)
    return (
        confidence if np.isfinite(confidence) else None,
        document if np.isfinite(document) else None,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(row: dict[str, Any]) -> PhotoRecord:
    lat, lon = row["gps_lat"], row["gps_lon"]
    return PhotoRecord(
        id=row["id"],
        path=path_from_db(row["path"]),
        root=path_from_db(row["root"]),
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        content_hash=row["content_hash"],
        width=row["width"],
        height=row["height"],
        format=row["format"],
        taken_at=row["taken_at"],
        gps=(lat, lon) if lat is not None and lon is not None else None,
        camera=row["camera"],
        state=row["state"],
    )


_SNAPSHOT_VERSION = 1


def _read_snapshot(path: Path, stamp: str) -> dict[str, tuple[int, int, int]] | None:
    """A known-files snapshot taken at fingerprint ``stamp``, or None (missing, stale, damaged)."""
    try:
        version, taken_at, known = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if version != _SNAPSHOT_VERSION or taken_at != stamp or not isinstance(known, dict):
        return None
    return known


def _write_snapshot(path: Path, stamp: str, known: dict[str, tuple[int, int, int]]) -> None:
    """Save a known-files snapshot atomically; a cache, so a write that fails is ignored."""
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(marshal.dumps((_SNAPSHOT_VERSION, stamp, known)))
        os.replace(tmp, path)
    except OSError as err:
        log.info("Scan snapshot not saved: %s", err)
        tmp.unlink(missing_ok=True)


def apply_migrations(
    db: sqlite_utils.Database, migration_set: Migrations, attempts: int = 100
) -> None:
    """Apply ``migration_set``'s pending migrations, safely when several openers race.

    Two openers of a brand-new library (the GUI's indexer and grid, or the GUI and a CLI run)
    race here. Migrations run inside one ``BEGIN IMMEDIATE`` transaction, so the second opener
    waits for the first and then finds nothing pending. A "database is locked" answered at once
    (SQLite does so for some lock upgrades instead of waiting on the busy timeout) is retried.
    """
    for attempt in range(attempts):
        try:
            if not migration_set.pending(db):
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                migration_set.apply(db)  # each migration is a savepoint inside this transaction
            except BaseException:
                db.rollback()
                raise
            db.commit()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            db.rollback()
            time.sleep(0.05)


def _prepare(db: sqlite_utils.Database, attempts: int = 100) -> None:
    """WAL mode (retried: switching can answer "locked" at once), then the library schema."""
    for attempt in range(attempts):
        try:
            db.enable_wal()
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")
    apply_migrations(db, migrations)


#: How many problems ``PRAGMA quick_check`` lists at most: enough to say "many".
_QUICK_CHECK_LIMIT = 20


def integrity_evidence(path: Path) -> str:
    """What SQLite's ``PRAGMA quick_check`` finds in the database at ``path``, as a clause.

    Run when opening fails as "malformed", so the sentence says what SQLite itself found
    (how many problems, the first one) instead of only repeating the error. Read-only, and
    O(database size): seconds at most, and only on this failure path.
    """
    from visuallens_app.errors import first_sentence

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA quick_check({_QUICK_CHECK_LIMIT})")]
        finally:
            conn.close()
    except sqlite3.Error as err:
        return f"SQLite's integrity check cannot read it at all: {first_sentence(err)}"
    # One row may hold several lines, headed "*** in database main ***".
    problems = [
        line.strip()
        for row in rows
        for line in row.splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if problems == ["ok"] or not problems:
        return "SQLite's integrity check (quick_check) finds no damage in the page structure"
    many = len(rows) >= _QUICK_CHECK_LIMIT
    count = f"at least {len(problems)}" if many else str(len(problems))
    return (
        f"SQLite's integrity check (quick_check) finds {count} "
        f"problem{'s' if problems[1:] else ''}, the first: {problems[0].rstrip('.')}"
    )


class PhotoStore:
    """One library directory: ``library.sqlite``, the FAISS files and the thumbnail cache.

    A store object belongs to the thread that opened it (SQLite connections are per thread);
    other threads open their own. WAL mode lets readers run while the indexer writes.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        #: Sentences about this library the user should hear once (printed by the CLI).
        self.warnings: list[str] = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._warn_if_lost()
            conn = sqlite3.connect(self.directory / DB_NAME, timeout=30.0)
            self.db = sqlite_utils.Database(conn)
            _prepare(self.db)
        except sqlite3.DatabaseError as err:
            from visuallens_app.errors import damaged_library_sentence, is_damaged_database

            if is_damaged_database(err):
                path = self.directory / DB_NAME
                raise LibraryError(
                    damaged_library_sentence(path, integrity_evidence(path))
                ) from err
            raise LibraryError(
                f"Cannot open the photo library at {self.directory}: {err}. "
                "Choose another location with --library or check the disk."
            ) from err
        except (OSError, sqlite3.Error) as err:
            raise LibraryError(
                f"Cannot open the photo library at {self.directory}: {err}. "
                "Choose another location with --library or check the disk."
            ) from err
        self.thumbnails = ThumbnailCache(self.directory / "thumbnails")
        self.index_dir = self.directory / "index"

    def _warn_if_lost(self) -> None:
        """A 0-byte database beside thumbnails or an index was a library once: say it is gone
        (SQLite would silently start an empty one in its place)."""
        path = self.directory / DB_NAME
        if not path.is_file() or path.stat().st_size > 0:
            return
        traces = [
            d
            for d in (self.directory / "thumbnails", self.directory / "index")
            if d.is_dir() and any(d.iterdir())
        ]
        if traces:
            message = (
                f"The library database {path} was empty (0 bytes) although its thumbnails and "
                "index are there, so the library was lost (a crash or a disk problem); a new "
                "one is started: index your folders again (the photos themselves are untouched)."
            )
            log.warning(message)
            self.warnings.append(message)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- roots -------------------------------------------------------------------------------

    def add_roots(self, roots: Iterable[Path]) -> None:
        with self.db.atomic():
            for root in roots:
                self.db.execute(
                    "INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)",
                    [path_to_db(root), _now()],
                )

    def roots(self) -> list[Path]:
        return [path_from_db(r[0]) for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def photo_folders(self) -> list[Path]:
        """Every folder under the roots that holds photos, directly or deeper, sorted; the
        roots themselves included. For the folder filter (one query over the path index)."""
        # rtrim(path, <path without separators>) strips the file name. Paths stored as raw
        # bytes (names that are not UTF-8) are base64, so they keep their whole text here.
        rows = self.db.execute(
            "SELECT DISTINCT root, CASE WHEN path LIKE 'fsb64:%' THEN path "
            "ELSE rtrim(path, replace(path, ?, '')) END FROM photos",
            [os.sep],
        ).fetchall()
        folders: set[Path] = set()
        for root_text, text in rows:
            root = path_from_db(root_text)
            if text.startswith("fsb64:"):
                folder = path_from_db(text).parent
            else:
                folder = path_from_db(text.rstrip(os.sep))
            folders.add(root)
            if folder.is_relative_to(root):
                while folder != root and folder not in folders:
                    folders.add(folder)
                    folder = folder.parent
        return sorted(folders)

    def remove_root(self, root: Path) -> int:
        """Forget a folder and its photos (vectors stay, keyed by content, for a later re-add)."""
        key = path_to_db(root)
        with self.db.atomic():
            n = self.db.execute("DELETE FROM photos WHERE root = ?", [key]).rowcount
            self.db.execute("DELETE FROM failures WHERE root = ?", [key])
            self.db.execute("DELETE FROM roots WHERE path = ?", [key])
            self._bump()
        return int(n)

    def set_root_state(self, root: Path, state: str) -> int:
        """Mark every photo under ``root`` ``ok`` or ``offline``; returns how many changed."""
        with self.db.atomic():
            n = self.db.execute(
                "UPDATE photos SET state = ? WHERE root = ? AND state != ?",
                [state, path_to_db(root), state],
            ).rowcount
            if n:
                self._bump()
        return int(n)

    def mark_scanned(self, root: Path) -> None:
        self.db.execute(
            "UPDATE roots SET last_scan_at = ? WHERE path = ?", [_now(), path_to_db(root)]
        )
        self.db.conn.commit()

    # -- what is known (for incremental scans) -------------------------------------------------

    def known_files(self, root: Path, encoder_id: str) -> dict[str, tuple[int, int, int]]:
        """Photos under ``root``: database path -> (size, mtime_ns, has a vector from encoder).

        Plain tuples: a re-scan compares 10,000s of these against the disk and must cost little
        more than walking the folder. Unchanged means ``(size, mtime_ns, 1)``. The answer is
        also kept as a snapshot file, trusted only while the library's fingerprint (which every
        write changes) is the one it was taken at: reading it is a tenth of the queries' time
        (issue 13, benchmarks/bench_index.py's re-scan).
        """
        snapshot = (
            self.directory
            / "scan-cache"
            / (
                "known-"
                + hashlib.sha256(f"{path_to_db(root)}\0{encoder_id}".encode()).hexdigest()[:20]
            )
        )
        conn = self.db.conn
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")  # the fingerprint and the rows from one consistent state
        try:
            # The rows' count and last id too: a database recovered or restored from a backup
            # may keep its generation counter while it lost photos, which must be found again.
            count, last = conn.execute(
                "SELECT count(*), max(id) FROM photos WHERE root = ?", [path_to_db(root)]
            ).fetchone()
            stamp = f"{self.fingerprint(encoder_id)}-{count}-{last}"
            cached = _read_snapshot(snapshot, stamp)
            if cached is not None:
                return cached
            # Two plain reads and a set lookup: half the time of one query with a correlated
            # EXISTS per photo.
            with_vector = self.hashes_with_vectors(encoder_id)
            rows = conn.execute(
                "SELECT path, size, mtime_ns, content_hash FROM photos WHERE root = ?",
                [path_to_db(root)],
            )
            known = {
                path: (size, mtime, 1 if digest in with_vector else 0)
                for path, size, mtime, digest in rows
            }
        finally:
            if own:
                conn.rollback()  # nothing was written
        _write_snapshot(snapshot, stamp, known)
        return known

    def known_failures(self, root: Path) -> dict[str, tuple[int, int]]:
        """Files under ``root`` that failed before, with the (size, mtime) they failed at."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns FROM failures WHERE root = ?", [path_to_db(root)]
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    def hashes_with_vectors(self, encoder_id: str) -> set[str]:
        rows = self.db.execute(
            "SELECT content_hash FROM vectors WHERE encoder_id = ?", [encoder_id]
        )
        return {row[0] for row in rows}

    # -- writes ------------------------------------------------------------------------------

    def write_batch(
        self,
        photos: Sequence[NewPhoto],
        vectors: dict[str, NDArray[np.float32]],
        encoder_id: str,
        failures: Sequence[Failure] = (),
        signals: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        """Write one batch in one transaction: photo rows, their vectors, and failures.

        ``signals`` maps a content hash to its (confidence, document) classifier signals,
        stored beside the vector (NULL for hashes without one).
        """
        now = _now()
        with self.db.atomic():
            if vectors:
                dim = len(next(iter(vectors.values())))
                self.db.execute(
                    "INSERT OR IGNORE INTO encoders (id, dim, first_used_at) VALUES (?, ?, ?)",
                    [encoder_id, dim, now],
                )
                known = signals or {}
                self.db.conn.executemany(
                    "INSERT OR REPLACE INTO vectors "
                    "(content_hash, encoder_id, vector, confidence, document) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            h,
                            encoder_id,
                            np.asarray(v, dtype=np.float32).tobytes(),
                            *_finite_or_null(known.get(h)),
                        )
                        for h, v in vectors.items()
                    ],
                )
            self.db.conn.executemany(
                """
                INSERT INTO photos (path, root, size, mtime_ns, content_hash, width, height,
                    format, taken_at, gps_lat, gps_lon, camera, orientation, state, added_at,
                    sort_key)
                SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'ok', ?14,
                    coalesce(?9, strftime('%Y-%m-%dT%H:%M:%S', ?4 / 1e9, 'unixepoch'))
                -- A folder removed while it was being indexed must not come back as orphans.
                WHERE EXISTS (SELECT 1 FROM roots WHERE path = ?2)
                ON CONFLICT(path) DO UPDATE SET
                    root = excluded.root, size = excluded.size, mtime_ns = excluded.mtime_ns,
                    content_hash = excluded.content_hash, width = excluded.width,
                    height = excluded.height, format = excluded.format,
                    taken_at = excluded.taken_at, gps_lat = excluded.gps_lat,
                    gps_lon = excluded.gps_lon, camera = excluded.camera,
                    orientation = excluded.orientation, state = 'ok',
                    sort_key = excluded.sort_key
                """,
                [
                    (
                        path_to_db(p.path),
                        path_to_db(p.root),
                        p.size,
                        p.mtime_ns,
                        p.content_hash,
                        p.width,
                        p.height,
                        p.format,
                        p.taken_at,
                        p.gps[0] if p.gps else None,
                        p.gps[1] if p.gps else None,
                        p.camera,
                        p.orientation,
                        now,
                    )
                    for p in photos
                ],
            )
            if photos:
                self.db.conn.executemany(
                    "DELETE FROM failures WHERE path = ?", [(path_to_db(p.path),) for p in photos]
                )
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO failures (path, root, size, mtime_ns, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (path_to_db(f.path), path_to_db(f.root), f.size, f.mtime_ns, f.reason, now)
                    for f in failures
                ],
            )
            if failures:
                self.db.conn.executemany(
                    "DELETE FROM photos WHERE path = ?", [(path_to_db(f.path),) for f in failures]
                )
            self._bump()

    def add_vectors(self, vectors: dict[str, NDArray[np.float32]], encoder_id: str) -> None:
        """Vectors for photos already stored (after switching encoder)."""
        self.write_batch((), vectors, encoder_id)

    def remove_paths(self, paths_db: Iterable[str]) -> int:
        """Delete photos (and stale failures) by database path text; vectors stay for moves."""
        keys = [(p,) for p in paths_db]
        if not keys:
            return 0
        with self.db.atomic():
            before = self.db.conn.total_changes
            self.db.conn.executemany("DELETE FROM photos WHERE path = ?", keys)
            removed = self.db.conn.total_changes - before
            self.db.conn.executemany("DELETE FROM failures WHERE path = ?", keys)
            self._bump()
        return int(removed)

    def prune_orphans(self) -> int:
        """Drop vectors and thumbnails no photo refers to any more; returns how many went.

        Called after a sweep: by then a photo moved within the run has its new row, so only
        content that left the library for good is pruned.
        """
        gone = [
            row[0]
            for row in self.db.execute(
                "SELECT DISTINCT content_hash FROM vectors v WHERE NOT EXISTS "
                "(SELECT 1 FROM photos p WHERE p.content_hash = v.content_hash)"
            )
        ]
        with self.db.atomic():
            self.db.conn.executemany(
                "DELETE FROM vectors WHERE content_hash = ?", [(h,) for h in gone]
            )
        for content_hash in gone:
            self.thumbnails.remove(content_hash)
        return len(gone)

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    # -- reads -------------------------------------------------------------------------------

    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def library_id(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'library_id'").fetchone()
        return str(row[0])

    def fingerprint(self, encoder_id: str) -> str:
        """Changes whenever the vectors searchable under ``encoder_id`` may have changed.

        Every write bumps the generation; the library id tells two databases apart.
        """
        return f"{self.library_id()}-{encoder_key(encoder_id)}-{self.generation()}"

    def vectors(self, encoder_id: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """All photos with a vector from ``encoder_id``: (photo ids, (n, dim) matrix)."""
        rows = self.db.execute(
            "SELECT p.id, v.vector FROM photos p JOIN vectors v ON v.content_hash = p.content_hash "
            "WHERE v.encoder_id = ? ORDER BY p.id",
            [encoder_id],
        ).fetchall()
        dim = self.encoder_dim(encoder_id)
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim or 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
            len(rows), -1
        )
        return ids, matrix.copy()

    def photo_signals(self, encoder_id: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Per photo with a vector from ``encoder_id`` (the rows and order of :meth:`vectors`):
        (photo ids, (n, 2) confidence and document signals, NaN where unknown)."""
        rows = self.db.execute(
            "SELECT p.id, v.confidence, v.document FROM photos p "
            "JOIN vectors v ON v.content_hash = p.content_hash "
            "WHERE v.encoder_id = ? ORDER BY p.id",
            [encoder_id],
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values = np.array(
            [[np.nan if r[1] is None else r[1], np.nan if r[2] is None else r[2]] for r in rows],
            dtype=np.float32,
        ).reshape(len(rows), 2)
        return ids, values

    def vector_for_hash(self, content_hash: str, encoder_id: str) -> NDArray[np.float32] | None:
        row = self.db.execute(
            "SELECT vector FROM vectors WHERE content_hash = ? AND encoder_id = ?",
            [content_hash, encoder_id],
        ).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def query_vector(self, encoder_id: str, text: str) -> NDArray[np.float32] | None:
        """The cached embedding of search ``text`` by ``encoder_id``, or None."""
        try:
            row = self.db.execute(
                "SELECT vector FROM query_vectors WHERE encoder_id = ? AND text = ?",
                [encoder_id, text],
            ).fetchone()
        except sqlite3.Error:  # a cache: a locked or damaged table means "not cached"
            return None
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def remember_query_vector(
        self, encoder_id: str, text: str, vector: NDArray[np.float32]
    ) -> None:
        """Cache the embedding of search ``text``, dropping the oldest beyond ``QUERY_CACHE_ROWS``;
        a library that cannot be written to simply does not cache."""
        if len(text) > QUERY_CACHE_MAX_CHARS:
            return
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        try:
            with self.db.atomic():
                self.db.execute(
                    "INSERT OR REPLACE INTO query_vectors (encoder_id, text, vector, used_at) "
                    "VALUES (?, ?, ?, ?)",
                    [encoder_id, text, blob, time.time()],
                )
                self.db.execute(
                    "DELETE FROM query_vectors WHERE rowid IN (SELECT rowid FROM query_vectors "
                    "ORDER BY used_at DESC LIMIT -1 OFFSET ?)",
                    [QUERY_CACHE_ROWS],
                )
        except sqlite3.Error as err:
            log.info("Search text not cached: %s", err)

    def encoder_dim(self, encoder_id: str) -> int | None:
        row = self.db.execute("SELECT dim FROM encoders WHERE id = ?", [encoder_id]).fetchone()
        return None if row is None else int(row[0])

    def encoders(self) -> dict[str, int]:
        """Encoder id -> number of photos with a vector from it."""
        rows = self.db.execute(
            "SELECT v.encoder_id, count(*) FROM photos p JOIN vectors v "
            "ON v.content_hash = p.content_hash GROUP BY v.encoder_id"
        )
        return {row[0]: int(row[1]) for row in rows}

    def counts(self) -> dict[str, int]:
        """Photos by state, plus failures."""
        out = {"ok": 0, "offline": 0}
        for state, n in self.db.execute("SELECT state, count(*) FROM photos GROUP BY state"):
            out[state] = int(n)
        out["failed"] = int(self.db.execute("SELECT count(*) FROM failures").fetchone()[0])
        return out

    def photo(self, photo_id: int) -> PhotoRecord | None:
        rows = self._select("WHERE id = ?", [photo_id])
        return rows[0] if rows else None

    def photos_by_id(self, ids: Sequence[int]) -> dict[int, PhotoRecord]:
        out: dict[int, PhotoRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for rec in self._select(f"WHERE id IN ({marks})", chunk):
                out[rec.id] = rec
        return out

    def photo_by_path(self, path: Path) -> PhotoRecord | None:
        rows = self._select("WHERE path = ?", [path_to_db(path)])
        return rows[0] if rows else None

    def list_photos(
        self,
        *,
        root: Path | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        newest_first: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PhotoRecord]:
        """Photos filtered by folder and capture-date range (ISO strings, inclusive)."""
        where, args = _photo_filter(root, date_from, date_to)
        direction = "DESC" if newest_first else "ASC"
        order = f"ORDER BY sort_key {direction}, id {direction}"
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        return self._select(f"{where} {order}{page}", args)

    def count_photos(
        self,
        *,
        root: Path | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
    ) -> int:
        """How many photos :meth:`list_photos` shows for the same filters (one COUNT)."""
        where, args = _photo_filter(root, date_from, date_to)
        return int(self.db.execute(f"SELECT count(*) FROM photos {where}", args).fetchone()[0])

    def failures(self, roots: Sequence[Path] | None = None) -> list[tuple[Path, str]]:
        """Unreadable files with their reasons, all of them or those under ``roots``."""
        if roots is None:
            rows = self.db.execute("SELECT path, reason FROM failures ORDER BY path")
        else:
            keys = [path_to_db(r) for r in roots]
            marks = ",".join("?" * len(keys))
            rows = self.db.execute(
                f"SELECT path, reason FROM failures WHERE root IN ({marks}) ORDER BY path", keys
            )
        return [(path_from_db(r[0]), r[1]) for r in rows]

    def _select(self, tail: str, args: Sequence[Any]) -> list[PhotoRecord]:
        cursor = self.db.execute(f"SELECT * FROM photos {tail}", list(args))
        names = [d[0] for d in cursor.description]
        return [_record(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
