"""A small job runner: core generators on a QThreadPool, with only signals crossing threads.

A task is a plain callable ``task(ctx) -> result`` where ``ctx`` is a :class:`JobContext` (its
CancelToken and a ``report(progress)`` callable). When the task returns a generator (every long
core job is one), the runner drives it, forwarding each yielded Progress as a signal throttled to
about ten per second and each :class:`~visuallens_app.jobs.Partial` result as it comes, and takes
the generator's return value as the result.

Keyed jobs: starting a job under a key that is still running cancels the older one, whose late
result is dropped; that is how a new search supersedes the previous one. A *lane* is one
dedicated worker thread: jobs that keep state on their thread between runs (an open store, a
loaded FAISS index) run there, one after another. On quit,
:meth:`JobRunner.shutdown` cancels everything and waits. :func:`wait_for_all_pools` lets tests
assert that no worker thread is left behind.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from visuallens_app.errors import Cancelled, VisualLensError, user_message
from visuallens_app.jobs import CancelToken, Partial, Progress

log = logging.getLogger(__name__)

#: Minimum seconds between two progress signals of one job.
PROGRESS_INTERVAL = 0.1

_pools: weakref.WeakSet[QThreadPool] = weakref.WeakSet()


def register_pool(pool: QThreadPool) -> QThreadPool:
    """Remember a pool so that :func:`wait_for_all_pools` can check it drained."""
    _pools.add(pool)
    return pool


def wait_for_all_pools(timeout_ms: int = 10_000) -> bool:
    """Wait until every registered pool is idle; False if one still has a running thread."""
    deadline = time.monotonic() + timeout_ms / 1000
    for pool in list(_pools):
        left = max(0, int((deadline - time.monotonic()) * 1000))
        if not pool.waitForDone(left):
            return False
    return all(pool.activeThreadCount() == 0 for pool in list(_pools))


#: Niceness of worker threads: background work yields the CPU to the UI thread first.
WORKER_NICENESS = 10
_niced = threading.local()


def lower_thread_priority(niceness: int = WORKER_NICENESS) -> None:
    """Make the calling worker thread nicer than the UI thread (Linux: per-thread nice).

    Threads it starts later (the indexer's decoders, torch's pool when the model loads here)
    inherit it. Elsewhere a no-op: Qt's thread priorities do not apply to ordinary threads.
    """
    if getattr(_niced, "value", 0) >= niceness:
        return
    _niced.value = niceness
    import os
    import sys

    if sys.platform.startswith("linux"):
        try:
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            if current < niceness:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:
            pass


class JobContext:
    """What a task sees of its job: the cancel token and a thread-safe progress reporter."""

    def __init__(self, cancel: CancelToken, report: Callable[[Progress], None]) -> None:
        self.cancel = cancel
        self.report = report


class Job(QObject):
    """One run of a task. Lives on the UI thread; its public signals are emitted there.

    The worker emits private signals that are connected when the job is made, so they are
    queued to the UI thread whatever the timing, and re-emitted there as the public ones: a
    caller that connects right after :meth:`JobRunner.start` never misses an outcome, even when
    the task finished before it connected.
    """

    progress_changed = Signal(object)  # Progress
    partial_result = Signal(object)  # a jobs.Partial: a streamed token, a finished cell...
    succeeded = Signal(object)  # the task's result
    failed = Signal(str)  # one sentence for the user
    cancelled = Signal()
    finished = Signal()  # always last, whatever the outcome

    _progressed = Signal(object)
    _partial = Signal(object)
    _ended = Signal(str, object)

    def __init__(
        self,
        key: str,
        task: Callable[[JobContext], Any],
        parent: QObject | None = None,
        *,
        lane: str = "",
    ) -> None:
        super().__init__(parent)
        self.key = key
        self.task = task
        self.lane = lane
        self.token = CancelToken()
        self.done = False
        self.outcome = ""
        self._last_emit = 0.0
        self._held: Progress | None = None  # the newest progress the throttle held back
        self._progressed.connect(self._relay_progress)
        self._partial.connect(self._relay_partial)
        self._ended.connect(self._relay_end)

    # -- controls (UI thread) --------------------------------------------------------------
    def cancel(self) -> None:
        self.token.cancel()

    def pause(self) -> None:
        self.token.pause()

    def resume(self) -> None:
        self.token.resume()

    @property
    def paused(self) -> bool:
        return self.token.paused

    @Slot(object)
    def _relay_progress(self, progress: Progress) -> None:
        if not self.done:
            self.progress_changed.emit(progress)

    @Slot(object)
    def _relay_partial(self, partial: Partial) -> None:
        if not self.done and not self.token.cancelled:
            self.partial_result.emit(partial)

    @Slot(str, object)
    def _relay_end(self, outcome: str, value: Any) -> None:
        self.outcome = outcome
        if outcome == "succeeded":
            self.succeeded.emit(value)
        elif outcome == "failed":
            self.failed.emit(value)
        else:
            self.cancelled.emit()
        self.done = True
        self.finished.emit()

    # -- worker side -----------------------------------------------------------------------
    def _report(self, progress: Progress, *, force: bool = False) -> None:
        """At most one signal per PROGRESS_INTERVAL, but a new stage or a finished count is
        never held back, and what was held back is sent before the job ends (the bar must not
        stop at "4 of 5")."""
        now = time.monotonic()
        held, self._held = self._held, None
        finished = progress.total > 0 and progress.done >= progress.total
        new_stage = held is not None and held.stage != progress.stage
        if new_stage and held is not None:
            self._progressed.emit(held)
        if force or finished or new_stage or now - self._last_emit >= PROGRESS_INTERVAL:
            self._last_emit = now
            self._progressed.emit(progress)
        else:
            self._held = progress

    def _flush_progress(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._progressed.emit(held)

    def _run(self) -> None:
        self._ended.emit(*self._outcome())

    def _outcome(self) -> tuple[str, Any]:
        ctx = JobContext(self.token, self._report)
        if self.token.cancelled:  # superseded before it got a thread
            return "cancelled", None
        try:
            result = self.task(ctx)
            if isinstance(result, Generator):
                result = self._drive(result)
        except Cancelled:
            return "cancelled", None
        except Exception as err:
            if self.token.cancelled and isinstance(err, VisualLensError | OSError):
                return "cancelled", None
            # An error may word itself for the window (buttons, not command-line flags).
            message = getattr(err, "gui_message", None) or user_message(err)
            if message is not None:
                return "failed", message
            log.error("Job %s failed:\n%s", self.key, traceback.format_exc())
            return (
                "failed",
                f"Something went wrong ({type(err).__name__}: {err}); the details are in the log.",
            )
        if self.token.cancelled or getattr(result, "cancelled", False) is True:
            return "cancelled", None
        return "succeeded", result

    def _drive(self, gen: Generator[Progress | Partial, None, Any]) -> Any:
        try:
            while True:
                try:
                    update = next(gen)
                except StopIteration as stop:
                    self._flush_progress()
                    return stop.value
                if isinstance(update, Progress):
                    self._report(update)
                elif isinstance(update, Partial):
                    self._partial.emit(update)  # every one: the job decides how many it yields
        except Cancelled:
            self._flush_progress()  # the count a cancel keeps, not one a throttle held back
            raise
        finally:
            gen.close()  # a job cut short still runs its clean-up (hooks removed, threads joined)


# References that workers give up, dropped later on the UI thread. A QObject (a Job, a relay)
# must be destroyed on the thread it lives on. A worker that held the last Python reference to
# one would destroy it on the worker thread, possibly while the UI thread is still delivering
# that object's queued signal: a use-after-free that crashed the GUI suite at random places. So a
# worker never drops such a reference itself: it moves it here, under the lock, and the UI thread
# empties the list (:func:`drop_released`).
_released_lock = threading.Lock()
_released: list[object] = []


def release_on_ui_thread(box: list[Any]) -> None:
    """Worker side: move the one reference in ``box`` to the UI thread's list (the worker
    must hold no other reference to it by then)."""
    with _released_lock:
        _released.append(box.pop())


def drop_released() -> None:
    """UI thread: drop what workers gave up (the objects are destroyed here, on this thread)."""
    with _released_lock:
        held = _released.copy()
        _released.clear()
    del held


class _Runnable(QRunnable):
    def __init__(self, job: Job) -> None:
        super().__init__()
        self.setAutoDelete(True)  # the pool deletes it after run(); the job outlives it
        self._box: list[Job] = [job]

    def run(self) -> None:
        lower_thread_priority()
        try:
            self._box[0]._run()
        finally:
            release_on_ui_thread(self._box)


def _guarded(call: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception:
            log.error("Clean-up on a worker failed:\n%s", traceback.format_exc())

    return run


class JobRunner(QObject):
    """Runs tasks on a QThreadPool; keyed jobs supersede each other."""

    job_started = Signal(object)  # Job
    job_finished = Signal(object)  # Job

    def __init__(self, max_threads: int = 4, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = register_pool(QThreadPool(self))
        self.pool.setMaxThreadCount(max_threads)
        self._jobs: dict[int, Job] = {}
        self._by_key: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._lanes: dict[str, QThreadPool] = {}
        self._lane_exits: list[tuple[QThreadPool, Callable[[], None]]] = []

    def add_lane(self, name: str, *, on_shutdown: Callable[[], None] | None = None) -> None:
        """A dedicated worker thread for jobs started with ``lane=name``, run in order.

        ``on_shutdown`` runs on that thread when the runner shuts down, after its last job
        (to close what the jobs kept open there: a store's connection belongs to its thread).
        """
        pool = register_pool(QThreadPool(self))
        pool.setMaxThreadCount(1)
        pool.setExpiryTimeout(-1)  # the same thread for the runner's lifetime, not a fresh one
        self._lanes[name] = pool
        if on_shutdown is not None:
            self._lane_exits.append((pool, on_shutdown))

    def start(
        self,
        key: str,
        task: Callable[[JobContext], Any],
        *,
        supersede: bool = True,
        lane: str = "",
    ) -> Job:
        """Run ``task`` on the pool (or on ``lane``, see :meth:`add_lane`). With ``supersede``,
        a running job of the same key is cancelled.

        Connect to the returned job's signals before returning to the event loop: its outcome
        is relayed through the loop, so no signal is missed however fast the task is.
        """
        if lane and lane not in self._lanes:
            raise ValueError(f"no lane named {lane!r}")
        if self._closed:
            # The app is quitting: nothing new runs; the job ends cancelled at once.
            job = Job(key, task)
            job.token.cancel()
            job._ended.emit("cancelled", None)
            return job
        old = self._by_key.get(key) if supersede else None
        job = Job(key, task, lane=lane)
        job.finished.connect(lambda j=job: self._on_finished(j))
        self._jobs[id(job)] = job
        self._by_key[key] = job
        if old is not None and not old.done:
            # One job per key at a time: the superseded one stops at its next cancel check,
            # and only then does this one start (two lens runs never write the store at once).
            old.cancel()
            old.finished.connect(lambda j=job: self._launch(j))
        else:
            self._launch(job)
        self.job_started.emit(job)
        return job

    def _launch(self, job: Job) -> None:
        if self._closed:
            job.token.cancel()
            job._ended.emit("cancelled", None)
        else:
            self._lanes.get(job.lane, self.pool).start(_Runnable(job))

    def current(self, key: str) -> Job | None:
        job = self._by_key.get(key)
        return job if job is not None and not job.done else None

    def running(self) -> list[Job]:
        return [job for job in self._jobs.values() if not job.done]

    def cancel(self, key: str) -> None:
        job = self._by_key.get(key)
        if job is not None:
            job.cancel()

    def cancel_all(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel()

    def shutdown(self, timeout_ms: int = 15_000) -> bool:
        """Cancel everything and wait for the workers; True when every thread finished."""
        self._closed = True
        self.cancel_all()
        for pool, on_shutdown in self._lane_exits:
            pool.start(_guarded(on_shutdown))
        deadline = time.monotonic() + timeout_ms / 1000
        ok = True
        for pool in [self.pool, *self._lanes.values()]:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = bool(pool.waitForDone(left)) and ok
        drop_released()
        return ok

    def _on_finished(self, job: Job) -> None:
        drop_released()  # jobs whose workers ended before this one's end was delivered
        self._jobs.pop(id(job), None)
        if self._by_key.get(job.key) is job:
            del self._by_key[job.key]
        self.job_finished.emit(job)
