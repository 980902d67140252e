"""Synthetic benchmarks with planted preferences, to check the lens where the truth is known.

Real benchmarks (GR-V, Yelp-V) need their photos, which were never released with the paper. A
synthetic one plants what they only imply: each user prefers one dish/exhibit/drink kind and one
ambience in the asked category; a controllable share of their history is *irrelevant* (photos
from other categories, with other preferences, and photos of their own life: pets, trips);
candidates are catalog-like items whose descriptions do or do not hold the preferred aspects,
and the ground truth is the candidates holding both.

Examples are made directly in embedding space: a history photo is the encoder's embedding of a
one-line description of it ("a photo of ramen with neon decor at a restaurant") plus Gaussian
noise, since a photo is never exactly its caption. Any encoder works (the real one gives a real
semantic space); the tests use :class:`HashingTextEncoder`, a deterministic bag-of-words space
that needs no model. :func:`write_benchmark` also writes an example set as a JSONL benchmark
with rendered caption cards as photos, to exercise the file path end to end.

Nothing here knows how the lens works: the generator's knobs are properties of users and
catalogs (history size, irrelevant share, how consistent a user's taste is, photo noise).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.evaluate import BenchmarkExample
from visuallens_app.lens.vocabulary import AspectVocabulary
from visuallens_app.models.base import Encoder, l2_normalise

#: Category -> the things photographed and reviewed there (the "specific" aspect).
CATEGORY_THINGS: dict[str, tuple[str, ...]] = {
    "restaurant": (
        "ramen", "sushi", "pizza", "tacos", "curry", "burger",
        "dumplings", "pasta", "steak", "seafood", "pho", "barbecue",
    ),
    "museum": (
        "dinosaur", "sculpture", "painting", "armor", "mummy", "tapestry",
        "fossil", "mosaic", "telescope", "locomotive", "porcelain", "manuscript",
    ),
    "coffee shop": (
        "latte", "espresso", "croissant", "cappuccino", "scone", "matcha",
        "cheesecake", "waffle", "bagel", "macaron", "donut", "muffin",
    ),
    "bar": (
        "cocktail", "whiskey", "beer", "wine", "mojito", "sake",
        "cider", "margarita", "gin", "tequila", "champagne", "vermouth",
    ),
    "bookstore": (
        "novel", "comics", "poetry", "atlas", "cookbook", "manga",
        "biography", "encyclopedia", "postcards", "maps", "zines", "vinyl",
    ),
    "park": (
        "fountain", "playground", "pond", "tulips", "gazebo", "swans",
        "bridge", "maze", "oak", "statue", "carousel", "greenhouse",
    ),
}  # fmt: skip

#: Ambience words shared by every category: where cross-category taste can mislead.
AMBIENCE: tuple[str, ...] = (
    "neon", "candlelit", "rooftop", "garden", "waterfront", "vintage",
    "minimalist", "rustic", "industrial", "baroque", "graffiti", "lanterns",
)  # fmt: skip

#: What people photograph that belongs to no category: their own life.
PERSONAL: tuple[str, ...] = (
    "dog", "cat", "baby", "beach", "mountain", "snow", "sunset", "car",
    "bicycle", "birthday", "wedding", "forest", "river", "train", "airplane", "horse",
)  # fmt: skip

#: Catalog descriptions sometimes mention such things ("dog friendly"): a personal concept can
#: then pull a candidate up when the whole history, not the category's photos, is the profile.
_EXTRAS: tuple[str, ...] = (
    "dog friendly",
    "beach view",
    "kids and baby welcome",
    "mountain view",
    "bicycle parking",
    "sunset terrace",
    "near the river",
    "train station nearby",
)
_NAME_WORDS = (
    "Golden", "Blue", "Old", "Little", "Corner", "Royal", "Silver", "Green",
    "North", "Happy", "Hidden", "Grand", "Lucky", "Velvet", "Copper", "Maple",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """The knobs of a synthetic benchmark (each a property of users or catalogs).

    Parameters
    ----------
    irrelevant_share
        Fraction of each history that is not about the asked category.
    other_category_share
        Of the irrelevant photos, the fraction from other categories (the rest: personal life).
    history
        Range of history sizes (the paper's averages are 157 on GR-V and 264 on Yelp-V).
    candidates
        Range of candidate counts (the paper's: 30-100, averages 43 and 67).
    ground_truth
        Range of ground-truth counts per question (averages 2.7 and 8.2).
    taste
        Probability that a relevant photo shows the user's preferred thing (and, separately,
        the preferred ambience) rather than a random one: how consistent the user is.
    noise
        Norm of the Gaussian noise added to each photo's unit text embedding.

    The defaults keep the task far from the ceiling (a user's preferred thing shows in about
    31% of their category photos, against 6% for any other; photos are noisy): with taste 0.6
    and noise 0.6 every lens variant scores near 100% MRR and nothing can be compared.
    extra_share
        Probability that a candidate's description mentions a personal-life extra.
    """

    irrelevant_share: float = 0.5
    other_category_share: float = 0.5
    history: tuple[int, int] = (150, 260)
    candidates: tuple[int, int] = (30, 50)
    ground_truth: tuple[int, int] = (2, 4)
    taste: float = 0.25
    noise: float = 1.5
    extra_share: float = 0.3

    def __post_init__(self) -> None:
        for name in ("irrelevant_share", "other_category_share", "taste", "extra_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {value}")
        if self.candidates[0] < self.ground_truth[1] + 2:
            raise ValueError("need at least two more candidates than ground truths")


@dataclass(frozen=True, eq=False)
class SyntheticBenchmark:
    """Generated examples, the vocabulary that names their aspects, and each photo's text."""

    examples: tuple[BenchmarkExample, ...]
    vocabulary: AspectVocabulary
    photo_texts: dict[str, tuple[str, ...]]  # example id -> one description per history photo
    config: SyntheticConfig


def synthetic_vocabulary() -> AspectVocabulary:
    """Every aspect a synthetic example can plant, grouped: things, ambience, personal."""
    groups = {t: "things" for values in CATEGORY_THINGS.values() for t in values}
    groups.update(dict.fromkeys(AMBIENCE, "ambience"))
    groups.update(dict.fromkeys(PERSONAL, "personal"))
    return AspectVocabulary(terms=tuple(groups), groups=groups)


def make_benchmark(
    encoder: Encoder,
    n_examples: int,
    *,
    config: SyntheticConfig | None = None,
    seed: int = 0,
    train_share: float = 0.0,
    categories: Sequence[str] | None = None,
) -> SyntheticBenchmark:
    """Generate ``n_examples`` embedding-space questions with planted preferences.

    Each user gets, for every category, a preferred thing and a preferred ambience (drawn
    independently per category, so taste elsewhere is no clue here); the asked category is
    drawn from ``categories``. The first ``train_share`` of the examples are marked ``train``.
    The same ``seed`` gives the same users and candidates whatever the history knobs.
    """
    config = config or SyntheticConfig()
    asked = list(categories or CATEGORY_THINGS)
    unknown = [c for c in asked if c not in CATEGORY_THINGS]
    if unknown:
        raise ValueError(f"unknown synthetic categories: {', '.join(unknown)}")
    embed = _TextEmbeddings(encoder)
    n_train = round(train_share * n_examples)
    examples: list[BenchmarkExample] = []
    texts: dict[str, tuple[str, ...]] = {}
    for index in range(n_examples):
        # Two streams per example: the user and the candidates come from the first, the
        # history from the second. With one seed, benchmarks that differ only in
        # ``irrelevant_share`` then hold the same users and candidate lists, so comparing them
        # is a paired experiment, free of the noise of drawing different users.
        user_rng = np.random.default_rng([seed, index, 0])
        history_rng = np.random.default_rng([seed, index, 1])
        ident = f"synth-{seed}-{index:05d}"
        category = asked[int(user_rng.integers(len(asked)))]
        taste = {
            c: (str(user_rng.choice(things)), str(user_rng.choice(AMBIENCE)))
            for c, things in CATEGORY_THINGS.items()
        }
        personal = [str(p) for p in user_rng.choice(PERSONAL, size=4, replace=False)]
        candidates, truth = _candidates(user_rng, config, category, taste[category], ident)
        photo_texts = _history_texts(history_rng, config, category, taste, personal)
        vectors = embed(photo_texts)
        noise = history_rng.standard_normal(vectors.shape).astype(np.float32)
        noise *= config.noise / np.sqrt(vectors.shape[1])
        vectors = l2_normalise(vectors + noise)
        examples.append(
            BenchmarkExample(
                id=ident,
                question=f"recommend a {category}",
                category=category,
                history=(),
                candidates=tuple(candidates),
                ground_truth=frozenset(truth),
                split="train" if index < n_train else "test",
                history_vectors=vectors,
                history_encoder=encoder.id,
            )
        )
        texts[ident] = tuple(photo_texts)
    return SyntheticBenchmark(tuple(examples), synthetic_vocabulary(), texts, config)


def _photo_text(thing: str, ambience: str, category: str) -> str:
    return f"a photo of {thing} with {ambience} decor at a {category}"


def _history_texts(
    rng: np.random.Generator,
    config: SyntheticConfig,
    category: str,
    taste: dict[str, tuple[str, str]],
    personal: Sequence[str],
) -> list[str]:
    size = int(rng.integers(config.history[0], config.history[1] + 1))
    irrelevant = round(size * config.irrelevant_share)
    relevant = size - irrelevant
    others = [c for c in CATEGORY_THINGS if c != category]
    texts = []
    for _ in range(relevant):
        texts.append(_taste_photo(rng, config, category, taste[category]))
    for _ in range(irrelevant):
        if rng.random() < config.other_category_share:
            other = others[int(rng.integers(len(others)))]
            texts.append(_taste_photo(rng, config, other, taste[other]))
        else:
            texts.append(f"a photo of {personal[int(rng.integers(len(personal)))]}")
    order = rng.permutation(len(texts))
    return [texts[i] for i in order]


def _taste_photo(
    rng: np.random.Generator, config: SyntheticConfig, category: str, liked: tuple[str, str]
) -> str:
    things = CATEGORY_THINGS[category]
    thing = liked[0] if rng.random() < config.taste else str(rng.choice(things))
    ambience = liked[1] if rng.random() < config.taste else str(rng.choice(AMBIENCE))
    return _photo_text(thing, ambience, category)


def _candidates(
    rng: np.random.Generator,
    config: SyntheticConfig,
    category: str,
    liked: tuple[str, str],
    ident: str,
) -> tuple[list[CatalogItem], list[str]]:
    n = int(rng.integers(config.candidates[0], config.candidates[1] + 1))
    g = int(rng.integers(config.ground_truth[0], config.ground_truth[1] + 1))
    things = CATEGORY_THINGS[category]
    made: list[tuple[tuple[str, str], str, bool]] = []
    while len(made) < n:
        is_truth = len(made) < g
        pair = [str(t) for t in rng.choice(things, size=2, replace=False)]
        ambience = str(rng.choice(AMBIENCE))
        if is_truth:
            if liked[0] not in pair:
                pair[int(rng.integers(2))] = liked[0]
            ambience = liked[1]
        elif liked[0] in pair and ambience == liked[1]:
            continue  # would be a ground truth in all but name
        made.append(((pair[0], pair[1]), ambience, is_truth))
    candidates: list[CatalogItem] = []
    truth: list[str] = []
    for position in rng.permutation(n):
        (first, second), ambience, is_truth = made[int(position)]
        name = f"{rng.choice(_NAME_WORDS)} {rng.choice(_NAME_WORDS)} {category.title()}"
        description = f"A {category} with {first} and {second}, {ambience} decor"
        if rng.random() < config.extra_share:
            description += f", {rng.choice(_EXTRAS)}"
        item_id = f"{ident}-c{len(candidates):03d}"
        candidates.append(
            CatalogItem(
                id=item_id,
                name=name,
                category=category,
                description=description + ".",
                tags=(first, second, ambience),
            )
        )
        if is_truth:
            truth.append(item_id)
    return candidates, truth


class _TextEmbeddings:
    """The encoder's text embeddings, each distinct text encoded once per generator run."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._memo: dict[str, NDArray[np.float32]] = {}

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            for text, vector in zip(new, self.encoder.encode_texts(new), strict=True):
                self._memo[text] = vector
        return np.stack([self._memo[t] for t in texts]).astype(np.float32)


# -- a model-free encoder ----------------------------------------------------------------------

# fmt: off
_STOPWORDS = frozenset((
    "a", "an", "the", "of", "at", "with", "and", "in", "on", "for", "to",
    "is", "are", "this", "that", "it", "its", "by", "from", "as", "or", "be",
))
# fmt: on
_TOKEN = re.compile(r"[a-z0-9]+")


class HashingTextEncoder:
    """A deterministic bag-of-words encoder: each word a fixed random direction, no model.

    Texts sharing words are close, texts sharing none are nearly orthogonal, which is what the
    synthetic benchmark's photo descriptions need. Images map to a direction seeded by their
    downscaled pixels (identical images, identical vectors; otherwise unrelated): enough to run
    the file path end to end, not a vision model.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ValueError("dim must be at least 8")
        self._dim = dim
        self._words: dict[str, NDArray[np.float32]] = {}

    @property
    def id(self) -> str:
        return f"hashing-text:v1:d{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def input_size(self) -> int:
        return 64

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.casefold()):
                if token not in _STOPWORDS:
                    out[row] += self._word(token)
        return l2_normalise(out)

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        out = np.zeros((len(images), self._dim), dtype=np.float32)
        for row, image in enumerate(images):
            small = image.convert("L").resize((8, 8), Image.Resampling.BOX)
            out[row] = self._direction(b"image:" + small.tobytes())
        return l2_normalise(out)

    def _word(self, token: str) -> NDArray[np.float32]:
        vector = self._words.get(token)
        if vector is None:
            vector = self._words[token] = self._direction(b"word:" + token.encode())
        return vector

    def _direction(self, key: bytes) -> NDArray[np.float32]:
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self._dim).astype(np.float32)


