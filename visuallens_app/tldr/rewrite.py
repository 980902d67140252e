"""The LLM-rewrite mode of the perturbation engine: a local model proposes, the check decides.

The paper has a language model make each hard negative, then checks that the edit stays in its
category and is not a paraphrase. Here any vision-language model of ``vlm/`` is asked text-only
(no image) for a minimal edit of the caption in the category; every answer goes through
:func:`~visuallens_app.tldr.perturb.check_edit`, and one that fails is discarded and counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: What each category's edit changes, with the paper's examples.
INSTRUCTIONS = {
    "spatial": "change one spatial relationship (left of -> right of, on -> under)",
    "attribute": "change one visual attribute such as a colour or material (yellow -> blue)",
    "binding": "swap the attributes of two objects (a blue A, a yellow B -> a yellow A, a blue B)",
    "object": "replace one object with a different one (dog -> cat)",
    "counting": "change one count to another realistic number (one duck -> four ducks)",
    "small_object": "change the count, colour or kind of one small object",
    "ocr": 'change the text or numbers written in the image ("STOP" -> "YIELD", 12:00 -> 12:08)',
    "counterfactual": 'negate one statement ("is sitting" -> "is not sitting")',
}
PROMPT = (
    "Edit the image caption below with one or two minimal changes so that it describes the image "
    "differently: {instruction}. Keep every other word as it is, do not paraphrase, and answer "
    "with the edited caption only.\nCaption: {caption}\nEdited caption:"
)
_PREFIX = re.compile(r"^\s*(?:edited caption|caption|answer)\s*:\s*", re.IGNORECASE)


def rewrite_prompt(caption: str, category: str) -> str:
    return PROMPT.format(instruction=INSTRUCTIONS[category], caption=caption.strip())


def clean_answer(text: str) -> str:
    """The edited caption out of a model's answer: first line, no label, no wrapping quotes."""
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    line = _PREFIX.sub("", line).strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    return line


class VlmRewriter:
    """A :data:`~visuallens_app.tldr.synthetic.Rewriter` over a local model, one batch per call."""

    def __init__(self, vlm: Any, *, max_new_tokens: int = 96) -> None:
        self._vlm = vlm
        self._max_new_tokens = max_new_tokens

    def __call__(self, requests: Sequence[tuple[str, str]]) -> list[str]:
        from visuallens_app.vlm.generation import generate_batch

        prompts = [rewrite_prompt(caption, category) for caption, category in requests]
        answers = generate_batch(
            self._vlm, [None] * len(prompts), prompts, max_new_tokens=self._max_new_tokens
        )
        return [clean_answer(a.text) for a in answers]


__all__ = ["INSTRUCTIONS", "VlmRewriter", "clean_answer", "rewrite_prompt"]
