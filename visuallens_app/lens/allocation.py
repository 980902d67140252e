"""Bulk work that allocates millions of small objects (catalog items, word sets) at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration of the block.

    Loading or ranking 100,000 catalog items creates millions of objects that all stay alive;
    each full collection the allocations trigger walks every live object again (and a process
    with torch loaded has many), which made the cost grow faster than the catalog. Nothing in
    such a block makes reference cycles worth collecting before it ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
