"""TLDR: token-level hallucination scores for captions and answers about the user's photos.

See ``../shared/specs/tldr.md`` and the README. :mod:`.detector` is the one interface every
detector backend fulfils; torch is imported only in the detector modules that run a model.
"""
