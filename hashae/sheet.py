"""Contact sheets: a grid of thumbnails with captions, for query hits and clusters."""
from __future__ import annotations

import os

from PIL import Image, ImageDraw, ImageFont

from .ingest import ImageError, load_image

TILE, CAPTION = 128, 28


def contact_sheet(tiles: list, out: str, columns: int = 6, tile: int = TILE) -> str:
    """Write a PNG grid of ``tiles`` (pairs of image path and caption) to ``out``. Unreadable
    images get a grey tile that says so, rather than failing the sheet."""
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, (path, caption) in enumerate(tiles):
        x, y = (n % columns) * tile, (n // columns) * (tile + CAPTION)
        try:
            thumb = Image.fromarray(load_image(path, tile - 8, 3))
        except ImageError:
            thumb = Image.new("RGB", (tile - 8, tile - 8), (200, 200, 200))
            ImageDraw.Draw(thumb).text((6, tile // 2 - 12), "unreadable", fill="black", font=font)
        sheet.paste(thumb, (x + 4, y + 4))
        for i, line in enumerate(_wrap(caption, tile)):
            draw.text((x + 4, y + tile + 1 + 12 * i), line, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out


def _wrap(text: str, width: int) -> list:
    per_line = max(4, width // 7)
    text = str(text)
    return [text[:per_line], text[per_line:2 * per_line]] if len(text) > per_line else [text]


def cluster_sheets(groups: list, folder: str, resolve, out_dir: str, max_sheets: int = 50,
                   per_sheet: int = 36, title: str = "clusters") -> str:
    """One contact sheet per group (largest first, at most ``max_sheets``, ``per_sheet`` images
    each) and an index.html that shows them all; returns the index.html path.
    ``resolve(relative_path)`` gives the file to read."""
    import html
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for n, paths in enumerate(groups[:max_sheets]):
        name = f"cluster-{n:04d}.png"
        tiles = [(resolve(p), p) for p in paths[:per_sheet]]
        contact_sheet(tiles, os.path.join(out_dir, name))
        more = f" (first {per_sheet} shown)" if len(paths) > per_sheet else ""
        rows.append(f'<h2>#{n}: {len(paths)} images{more}</h2><img src="{name}" alt="cluster {n}">')
    if len(groups) > max_sheets:
        rows.append(f"<p>{len(groups) - max_sheets} smaller groups not shown.</p>")
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}: {len(groups)} groups in {html.escape(folder)}</h1>\n" + "\n".join(rows))
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    return index
