"""The optional MLLM re-ranker, as in the VisualLens paper: one forward pass, first-token tags.

A local Hugging Face vision-language model sees the profile grid (the retrieved photos, numbered
tiles) and a prompt with the question, the aspect words and captions keyed by tile number, and the
candidates tagged ``<I1>..<In>`` with name and description. Candidates are ranked by the
probability the model gives each tag as its *first* output token: one forward pass ranks up to
100 candidates, instead of generating text and parsing it.

Tags are dedicated tokens. When the tokenizer lacks them (any model not fine-tuned the paper's
way) they are added and the embeddings resized, in memory only; the user's model folder is never
written. Why not score the first token of each tag's ordinary tokenisation instead: in every
common tokenizer "<I1>", "<I12>" and "<I100>" all start with "<" (or "<I"), and after that prefix
the first digit still collides (1, 10-19, 100), so one pass could not tell candidates apart. Each
new tag row (input embedding and output head) starts as the mean of the rows of its text pieces,
so an un-fine-tuned model reads "<I12>" roughly as the text "<I12>" rather than as noise. That is
a starting point, not a trained skill: the paper fine-tunes the tags (LoRA, joint loss), and a
model saved that way (tags already in its vocabulary) is used as it is.

torch and transformers are imported inside functions: this module loads in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.lens.catalog import CatalogItem

if TYPE_CHECKING:
    from visuallens_app.lens.pipeline import LensResult

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
    """Ranks candidates with a local vision-language model by first-token tag probabilities.

    Load once (seconds to minutes, gigabytes) and reuse; calls are one forward pass each.

    Parameters
    ----------
    model_dir
        A folder saved with ``save_pretrained`` holding a model that ``AutoModelForImageText
        ToText`` loads (LLaVA, PaliGemma, Idefics, Qwen2-VL, ...) and its processor. Nothing is
        ever downloaded and no remote code runs.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"``; ``"auto"`` picks CUDA when present.
    dtype
        ``"auto"`` keeps the checkpoint's dtype on GPU and uses float32 on CPU (where half
        precision is slow or unsupported).
    """

    def __init__(self, model_dir: Path, *, device: str = "auto", dtype: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.processor, self.model, self.device = _load(self.model_dir, device, dtype)
        self.tokenizer: Any = self.processor.tokenizer
        self._tag_ids: list[int] = []

    @property
    def image_side(self) -> int | None:
        """Side in pixels of the square the processor feeds the model, when it has one."""
        return _processor_side(self.processor.image_processor)

    def tag_ids(self, count: int) -> list[int]:
        """Token ids of ``<I1>..<Icount>``, adding the missing ones to the vocabulary first."""
        if count > len(self._tag_ids):
            self._tag_ids = _ensure_tags(self.tokenizer, self.model, count)
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
        """
        import torch

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
        inputs = self._inputs(grid, prompt)
        with torch.inference_mode():
            logits = self.model(**inputs).logits[0, -1].float()
        # The full-vocabulary softmax, not one over the tags alone: the tags' total mass says how
        # sure the model is that the answer is a candidate at all.
        probs = torch.softmax(logits, dim=-1)[torch.tensor(tag_ids, device=logits.device)]
        values = [float(p) for p in probs.cpu()]
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))
        return RerankResult(tuple(order), tuple(values))

    def _inputs(self, grid: Image.Image, prompt: str) -> dict[str, Any]:
        side = self.image_side
        image = grid.convert("RGB")
        if side is not None and image.size != (side, side):
            # Resize here rather than leave it to the processor, whose centre crop would cut off
            # the outer tiles of a non-square grid; Lanczos keeps the tile numbers readable.
            image = _fit_square(image, side)
        text = _chat_text(self.processor, prompt)
        encoded = self.processor(images=[image], text=[text], return_tensors="pt")
        model_dtype = getattr(self.model, "dtype", None)
        moved: dict[str, Any] = {}
        for key, value in encoded.items():
            if hasattr(value, "to"):
                is_float = getattr(value, "is_floating_point", lambda: False)()
                value = (
                    value.to(self.device, dtype=model_dtype) if is_float else value.to(self.device)
                )
            moved[key] = value
        return moved


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
) -> ProfileGrid:
    """The paper's numbered grid of the first ``max_tiles`` retrieved photos.

    ``paths`` is indexed by history index, ``captions`` keyed by history index (as in
    ``LensResult.captions``). Unreadable photos are left out, and tile numbers (of photos and of
    their captions) count only the photos actually placed, so "3:" in the prompt is tile 3.
    """
    from visuallens_app.lens.grid import build_grid
    from visuallens_app.library.decode import DecodeError, decode_photo

    images: list[Image.Image] = []
    rows: list[int] = []
    for index in retrieved:
        if len(images) >= max_tiles:
            break
        try:
            images.append(decode_photo(paths[int(index)], target=112).thumbnail)
        except DecodeError:
            continue
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
    reranker: TagRanker, result: LensResult, paths: Sequence[Path], question: str
) -> LensResult:
    """``result`` with its recommendations in the re-ranker's order.

    The re-ranker sees the grid of the retrieved photos, the profile aspects and, when the
    result has them, the photos' captions keyed by tile number. At most
    :data:`MAX_CANDIDATES` recommendations are re-ranked; any beyond keep their place after.
    """
    head = result.recommendations[:MAX_CANDIDATES]
    if not head:
        return result
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


