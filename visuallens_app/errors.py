"""Errors a user can cause. Each carries one sentence that the CLI and GUI show as it is."""

from __future__ import annotations


class VisualLensError(Exception):
    """Base of every error that is the user's to fix; ``str(err)`` is the message to show."""


class ModelUnavailableError(VisualLensError):
    """A model's weights are not on this machine and cannot be fetched."""


class LibraryError(VisualLensError):
    """The photo library cannot be opened or written (bad path, disk full, locked)."""


class CatalogError(VisualLensError):
    """A catalog folder is missing or has no usable items."""


class NotEnoughHistoryError(VisualLensError):
    """Too few indexed photos to do what was asked."""


class Cancelled(Exception):  # noqa: N818 - it is an outcome, not a failure
    """Raised inside a long job when its CancelToken was cancelled."""
