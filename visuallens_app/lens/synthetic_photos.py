"""A synthetic benchmark whose photos pass through the real classifier bottleneck.

:mod:`visuallens_app.lens.synthetic` makes photos from caption embeddings in a bag-of-words
space: it cannot see what goes wrong on real photos with the embedded encoder (issue 10), where
every photo is the probability-weighted mean of ImageNet class names. Here a photo *is* an
ImageNet probability vector, made the way the classifier answers real photos, and the real
encoder maps it, signals included
(:meth:`~visuallens_app.models.embedded.EmbeddedEncoder.vectors_from_probabilities`):

- a clear photo: one class of its subject at 0.35-0.9, some mass on its subject's sibling
  classes, the rest spread thinly over everything (as real photos are: cat 0.59 + tiger cat
  0.21 + tabby 0.12);
- a blurry or odd photo of the same subject: its class at only 0.04-0.15 and the rest nearly
  flat (the flower of the issue at 0.12, blurred noise at 0.04): the hubs;
- a hub of nothing (generated images, textures): flat;
- documents and screenshots: 40-80% on document classes (a photographed page: 0.71).

Categories are made of *themes* that compete on nearby concepts (cats vs birds vs fish vs dogs
in a pet store; space vs aviation vs maritime vs art in a museum), each theme a few ImageNet
classes and a catalog-like description. A user prefers one theme of the asked category; the
ground truth is the candidates of that theme. Histories hold 10-300 photos: some of the asked
category (mostly the preferred theme, partly others, some blurry), photos of other categories,
personal life (landscapes, vehicles, people), hubs and documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.evaluate import BenchmarkExample
from visuallens_app.models.base import PhotoSignals

N_CLASSES = 1000


@dataclass(frozen=True, slots=True)
class Theme:
    """One kind of candidate: the ImageNet classes its photos show and how catalogs word it."""

    name: str
    classes: tuple[int, ...]
    descriptions: tuple[str, ...]


# ImageNet-1k indices (tests/test_synthetic_photos.py checks the names behind them).
THEMES: dict[str, tuple[Theme, ...]] = {
    "pet store": (
        Theme("cats", (281, 282, 283, 284, 285), (
            "Cat supplies: cat food, litter, scratching posts and toys for cats and kittens",
            "Everything for cat owners, from kitten food to cat trees and catnip",
            "A cat specialist with cat beds, grooming for long-haired cats and cat carriers",
        )),
        Theme("birds", (87, 88, 89, 90), (
            "Parrots and cage birds: bird seed, cages, perches and toys for parrots",
            "A bird shop with macaws, cockatoos and budgies, cages and bird food",
            "Supplies for pet birds: aviaries, millet, cuttlebone and parrot toys",
        )),
        Theme("fish", (1, 392, 393, 396, 397), (
            "Aquarium fish: tropical fish, fish tanks, filters and fish food",
            "An aquarium shop with goldfish, clownfish, coral and marine tanks",
            "Everything for fish keepers: aquariums, pumps, plants and tropical fish",
        )),
        Theme("dogs", (207, 208, 162, 254, 259), (
            "Dog supplies: dog food, leashes, beds and chew toys for dogs and puppies",
            "A dog shop with grooming, puppy training gear, collars and dog treats",
            "Everything for dog owners, from kibble to harnesses and dog crates",
        )),
        Theme("reptiles", (37, 39, 47), (
            "Reptiles: terrariums, heat lamps and food for turtles, lizards and iguanas",
            "A reptile specialist with chameleons, geckos, turtles and vivariums",
            "Supplies for reptile keepers: UV lamps, live insects and terrarium decor",
        )),
    ),
    "museum": (
        Theme("space", (812, 657, 744, 727, 755), (
            "Space exploration: rockets, a space shuttle, a planetarium and radio telescopes",
            "A space museum with launch vehicles, astronaut suits and a planetarium dome",
            "The history of spaceflight: rockets, satellites and mission control",
        )),
        Theme("aviation", (895, 404, 405, 417), (
            "Aviation: warplanes, airliners, airships and hot-air balloons",
            "An air museum with fighter planes, a jumbo jet and early flying machines",
            "The history of flight, from balloons and zeppelins to jet aircraft",
        )),
        Theme("maritime", (780, 724, 510, 913, 914, 437), (
            "Maritime history: sailing ships, shipwrecks, lighthouses and harbour models",
            "A maritime museum with a tall ship, pirate history and ocean liners",
            "Ships and the sea: schooners, container ships, navigation and wrecks",
        )),
        Theme("art", (883, 643, 863, 406, 682), (
            "Art and antiquities: ancient vases, carved masks, totem poles and altars",
            "A museum of world art with sculpture, ceramics, masks and sacred objects",
            "Antiquities and sculpture: Greek vases, obelisks and ritual masks",
        )),
        Theme("railway", (820, 547, 705, 565), (
            "Railway history: steam locomotives, electric trains and old passenger carriages",
            "A railway museum with engines, freight wagons and a model railway",
            "Trains through the ages: steam engines, dining cars and signal boxes",
        )),
    ),
    "coffee shop": (
        Theme("espresso", (967, 550, 504, 505), (
            "An espresso bar: espresso, cappuccino and a big lever espresso machine",
            "Specialty coffee: single-origin espresso, flat whites and pour-over",
            "A coffee roaster's bar with espresso, cortado and coffee beans to take home",
        )),
        Theme("bakery", (931, 932, 930, 415), (
            "A bakery café with fresh bread, bagels, pretzels and baguettes",
            "Sourdough loaves, bagels and pastries baked every morning, with coffee",
            "A café in a bakery: warm bread, pretzels and sandwiches",
        )),
        Theme("desserts", (927, 928, 960, 509), (
            "A dessert café: ice cream, trifle, chocolate cake and sweets",
            "Cakes, sundaes and hot chocolate in a confectionery café",
            "A patisserie café with gelato, chocolate desserts and cream cakes",
        )),
        Theme("tea", (849, 968), (
            "A tea room: pots of loose-leaf tea served in fine china cups",
            "Afternoon tea with teapots, cups and saucers, and a long tea menu",
            "A tea house with green, black and herbal teas by the pot",
        )),
    ),
    "restaurant": (
        Theme("pizza", (963,), (
            "A pizzeria with wood-fired Neapolitan pizza",
            "Pizza by the slice and whole pies from a stone oven",
            "Thin-crust pizza, calzone and antipasti",
        )),
        Theme("burgers", (933, 934), (
            "A burger joint: cheeseburgers, hot dogs and fries",
            "Smash burgers, chili dogs and milkshakes",
            "An American diner with burgers and hot dogs",
        )),
        Theme("mexican", (965, 924), (
            "A Mexican kitchen: burritos, guacamole and tacos",
            "Burritos, nachos with fresh guacamole and salsa",
            "A taqueria with burritos, quesadillas and guacamole",
        )),
        Theme("pasta", (959, 923), (
            "An Italian trattoria: spaghetti carbonara and fresh pasta",
            "Handmade pasta plates, carbonara and risotto",
            "A pasta bar with carbonara, lasagne and gnocchi",
        )),
    ),
}  # fmt: skip

#: Personal life, in no category: landscapes, vehicles, people.
PERSONAL_CLASSES: tuple[tuple[int, ...], ...] = (
    (978, 977, 973),  # seashore, sandbar, coral reef
    (970, 979, 980, 972),  # alp, valley, volcano, cliff
    (975, 976),  # lakeside, promontory
    (671, 444),  # mountain bike, bicycle-built-for-two
    (656, 817, 511, 751),  # minivan, sports car, convertible, racer
    (982, 983, 981),  # groom, scuba diver, ballplayer
)
#: Documents, screens and printed matter (the embedded encoder's DOCUMENT_CLASSES plus screens).
DOCUMENT_LIKE = (446, 549, 692, 916, 917, 918, 921, 922)
SCREENS = (664, 782, 916)

_NAME_WORDS = (
    "Golden", "Blue", "Old", "Little", "Corner", "Royal", "Silver", "Green",
    "North", "Happy", "Hidden", "Grand", "Lucky", "Velvet", "Copper", "Maple",
)  # fmt: skip


class ProbabilityEncoder(Protocol):
    """An encoder that maps class probabilities to vectors (the embedded one)."""

    @property
    def id(self) -> str: ...

    def vectors_from_probabilities(
        self, probs: NDArray[np.floating]
    ) -> tuple[NDArray[np.float32], PhotoSignals]: ...


@dataclass(frozen=True, slots=True)
class PhotoBenchmarkConfig:
    """The knobs of a probability-photo benchmark (each a property of users and photos).

    Parameters
    ----------
    history
        Range of history sizes (log-uniform).
    relevant_share
        Range of the share of a history that is about the asked category.
    taste
        Range of the share of those photos that show the preferred theme.
    blurry_share
        Share of every subject photo that is blurry or odd (a hub of its subject).
    hub_share, document_share
        Shares of the history that are hubs of nothing and documents/screenshots.
    candidates_per_theme
        Candidates of each theme in a question (the ground truth is one theme's).
    """

    history: tuple[int, int] = (10, 300)
    relevant_share: tuple[float, float] = (0.1, 0.4)
    taste: tuple[float, float] = (0.4, 0.8)
    blurry_share: float = 0.2
    hub_share: float = 0.06
    document_share: float = 0.06
    candidates_per_theme: int = 3


def _spread(rng: np.random.Generator, mass: float, concentration: float) -> NDArray[np.float64]:
    """``mass`` spread over all classes by a symmetric Dirichlet (small: spiky, large: flat)."""
    return mass * rng.dirichlet(np.full(N_CLASSES, concentration))


def subject_photo(
    rng: np.random.Generator, classes: Sequence[int], *, blurry: bool = False
) -> NDArray[np.float64]:
    """Probabilities the classifier gives a photo of something in ``classes``."""
    p = np.zeros(N_CLASSES)
    main = int(rng.choice(classes))
    if blurry:
        peak, siblings, rest_concentration = rng.uniform(0.04, 0.15), 0.15, 0.3
    else:
        peak, siblings, rest_concentration = rng.uniform(0.35, 0.9), 0.6, 0.02
    p[main] = peak
    rest = 1.0 - peak
    others = [c for c in classes if c != main]
    if others:
        p[others] += rest * siblings * rng.dirichlet(np.ones(len(others)))
        rest *= 1.0 - siblings
    return p + _spread(rng, rest, rest_concentration)


def hub_photo(rng: np.random.Generator) -> NDArray[np.float64]:
    """A generated image or texture: nothing stands out (top class ~0.02-0.1)."""
    return _spread(rng, 1.0, 0.5)


def document_photo(rng: np.random.Generator) -> NDArray[np.float64]:
    """A photographed page or a screenshot: most of the mass on document or screen classes."""
    p = np.zeros(N_CLASSES)
    classes = DOCUMENT_LIKE if rng.random() < 0.6 else SCREENS
    mass = rng.uniform(0.4, 0.8)
    p[list(classes)] = mass * rng.dirichlet(np.full(len(classes), 0.5))
    return p + _spread(rng, 1.0 - mass, 0.1)


def make_photo_benchmark(
    encoder: ProbabilityEncoder,
    n_examples: int,
    *,
    config: PhotoBenchmarkConfig | None = None,
    seed: int = 0,
    train_share: float = 0.0,
    categories: Sequence[str] | None = None,
) -> tuple[BenchmarkExample, ...]:
    """``n_examples`` questions whose histories are probability vectors mapped by ``encoder``.

    The first ``train_share`` of them are marked ``train``. The same ``seed`` gives the same
    users, candidates and photos.
    """
    config = config or PhotoBenchmarkConfig()
    asked = list(categories or THEMES)
    unknown = [c for c in asked if c not in THEMES]
    if unknown:
        raise ValueError(f"unknown categories: {', '.join(unknown)}")
    n_train = round(train_share * n_examples)
    examples = []
    for index in range(n_examples):
        rng = np.random.default_rng([seed, index])
        ident = f"photos-{seed}-{index:05d}"
        category = asked[int(rng.integers(len(asked)))]
        taste = {c: int(rng.integers(len(themes))) for c, themes in THEMES.items()}
        candidates, truth = _candidates(rng, config, category, taste[category], ident)
        probs = _history(rng, config, category, taste)
        vectors, signals = encoder.vectors_from_probabilities(probs)
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
                history_confidence=signals.confidence,
                history_document=signals.document,
            )
        )
    return tuple(examples)


def _history(
    rng: np.random.Generator,
    config: PhotoBenchmarkConfig,
    category: str,
    taste: dict[str, int],
) -> NDArray[np.float32]:
    low, high = config.history
    size = round(float(np.exp(rng.uniform(np.log(low), np.log(high)))))
    n_hub = int(rng.binomial(size, config.hub_share))
    n_doc = int(rng.binomial(size, config.document_share))
    n_relevant = max(1, round(size * rng.uniform(*config.relevant_share)))
    n_other = max(0, size - n_hub - n_doc - n_relevant)
    liked = rng.uniform(*config.taste)
    themes = THEMES[category]
    rows: list[NDArray[np.float64]] = []
    for _ in range(n_relevant):
        pick = taste[category] if rng.random() < liked else int(rng.integers(len(themes)))
        blurry = bool(rng.random() < config.blurry_share)
        rows.append(subject_photo(rng, themes[pick].classes, blurry=blurry))
    others = [c for c in THEMES if c != category]
    for _ in range(n_other):
        blurry = bool(rng.random() < config.blurry_share)
        if rng.random() < 0.5:
            other = others[int(rng.integers(len(others)))]
            theme = THEMES[other][taste[other] if rng.random() < 0.6 else int(rng.integers(4))]
            rows.append(subject_photo(rng, theme.classes, blurry=blurry))
        else:
            group = PERSONAL_CLASSES[int(rng.integers(len(PERSONAL_CLASSES)))]
            rows.append(subject_photo(rng, group, blurry=blurry))
    rows.extend(hub_photo(rng) for _ in range(n_hub))
    rows.extend(document_photo(rng) for _ in range(n_doc))
    matrix = np.stack(rows)[rng.permutation(len(rows))]
    out: NDArray[np.float32] = (matrix / matrix.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def _candidates(
    rng: np.random.Generator,
    config: PhotoBenchmarkConfig,
    category: str,
    liked: int,
    ident: str,
) -> tuple[list[CatalogItem], list[str]]:
    made: list[tuple[int, str]] = []
    for t, theme in enumerate(THEMES[category]):
        picks = rng.permutation(len(theme.descriptions))
        for j in range(config.candidates_per_theme):
            made.append((t, theme.descriptions[int(picks[j % len(picks)])]))
    candidates: list[CatalogItem] = []
    truth: list[str] = []
    for position in rng.permutation(len(made)):
        t, description = made[int(position)]
        item_id = f"{ident}-c{len(candidates):03d}"
        name = f"{rng.choice(_NAME_WORDS)} {rng.choice(_NAME_WORDS)} {category.title()}"
        candidates.append(
            CatalogItem(id=item_id, name=name, category=category, description=description + ".")
        )
        if t == liked:
            truth.append(item_id)
    return candidates, truth


__all__ = [
    "THEMES",
    "PhotoBenchmarkConfig",
    "ProbabilityEncoder",
    "Theme",
    "document_photo",
    "hub_photo",
    "make_photo_benchmark",
    "subject_photo",
]