# -- writing a file benchmark ------------------------------------------------------------------


def write_benchmark(benchmark: SyntheticBenchmark, path: Path, *, photo_size: int = 160) -> Path:
    """Write ``benchmark`` as a JSONL benchmark file with a rendered card per history photo.

    Each card is the photo's description drawn on a background coloured by its words: the
    format, loader, decoder and cache run for real, and a text-reading encoder (CLIP) can make
    sense of it. It is plumbing for end-to-end checks, not a measure of visual recommendation.
    Photos go to ``<path stem>_photos/`` next to the file; returns ``path``.
    """
    path = Path(path)
    folder = path.parent / f"{path.stem}_photos"
    folder.mkdir(parents=True, exist_ok=True)
    cards: dict[str, str] = {}
    lines = []
    for example in benchmark.examples:
        history = []
        for text in benchmark.photo_texts[example.id]:
            name = cards.get(text)
            if name is None:
                name = f"{len(cards):05d}.png"
                _card(text, photo_size).save(folder / name)
                cards[text] = name
            history.append(f"{folder.name}/{name}")
        record = {
            "id": example.id,
            "question": example.question,
            "category": example.category,
            "history": history,
            "candidates": [
                {
                    "id": c.id,
                    "name": c.name,
                    "description": c.description,
                    "images": [],
                    "tags": list(c.tags),
                }
                for c in example.candidates
            ],
            "ground_truth": sorted(example.ground_truth),
            "split": example.split,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _card(text: str, size: int) -> Image.Image:
    digest = hashlib.blake2b(text.encode(), digest_size=3).digest()
    background = tuple(64 + b // 2 for b in digest)
    image = Image.new("RGB", (size, size * 3 // 4), background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, size // 12))
    words, line, y = text.split(), "", 4
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > size - 8 and line:
            draw.text((4, y), line, font=font, fill=(255, 255, 255))
            y += size // 10
            line = word
        else:
            line = trial
    draw.text((4, y), line, font=font, fill=(255, 255, 255))
    return image


__all__ = [
    "AMBIENCE",
    "CATEGORY_THINGS",
    "PERSONAL",
    "HashingTextEncoder",
    "SyntheticBenchmark",
    "SyntheticConfig",
    "make_benchmark",
    "synthetic_vocabulary",
    "write_benchmark",
]
