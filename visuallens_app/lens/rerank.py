"""The optional MLLM re-ranker, as in the VisualLens paper: one forward pass, first-token tags.

A local Hugging Face vision-language model sees the profile grid (the retrieved photos, numbered
tiles) and a prompt with the question, the aspect words and captions keyed by tile number, and the
candidates tagged ``<I1>..<In>`` with name and description. Candidates are ranked by the
probability the model gives each tag as its *first* output token: one forward pass ranks up to
100 candidates, instead of generating text and parsing it.

Tags are dedicated tokens (:func:`visuallens_app.vlm.tokens.ensure_tokens` explains why and how
they are added when a model lacks them); the model is the app's one loaded vision-language model
(:mod:`visuallens_app.vlm`), shared with captions and the inspection panels.

This module imports neither torch nor transformers: the runtime does, when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from visuallens_app.lens.catalog import CatalogItem

if TYPE_CHECKING:
    from visuallens_app.lens.pipeline import LensResult
    from visuallens_app.vlm.loading import VisionLanguageModel

#: The paper tags at most 100 candidates (its benchmarks have 30-100 per question).
MAX_CANDIDATES = 100

#: A description is cut to this many characters: 100 long descriptions would otherwise crowd the
#: photos' captions out of the model's context.
MAX_DESCRIPTION_CHARS = 300


def candidate_tag(number: int) -> str:
    """The tag of the ``number``-th candidate (1-based): ``<I1>``, ``<I2>``, ..."""
    return f"<I{number}>"


@dataclass(frozen=True, slots=True)
class RerankResult:
    """The re-ranker's answer for one question.

    ``order`` lists candidate indices (into the list given) best first; ``probabilities[i]`` is
    the model's probability that candidate ``i``'s tag is the first output token, over the whole
    vocabulary, so they sum to at most 1 (the rest is mass on other tokens).
    """

    order: tuple[int, ...]
    probabilities: tuple[float, ...]

    def ranked(self, candidates: Sequence[CatalogItem]) -> list[tuple[CatalogItem, float]]:
        """Candidates best first, each with its probability."""
        return [(candidates[i], self.probabilities[i]) for i in self.order]


def build_prompt(
    question: str,
    candidates: Sequence[CatalogItem],
    *,
    tile_aspects: Mapping[int, Sequence[str]] | None = None,
    captions: Mapping[int, str] | None = None,
    profile_aspects: Sequence[str] = (),
    tiles: int = 0,
) -> str:
    """The paper's prompt: photos' aspect words and captions by tile number, then tagged candidates.

    Parameters
    ----------
    question
        The user's request, e.g. "recommend a restaurant".
    tile_aspects, captions
        Per-photo aspect words and captions, keyed by the 1-based tile number in the grid.
    profile_aspects
        Aspect words of the whole profile (after refinement), listed once before the tiles.
    tiles
        How many tiles of the grid hold a photo, so the model knows what the numbers refer to.
    """
    lines = [
        f"The image is a grid of {tiles or 'the'} photos from the user's own photo history, "
        "each numbered in its top-left corner.",
    ]
    if profile_aspects:
        lines.append("Aspects the user cares about: " + ", ".join(profile_aspects) + ".")
    numbers = sorted(set(tile_aspects or {}) | set(captions or {}))
    if numbers:
        lines.append("Photos:")
        for number in numbers:
            parts = []
            if captions and captions.get(number):
                parts.append(captions[number].strip())
            words = (tile_aspects or {}).get(number, ())
            if words:
                parts.append("aspects: " + ", ".join(words))
            lines.append(f"{number}: " + "; ".join(parts))
    lines.append(f"Question: {question.strip()}")
    lines.append("Candidates:")
    for number, item in enumerate(candidates, start=1):
        description = " ".join(item.description.split())
        if len(description) > MAX_DESCRIPTION_CHARS:
            description = description[: MAX_DESCRIPTION_CHARS - 3].rstrip() + "..."
        lines.append(f"{candidate_tag(number)} {item.name}: {description}")
    lines.append("Answer with the tag of the candidate this user would like most.")
    return "\n".join(lines)


class MLLMReranker:
    """Ranks candidates with a loaded vision-language model by first-token tag probabilities.

    One forward pass per question. The model is loaded once by the caller
    (:func:`visuallens_app.vlm.load_vlm`) and shared; the tags are added to its vocabulary in
    memory the first time they are needed.
    """

    def __init__(self, vlm: VisionLanguageModel) -> None:
        self.vlm = vlm
        self._tag_ids: list[int] = []

    @property
    def image_side(self) -> int | None:
        """Side in pixels of the square the processor feeds the model, when it has one."""
        return _processor_side(self.vlm.processor.image_processor)

    def tag_ids(self, count: int) -> list[int]:
        """Token ids of ``<I1>..<Icount>``, adding the missing ones to the vocabulary first."""
        from visuallens_app.vlm.tokens import ensure_tokens

        if count > len(self._tag_ids):
            self._tag_ids = ensure_tokens(self.vlm, [candidate_tag(n) for n in range(1, count + 1)])
        return self._tag_ids[:count]

    def rerank(
        self,
        grid: Image.Image,
        question: str,
        candidates: Sequence[CatalogItem],
        *,
        tile_aspects: Mapping[int, Sequence[str]] | None = None,
        captions: Mapping[int, str] | None = None,
        profile_aspects: Sequence[str] = (),
        tiles: int = 0,
    ) -> RerankResult:
        """Rank ``candidates`` for ``question`` given the profile ``grid``, in one forward pass.

        Ties (equal probabilities) keep the order given, so a pipeline's ranking breaks them.
        The probabilities come from the softmax over the whole vocabulary, not over the tags
        alone: the tags' total mass says how sure the model is that the answer is a candidate.
        """
        from visuallens_app.vlm.scoring import first_token_probabilities

        if not candidates:
            return RerankResult((), ())
        if len(candidates) > MAX_CANDIDATES:
            raise ValueError(
                f"the re-ranker takes at most {MAX_CANDIDATES} candidates, not {len(candidates)}"
            )
        tag_ids = self.tag_ids(len(candidates))
        prompt = build_prompt(
            question,
            candidates,
            tile_aspects=tile_aspects,
            captions=captions,
            profile_aspects=profile_aspects,
            tiles=tiles,
        )
        values = first_token_probabilities(self.vlm, self._fitted(grid), prompt, tag_ids)
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))
        return RerankResult(tuple(order), tuple(values))

    def _fitted(self, grid: Image.Image) -> Image.Image:
        """The grid at the processor's square size, letterboxed rather than cropped."""
        side = self.image_side
        image = grid.convert("RGB")
        if side is not None and image.size != (side, side):
            # Resize here rather than leave it to the processor, whose centre crop would cut off
            # the outer tiles of a non-square grid; Lanczos keeps the tile numbers readable.
            image = _fit_square(image, side)
        return image


