"""VisualLens: retrieval, aspects, profile, matching, grid, re-rank and evaluation."""
