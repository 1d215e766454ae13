"""A built-in labelled sample: synthetic images of shapes, one folder per class, generated here
(no downloads), for the demo, the tests and a first look at what hashae does."""
from __future__ import annotations

import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "cross", "stripes", "ring")


def _draw(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    hue = (CLASSES.index(kind) / len(CLASSES) + rng.normal(0, 0.03)) % 1.0
    fg = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1), rng.uniform(0.5, 0.9)))
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = size * rng.uniform(0.25, 0.38)
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    box = [cx - r, cy - r, cx + r, cy + r]
    w = max(2, int(r / 3))
    if kind == "circle":
        d.ellipse(box, fill=fg)
    elif kind == "square":
        d.rectangle(box, fill=fg)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif kind == "cross":
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    elif kind == "stripes":
        step = max(4, int(size / rng.uniform(5, 8)))
        for x in range(0, size, 2 * step):
            d.rectangle([x, 0, x + step - 1, size], fill=fg)
    elif kind == "ring":
        d.ellipse(box, outline=fg, width=w)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def make_sample(folder: str, per_class: int = 40, size: int = 64, seed: int = 0,
                classes=CLASSES) -> list:
    """Write ``per_class`` PNG images for each class to ``folder/<class>/<class>_NNN.png``;
    returns the written paths. Same seed, same images."""
    rng = np.random.default_rng(seed)
    written = []
    for kind in classes:
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(folder, kind, f"{kind}_{i:03d}.png")
            _draw(kind, rng, size).save(path)
            written.append(path)
    return written