@dataclass(frozen=True, eq=False)
class ProfileGrid:
    """The grid the re-ranker sees, and what its numbered tiles hold.

    ``rows[t - 1]`` is the history index of the photo in tile ``t``; ``captions`` is keyed by
    tile number, as :func:`build_prompt` wants them.
    """

    image: Image.Image
    rows: tuple[int, ...]
    captions: dict[int, str]

    @property
    def tiles(self) -> int:
        return len(self.rows)


def profile_grid(
    paths: Sequence[Path],
    retrieved: Sequence[int],
    captions: Mapping[int, str] | None = None,
    *,
    max_tiles: int = 64,
    load: Callable[[int], Image.Image | None] | None = None,
) -> ProfileGrid:
    """The paper's numbered grid of the first ``max_tiles`` retrieved photos.

    ``paths`` is indexed by history index, ``captions`` keyed by history index (as in
    ``LensResult.captions``). Unreadable photos are left out, and tile numbers (of photos and of
    their captions) count only the photos actually placed, so "3:" in the prompt is tile 3.
    ``load`` gives a history index's tile image (the GUI reads its thumbnails) or None when it
    has none, in which case the photo file is decoded.
    """
    from visuallens_app.lens.grid import build_grid
    from visuallens_app.library.decode import DecodeError, decode_photo

    images: list[Image.Image] = []
    rows: list[int] = []
    for index in retrieved:
        if len(images) >= max_tiles:
            break
        image = load(int(index)) if load is not None else None
        if image is None:
            try:
                image = decode_photo(paths[int(index)], target=112).thumbnail
            except DecodeError:
                continue
        images.append(image)
        rows.append(int(index))
    by_tile = {
        tile: text
        for tile, index in enumerate(rows, start=1)
        if captions and (text := captions.get(index))
    }
    return ProfileGrid(build_grid(images), tuple(rows), by_tile)


class TagRanker(Protocol):
    """What :func:`rerank_result` needs: :class:`MLLMReranker` or a test's fake."""

    def rerank(
        self,
        grid: Image.Image,
        question: str,
        candidates: Sequence[CatalogItem],
        *,
        tile_aspects: Mapping[int, Sequence[str]] | None = None,
        captions: Mapping[int, str] | None = None,
        profile_aspects: Sequence[str] = (),
        tiles: int = 0,
    ) -> RerankResult: ...


def rerank_result(
    reranker: TagRanker,
    result: LensResult,
    paths: Sequence[Path],
    question: str,
    *,
    grid: ProfileGrid | None = None,
) -> LensResult:
    """``result`` with its recommendations in the re-ranker's order.

    The re-ranker sees the grid of the retrieved photos (``grid``, else built here), the profile
    aspects and, when the result has them, the photos' captions keyed by tile number. At most
    :data:`MAX_CANDIDATES` recommendations are re-ranked; any beyond keep their place after.
    """
    head = result.recommendations[:MAX_CANDIDATES]
    if not head:
        return result
    if grid is None:
        grid = profile_grid(paths, result.retrieved, dict(result.captions))
    answer = reranker.rerank(
        grid.image,
        question,
        [r.item for r in head],
        captions=grid.captions or None,
        profile_aspects=[term for term, _ in result.profile_aspects],
        tiles=grid.tiles,
    )
    ordered = tuple(head[i] for i in answer.order) + result.recommendations[MAX_CANDIDATES:]
    note = "Re-ranked by the vision-language model" + (
        f" (with {len(grid.captions)} photo caption(s))." if grid.captions else "."
    )
    return replace(result, recommendations=ordered, notes=(*result.notes, note))


def _processor_side(image_processor: Any) -> int | None:
    """The square side the image processor produces, or None when it keeps aspect (dynamic)."""

    def side(size: Any) -> int | None:
        if size is None:
            return None

        def get(key: str) -> Any:
            return size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)

        height, width = get("height"), get("width")
        if height and width and height == width:
            return int(height)
        shortest = get("shortest_edge")
        return int(shortest) if shortest else None

    if getattr(image_processor, "do_center_crop", False):
        cropped = side(getattr(image_processor, "crop_size", None))
        if cropped:
            return cropped
    return side(getattr(image_processor, "size", None))


def _fit_square(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    if size == (side, side):
        return resized
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(resized, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


__all__ = [
    "MAX_CANDIDATES",
    "MLLMReranker",
    "ProfileGrid",
    "RerankResult",
    "TagRanker",
    "build_prompt",
    "candidate_tag",
    "profile_grid",
    "rerank_result",
]
