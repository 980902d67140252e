"""VisualLens Studio: visual personalization and model inspection on your own photos, offline."""

__version__ = "0.1.0"
