"""The contract every long job follows: a generator of Progress records checking a CancelToken.

The CLI wraps the generator in a progress bar; the GUI runs it on a worker thread and forwards each
record as a signal. Neither front-end knows anything else about the job. A job may also yield
:class:`Partial` results between its progress records (a streamed token, a finished sweep cell, a
scored caption): the GUI forwards them to the panel that started the job, the CLI to a callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

from visuallens_app.errors import Cancelled


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a long job: ``done`` of ``total`` units (``total`` 0 when unknown)."""

    done: int
    total: int
    message: str = ""
    rate: float = 0.0  # units per second, over the whole run so far
    stage: str = ""
    unit: str = "photos"  # what done and total count: photos, captions, tokens, cells...

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


class CancelToken:
    """Thread-safe cancel and pause flags that a job checks between batches."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()  # a paused job must wake up to notice

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def check(self) -> None:
        """Block while paused; raise :class:`Cancelled` once cancelled."""
        self._running.wait()
        if self._cancelled.is_set():
            raise Cancelled


#: The stage of reading a catalog's descriptions the library has not embedded yet (the
#: lens's first question about a large catalog): named here, where the CLI's and the window's
#: progress displays can read it without importing the lens.
CATALOG_STAGE = "catalog"


class ProgressMeter:
    """Builds Progress records with a rate, and says when one is worth emitting (~10 per second)."""

    def __init__(
        self, total: int, stage: str = "", min_interval: float = 0.1, unit: str = "photos"
    ) -> None:
        self.total = total
        self.stage = stage
        self.unit = unit
        self.done = 0
        self._start = time.monotonic()
        self._last_emit = -1e9
        self._min_interval = min_interval

    def advance(self, n: int = 1) -> None:
        self.done += n

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last_emit >= self._min_interval or self.done >= self.total > 0:
            self._last_emit = now
            return True
        return False

    def progress(self, message: str = "") -> Progress:
        elapsed = max(1e-9, time.monotonic() - self._start)
        return Progress(self.done, self.total, message, self.done / elapsed, self.stage, self.unit)


class Partial:
    """Base of a job's partial results: what a panel shows before the job has finished."""

    __slots__ = ()


R = TypeVar("R")

#: A long job: yields Progress, returns its result (``return`` value of the generator).
Job = Generator[Progress, None, R]

#: A long job that also yields partial results (a ``Job`` is one that yields none).
StreamingJob = Generator[Progress | Partial, None, R]


def run_to_end(job: StreamingJob[R]) -> R:
    """Run a job to the end, ignoring its progress, and return its result."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
