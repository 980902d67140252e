"""Photo captions written by the configured vision-language model (the paper's <= 30 words).

:class:`VlmCaptioner` fulfils the lens's ``Captioner`` protocol: its ``id`` names the model's
fingerprint, the prompt and the length cap, so stored captions are reused exactly as long as they
would come out the same, and a new model or prompt captions again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image

from visuallens_app.vlm.generation import generate_batch

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

#: The instruction every captioning model gets; short, as the paper's captions are.
CAPTION_PROMPT = "Describe this photo in one short sentence."

#: The paper's captions are at most 30 words.
MAX_CAPTION_WORDS = 30


class VlmCaptioner:
    """Captions photos with a loaded :class:`~visuallens_app.vlm.loading.VisionLanguageModel`."""

    def __init__(
        self,
        vlm: VisionLanguageModel,
        *,
        prompt: str = CAPTION_PROMPT,
        max_new_tokens: int = 48,
        batch_size: int = 4,
    ) -> None:
        self.vlm = vlm
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        digest = hashlib.blake2b(digest_size=6)
        digest.update(f"{prompt}\0{max_new_tokens}\0{MAX_CAPTION_WORDS}".encode())
        self._id = f"vlm:{vlm.fingerprint}:{digest.hexdigest()}"

    @property
    def id(self) -> str:
        return self._id

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption of at most :data:`MAX_CAPTION_WORDS` words per image, in order."""
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            answers = generate_batch(
                self.vlm, batch, [self.prompt] * len(batch), max_new_tokens=self.max_new_tokens
            )
            captions.extend(" ".join(a.text.split()[:MAX_CAPTION_WORDS]) for a in answers)
        return captions


__all__ = ["CAPTION_PROMPT", "MAX_CAPTION_WORDS", "VlmCaptioner"]
