"""What every command shares: library/encoder options, error handling, output, progress bars."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from visuallens_app.errors import Cancelled, user_message
from visuallens_app.jobs import CATALOG_STAGE, CancelToken, Partial, Progress, StreamingJob
from visuallens_app.settings import Settings

R = TypeVar("R")
Handler = Callable[[argparse.Namespace], int]


def add_common(parser: argparse.ArgumentParser, *, encoder: bool = True) -> None:
    """Options every command takes: where the library is, output format, which encoder."""
    parser.add_argument(
        "--library",
        type=Path,
        metavar="DIR",
        help="library directory (default: $VISUALLENS_LIBRARY or the user data dir)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    if encoder:
        parser.add_argument(
            "--encoder",
            default=None,
            metavar="NAME",
            help=(
                "auto (default: CLIP when its weights are on this machine, else the embedded "
                "encoder), embedded, clip, clip:ARCH/PRETRAINED, or a checkpoint file"
            ),
        )
        parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")


def library_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "library", None):
        return Path(args.library)
    return Settings.load().library_path


def open_store(args: argparse.Namespace) -> Any:
    from visuallens_app.library.store import PhotoStore

    store = PhotoStore(library_dir(args))
    for warning in store.warnings:
        print(f"visuallens: {warning}", file=sys.stderr)
    return store


def load_encoder(args: argparse.Namespace, *, quiet: bool = False) -> Any:
    """Load the encoder the user asked for and say which one it is (on stderr, not in --json)."""
    from visuallens_app.models.registry import load_encoder as load

    settings = Settings.load()
    name = getattr(args, "encoder", None) or settings.encoder
    device = getattr(args, "device", None) or settings.device
    choice = load(name, device=device)
    if not quiet:
        print(choice.reason, file=sys.stderr)
    return choice.encoder


def add_vlm_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--vlm`` (and ``--dtype``) for a command that drives a vision-language model."""
    parser.add_argument(
        "--vlm",
        default=None,
        metavar="DIR|NAME",
        help=(
            f"the vision-language model for {what}: a folder saved with save_pretrained, or a "
            "Hub name already downloaded (`visuallens models download-vlm`); default: settings"
        ),
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="weights' precision (default auto: float32 on a CPU, half precision on a GPU)",
    )


#: Loaded vision-language models of this process, so one command loads each only once.
_vlms: dict[tuple[str, str, str, str], Any] = {}


def vlm_source(args: argparse.Namespace, feature: str) -> str:
    """The model ``feature`` uses: ``--vlm``, else the settings' choice; empty when none."""
    chosen = getattr(args, "vlm", None)
    return str(chosen).strip() if chosen else Settings.load().vlm_for(feature)


def load_vlm(
    args: argparse.Namespace,
    feature: str,
    *,
    source: str | None = None,
    attn_implementation: str = "auto",
) -> Any:
    """The vision-language model for ``feature`` (loaded once per process), saying which on stderr.

    One sentence, not a traceback, when none is configured or it cannot be loaded.
    """
    from visuallens_app.errors import ModelUnavailableError
    from visuallens_app.vlm.loading import DEFAULT_VLM, check_folder, resolve_source
    from visuallens_app.vlm.loading import load_vlm as load

    chosen = source if source is not None else vlm_source(args, feature)
    if not chosen:
        raise ModelUnavailableError(
            f"No vision-language model is configured for {feature}; give --vlm DIR|NAME, set "
            f"one in Settings, or get one with `visuallens models download-vlm` ({DEFAULT_VLM})."
        )
    device = getattr(args, "device", None) or Settings.load().device
    dtype = getattr(args, "dtype", None) or "auto"
    key = (chosen, device, dtype, attn_implementation)
    if key not in _vlms:
        quiet = getattr(args, "json", False)
        # A wrong folder is refused before "Loading..." (memory is checked once the device is).
        check_folder(resolve_source(chosen), check_memory=False)
        if not quiet:
            print(f"Loading the vision-language model {chosen}...", file=sys.stderr)
        vlm = load(chosen, device=device, dtype=dtype, attn_implementation=attn_implementation)
        if not quiet:
            print(f"Using {vlm.describe()}.", file=sys.stderr)
        _vlms[key] = vlm
    return _vlms[key]


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON with --json, otherwise the human text."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(text())


#: What a command interrupted at once (a second Ctrl-C) has kept, by command.
CANCELLED_KEEPS = {
    "index": "every photo encoded before Ctrl-C is kept; run the same command again for the rest",
    "recommend": "the item descriptions read before Ctrl-C are kept; run it again for the rest",
}

#: How a job's stages read on the progress bar.
STAGE_LABELS = {
    "scan": "Scanning",
    "index": "Indexing",
    "sweep": "Tidying up",
    CATALOG_STAGE: "Reading the catalog (once)",
}