def _load(model_dir: Path, device: str, dtype: str) -> tuple[Any, Any, str]:
    if not model_dir.is_dir():
        raise ModelUnavailableError(
            f"No vision-language model folder at {model_dir}; re-ranking needs a model saved "
            "with save_pretrained on this machine."
        )
    if not (model_dir / "config.json").is_file():
        raise ModelUnavailableError(
            f"{model_dir} has no config.json, so it is not a Hugging Face model folder."
        )
    import torch
    import transformers

    # transformers' partial annotations fight mypy --strict; the objects are used dynamically.
    auto_processor: Any = transformers.AutoProcessor
    auto_model: Any = transformers.AutoModelForImageTextToText
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype: Any
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else "auto"
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        processor = auto_processor.from_pretrained(model_dir, local_files_only=True)
        model: Any = auto_model.from_pretrained(model_dir, local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailableError(
            f"Could not load a vision-language model from {model_dir}: {first_line}"
        ) from err
    if (
        getattr(processor, "tokenizer", None) is None
        or getattr(processor, "image_processor", None) is None
    ):
        raise ModelUnavailableError(
            f"{model_dir} has no image+text processor; re-ranking needs a vision-language model."
        )
    model.to(device)
    model.eval()
    return processor, model, device


def _ensure_tags(tokenizer: Any, model: Any, count: int) -> list[int]:
    """Ids of ``<I1>..<Icount>``; absent tags are added and their rows initialised (module doc)."""
    import torch

    tags = [candidate_tag(n) for n in range(1, count + 1)]
    missing = [tag for tag in tags if not _is_single_token(tokenizer, tag)]
    pieces = {tag: tokenizer.encode(tag, add_special_tokens=False) for tag in missing}
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        embeddings = model.get_input_embeddings()
        # Vocabularies are often padded past the tokenizer's length; only grow, never shrink.
        if len(tokenizer) > embeddings.weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        inputs = model.get_input_embeddings().weight
        output = model.get_output_embeddings()
        outputs = None if output is None else output.weight
        with torch.no_grad():
            for tag in missing:
                tag_id = tokenizer.convert_tokens_to_ids(tag)
                ids = [i for i in pieces[tag] if 0 <= i < inputs.shape[0]]
                if not ids:
                    continue
                # Later pieces weigh more, so that <I12> and <I21> (same pieces) still differ.
                weights = torch.arange(1, len(ids) + 1, dtype=inputs.dtype, device=inputs.device)
                weights = (weights / weights.sum())[:, None]
                inputs[tag_id] = (inputs[ids] * weights).sum(dim=0)
                if outputs is not None and outputs.data_ptr() != inputs.data_ptr():
                    outputs[tag_id] = (outputs[ids] * weights.to(outputs.dtype)).sum(dim=0)
    return [int(tokenizer.convert_tokens_to_ids(tag)) for tag in tags]


def _is_single_token(tokenizer: Any, tag: str) -> bool:
    ids = tokenizer.encode(tag, add_special_tokens=False)
    return len(ids) == 1 and ids[0] != tokenizer.unk_token_id


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


def _chat_text(processor: Any, prompt: str) -> str:
    """The prompt in the model's own chat format, ending where the assistant's answer starts."""
    if getattr(processor, "chat_template", None):
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        text: str = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return text
    # No template (a bare base model): the LLaVA-1.5 convention, image placeholder first.
    image_token = getattr(processor, "image_token", None) or "<image>"
    return f"USER: {image_token}\n{prompt}\nASSISTANT:"


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
