"""Real photos for tests: scikit-image's bundled samples (offline: the files ship in its wheel).

A plain module, not a conftest: ``from samples import sample_image`` resolves the same from any
test folder (a ``conftest`` import would find the nearest one).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def sample_image(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image (offline: the files ship in its wheel)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    path = next(folder.glob(f"{name}.*"))
    with Image.open(path) as image:
        return image.convert("RGB")


def hub_image(seed: int = 0, size: int = 320) -> Image.Image:
    """A procedurally generated "photo" of nothing: blurred colour noise.

    The classifier is unsure of such images (top class below 0.1), which put the first
    embedded encoder's vectors near the centre of the space, close to every prompt (issue 10).
    """
    import numpy as np
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    image = Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(6))


_PAGE_TEXT = (
    "Chapter 3. The history of the river valley begins long before the first settlers "
    "arrived. Records kept by the parish show that the mill was rebuilt twice, once after "
    "the flood of 1821 and again after a fire that destroyed the granary. The accounts list "
    "wages, prices of grain and the names of the families who worked the fields, and they "
    "describe the weather of every season in patient detail."
)


def photographed_page(seed: int = 0, size: tuple[int, int] = (600, 800)) -> Image.Image:
    """A page of printed text as a phone photographs it: off-white paper, uneven light, tilted.

    Rendered with Pillow (no file needed): wrapped paragraphs, a light fall-off from one
    corner, a few degrees of rotation over a dark desk, and mild blur.
    """
    import numpy as np
    from PIL import ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    width, height = size
    page = Image.new("RGB", size, (236, 232, 220))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=20)
    y = 40
    words = (_PAGE_TEXT + " ") * 4
    line = ""
    for word in words.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > width - 80:
            draw.text((40, y), line, font=font, fill=(30, 30, 34))
            y += 28
            line = word
            if y > height - 60:
                break
        else:
            line = trial
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.0 - 0.45 * ((xx / width) * 0.6 + (yy / height) * 0.4)
    lit = (np.asarray(page, dtype=np.float32) * light[..., None]).clip(0, 255).astype(np.uint8)
    desk = Image.new("RGB", (int(width * 1.25), int(height * 1.2)), (70, 52, 40))
    desk.paste(Image.fromarray(lit), (int(width * 0.12), int(height * 0.1)))
    angle = float(rng.uniform(4.0, 9.0))
    tilted = desk.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(70, 52, 40))
    return tilted.filter(ImageFilter.GaussianBlur(1.0))
