"""The desktop app (PySide6): the only package that imports Qt."""

import sys


def _pin_none() -> None:
    """Give ``None`` a reference count no app run can wear down (CPython before 3.12 only).

    PySide6 6.12 hands ``None`` back to Python without taking a reference in several wrapped
    calls (``QPainter.save``, ``setPen``, ``setRenderHint``, ``fillPath``, an empty
    ``QModelIndex.data``...), about forty per grid repaint. On CPython 3.11 that count reaches
    zero after minutes of scrolling and the app aborts with "deallocating None". CPython 3.12
    made None immortal; this does the same here by adding 2**40 to its count.
    """
    if sys.version_info >= (3, 12):
        return
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40


_pin_none()
