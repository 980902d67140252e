"""The steering studio: textual steering vectors added to a vision-language model's residual stream.

Following "Textual Steering Vectors Can Improve Visual Understanding in Multimodal Large Language
Models" (arXiv 2505.14071; ``shared/specs/steering.md``): :mod:`.concepts` (the shipped and the
user's concept sets), :mod:`.vectors` (mean shift, linear probe and SAE vectors, numpy math on
hidden states of the text-only backbone, saved as safetensors with metadata), :mod:`.store` (the
saved vectors), :mod:`.apply` (token masks, side-by-side steered answers, prompts run once and
re-steered cheaply), :mod:`.bench` (multiple-choice benchmarks in the CV-Bench layout) and
:mod:`.sweep` (the layer x alpha sweep with the paper's held-out protocol, cached, resumable,
plotted with Pillow).

torch is imported inside the functions that drive the model; the rest is numpy.
"""

from __future__ import annotations

from visuallens_app.errors import VisualLensError


class SteeringError(VisualLensError):
    """A concept set, vector, SAE or benchmark the user gave cannot be used (one sentence)."""


__all__ = ["SteeringError"]
