"""One runtime for every feature that drives a local vision-language model (VLM).

Captions, the VisualLens re-ranker, the TLDR hallucination inspector and the steering studio all
stand on it: :mod:`.loading` (any ``AutoModelForImageTextToText`` folder or cached Hub name, one
device policy, one sentence for every way a folder can be wrong), :mod:`.prompts` (chat template
or plain fallback, batches with left padding, responses appended with character offsets),
:mod:`.generation` (greedy, streamed, cancellable), :mod:`.scoring` (first-token probabilities,
per-token log-probabilities), :mod:`.layers` (decoder layers, image positions, hidden states),
:mod:`.hooks` (steering vectors added to a layer's output), :mod:`.attention` (response-to-image
attention mapped onto the photo) and :mod:`.captions`.

Headless and light to import: torch and transformers load inside the functions that use them.
"""

from visuallens_app.vlm.loading import (
    DEFAULT_VLM,
    VisionLanguageModel,
    download_vlm,
    list_local_vlms,
    load_vlm,
)

__all__ = ["DEFAULT_VLM", "VisionLanguageModel", "download_vlm", "list_local_vlms", "load_vlm"]
