"""The job runner: results, errors as sentences, throttled progress, keyed cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from visuallens_app.errors import LibraryError
from visuallens_app.gui.workers import JobRunner
from visuallens_app.jobs import Progress


@pytest.fixture
def runner(qtbot):
    runner = JobRunner()
    yield runner
    assert runner.shutdown(10_000)


def test_a_generator_job_reports_progress_and_returns_its_value(qtbot, runner) -> None:
    def task(ctx):
        for i in range(50):
            ctx.cancel.check()
            time.sleep(0.01)
            yield Progress(i + 1, 50)
        return "done"

    seen: list[Progress] = []
    job = runner.start("gen", task)
    job.progress_changed.connect(seen.append)
    with qtbot.waitSignal(job.succeeded, timeout=10_000) as blocker:
        pass
    assert blocker.args == ["done"]
    # ~0.5 s of work at ten updates a second: throttled well below one signal per item.
    assert 1 <= len(seen) <= 12


def test_a_user_error_arrives_as_its_sentence(qtbot, runner) -> None:
    def task(_ctx):
        raise LibraryError("The library is on a disk that is full; free some space.")

    job = runner.start("err", task)
    with qtbot.waitSignal(job.failed, timeout=5000) as blocker:
        pass
    assert blocker.args == ["The library is on a disk that is full; free some space."]


def test_a_disk_full_error_becomes_advice(qtbot, runner) -> None:
    import errno

    def task(_ctx):
        raise OSError(errno.ENOSPC, "No space left on device", "/photos/lib")

    job = runner.start("full", task)
    with qtbot.waitSignal(job.failed, timeout=5000) as blocker:
        pass
    assert "disk is full" in blocker.args[0]


def test_a_new_job_with_the_same_key_cancels_the_old_one(qtbot, runner) -> None:
    started = threading.Event()

    def slow(ctx):
        started.set()
        while True:
            ctx.cancel.check()
            time.sleep(0.01)
            yield Progress(0, 0)

    first = runner.start("search", slow)
    assert started.wait(5)
    outcomes: list[str] = []
    first.cancelled.connect(lambda: outcomes.append("cancelled"))
    first.succeeded.connect(lambda _r: outcomes.append("succeeded"))
    second = runner.start("search", lambda _ctx: 42)
    with qtbot.waitSignals([first.finished, second.succeeded], timeout=5000):
        pass
    assert outcomes == ["cancelled"]
    assert runner.running() == []


def test_shutdown_cancels_and_waits_for_everything(qtbot) -> None:
    runner = JobRunner()

    def forever(ctx):
        while True:
            ctx.cancel.check()
            time.sleep(0.01)
            yield Progress(0, 0)

    for i in range(3):
        runner.start(f"job{i}", forever)
    assert runner.shutdown(5000)
    assert runner.pool.activeThreadCount() == 0


def test_pause_blocks_a_job_until_resumed(qtbot, runner) -> None:
    steps: list[int] = []

    def task(ctx):
        for i in range(100):
            ctx.cancel.check()
            steps.append(i)
            time.sleep(0.005)
            yield Progress(i, 100)
        return len(steps)

    job = runner.start("pausable", task)
    qtbot.waitUntil(lambda: len(steps) > 3, timeout=5000)
    job.pause()
    time.sleep(0.1)
    frozen = len(steps)
    time.sleep(0.2)
    assert len(steps) <= frozen + 1
    with qtbot.waitSignal(job.succeeded, timeout=10_000):
        job.resume()
    assert len(steps) == 100