def run_job(
    job: StreamingJob[R],
    *,
    show: bool = True,
    on_partial: Callable[[Partial], None] | None = None,
    lines_when_piped: bool = False,
) -> R:
    """Drive a job with a progress bar (count, rate, ETA) on stderr; Ctrl-C cancels cleanly.

    Partial results (streamed tokens, finished cells) go to ``on_partial`` as they come. With
    ``lines_when_piped``, a job that runs for minutes still says how far it is when stderr is
    not a terminal (a log, CI): a plain line per stage and every :data:`PIPED_EVERY_S`.
    """
    import time

    from tqdm import tqdm

    bar = tqdm(total=0, unit="photo", disable=not show or not sys.stderr.isatty(), leave=False)
    piped = show and lines_when_piped and bool(bar.disable)
    last_line = 0.0
    stage = None
    try:
        while True:
            try:
                progress = next(job)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if not isinstance(progress, Progress):
                if on_partial is not None:
                    on_partial(progress)
                continue
            new_stage = progress.stage != stage
            if new_stage:
                stage = progress.stage
                bar.reset(total=progress.total or None)
                bar.unit = progress.unit.removesuffix("s") or "item"
                bar.set_description(STAGE_LABELS.get(stage, stage), refresh=False)
            if piped and (new_stage or time.monotonic() - last_line >= PIPED_EVERY_S):
                last_line = time.monotonic()
                print(_progress_line(progress), file=sys.stderr, flush=True)
            if progress.total and bar.total != progress.total:
                bar.total = progress.total
            bar.n = progress.done
            bar.set_postfix_str(progress.message, refresh=False)
            bar.refresh()
    finally:
        job.close()
        bar.close()


@contextmanager
def interrupt_cancels(cancel: CancelToken, stopping: str) -> Iterator[None]:
    """Within the block the first Ctrl-C cancels ``cancel`` (the job stops at its next check and
    returns what it finished, saying so), printing ``stopping``; a second one interrupts at once.

    Only the main thread may own signal handlers; elsewhere Ctrl-C keeps its usual meaning.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(_signum: int, _frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        print(f"\nvisuallens: {stopping} (Ctrl-C again to stop at once).", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: Seconds between the plain progress lines of a job whose stderr is not a terminal.
PIPED_EVERY_S = 10.0


def _progress_line(progress: Progress) -> str:
    """'Encode: 120 of 724 photos (17%), 4.7/s' for a log, where no bar can be drawn."""
    stage = STAGE_LABELS.get(progress.stage, progress.stage.replace("_", " ")) or "Working"
    if progress.total > 0:
        done = f"{progress.done:,} of {progress.total:,} {progress.unit}"
        done += f" ({100 * progress.fraction:.0f}%)"
    else:
        done = f"{progress.done:,} {progress.unit}"
    rate = f", {progress.rate:.1f}/s" if progress.rate > 0 else ""
    return f"{stage[:1].upper()}{stage[1:]}: {done}{rate}"


def run_handler(args: argparse.Namespace) -> int:
    """Call the command; user errors become one sentence on stderr and exit status 1.

    A reader that stopped early (``visuallens status | head -1``) ends the command quietly,
    as it ends any Unix tool.
    """
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a reader gone away is found here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        return reader_gone()
    except (KeyboardInterrupt, Cancelled):
        kept = CANCELLED_KEEPS.get(getattr(args, "command", ""), "")
        print(f"visuallens: cancelled{'; ' + kept if kept else ''}.", file=sys.stderr)
        return 130
    except Exception as err:
        message = _damaged_library_message(args, err) or user_message(err)
        if message is not None:
            print(f"visuallens: {message}", file=sys.stderr)
            return 1
        log = write_crash_log()
        print(
            f"visuallens: unexpected error ({type(err).__name__}: {err}); details in {log}",
            file=sys.stderr,
        )
        return 70


def _damaged_library_message(args: argparse.Namespace, err: BaseException) -> str | None:
    """For SQLite finding the library damaged mid-command: the sentence, with what its
    integrity check says about the file (on open, the store adds this itself)."""
    import sqlite3

    from visuallens_app.errors import damaged_library_sentence, is_damaged_database

    if not isinstance(err, sqlite3.DatabaseError) or not is_damaged_database(err):
        return None
    from visuallens_app.library.store import DB_NAME, integrity_evidence

    path = library_dir(args) / DB_NAME
    return damaged_library_sentence(path, integrity_evidence(path)) if path.is_file() else None


def reader_gone() -> int:
    """Stop writing to a closed pipe without a word, and exit as a tool stopped by SIGPIPE.

    Python ignores SIGPIPE, so the write raised instead; stdout is pointed at the null device so
    that the interpreter's own final flush does not fail again with "Exception ignored".
    """
    import os
    import signal

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))


def write_crash_log() -> Path:
    """Write the current exception's traceback under the cache dir and return the file."""
    import traceback
    from datetime import datetime

    from visuallens_app.settings import cache_dir

    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"crash-{datetime.now():%Y%m%d-%H%M%S}.log"
    log.write_text(traceback.format_exc(), encoding="utf-8")
    return log


__all__ = ["CancelToken", "add_common", "emit", "library_dir", "load_encoder", "run_job"]
