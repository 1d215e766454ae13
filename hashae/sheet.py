"""Contact sheets: a grid of thumbnails with captions, for query hits and clusters."""
from __future__ import annotations

import html
import os

from PIL import Image, ImageDraw, ImageFont

from .ingest import ImageError, thumbnail

TILE, LINE, LINES = 128, 12, 3  # tile side, caption line height, caption lines
GROUPS_PER_PAGE, MAX_PAGES = 50, 10


def contact_sheet(tiles: list, out: str, columns: int = 6, tile: int = TILE) -> str:
    """Write a PNG grid of ``tiles`` (pairs of image path and caption) to ``out``: each picture
    fitted in its tile with its aspect ratio kept, each caption over up to three lines (the
    middle of a longer one elided). Unreadable images get a grey tile that says so."""
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    cell = tile + LINE * LINES + 4
    sheet = Image.new("RGB", (columns * tile, rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    side = tile - 8
    for n, (path, caption) in enumerate(tiles):
        x, y = (n % columns) * tile, (n // columns) * cell
        try:
            thumb = thumbnail(path, side)
            scale = min(side / thumb.width, side / thumb.height)
            if scale > 1:  # small pictures fill their tile too, aspect kept
                thumb = thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))),
                                     Image.Resampling.BILINEAR)
        except ImageError:
            thumb = Image.new("RGB", (side, side), (200, 200, 200))
            ImageDraw.Draw(thumb).text((6, side // 2 - 6), "unreadable", fill="black", font=font)
        sheet.paste(thumb, (x + 4 + (side - thumb.width) // 2, y + 4 + (side - thumb.height) // 2))
        for i, line in enumerate(wrap(caption, tile)):
            draw.text((x + 4, y + tile + 1 + LINE * i), line, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out


def wrap(text: str, width: int, lines: int = LINES) -> list:
    """``text`` cut into at most ``lines`` lines of the characters that fit ``width`` pixels,
    the middle elided with "..." when it is longer (both ends of a path say the most)."""
    per_line = max(4, width // 7)
    text = str(text)
    room = per_line * lines
    if len(text) > room:
        head = (room - 3) // 2
        text = text[:head] + "..." + text[len(text) - (room - 3 - head):]
    return [text[i:i + per_line] for i in range(0, len(text), per_line)] or [""]


def cluster_sheets(groups: list, folder: str, resolve, out_dir: str, per_sheet: int = 36,
                   title: str = "clusters") -> str:
    """One contact sheet per group (largest first; the first ``per_sheet`` members of each, so
    order each group as it should be shown, e.g. nearest its centre first) and pages of
    ``GROUPS_PER_PAGE`` groups, index.html first, at most MAX_PAGES pages; returns the
    index.html path. ``resolve(relative_path)`` gives the file to read."""
    os.makedirs(out_dir, exist_ok=True)
    shown = groups[:GROUPS_PER_PAGE * MAX_PAGES]
    pages = max(1, -(-len(shown) // GROUPS_PER_PAGE))

    def page_name(p):
        return "index.html" if p == 0 else f"index-{p + 1}.html"

    for p in range(pages):
        rows = []
        for n in range(p * GROUPS_PER_PAGE, min(len(shown), (p + 1) * GROUPS_PER_PAGE)):
            paths = shown[n]
            name = f"cluster-{n:04d}.png"
            contact_sheet([(resolve(q), q) for q in paths[:per_sheet]], os.path.join(out_dir, name))
            more = (f" ({per_sheet} shown, the nearest to the group's centre; {len(paths) - per_sheet} more not "
                    "shown)") if len(paths) > per_sheet else ""
            rows.append(f'<h2>#{n}: {len(paths)} images{more}</h2><img src="{name}" alt="cluster {n}">')
        if p == pages - 1 and len(groups) > len(shown):
            rows.append(f"<p>{len(groups) - len(shown)} smaller groups not shown.</p>")
        links = []
        if p > 0:
            links.append(f'<a href="{page_name(p - 1)}">&larr; previous</a>')
        links.append(f"page {p + 1} of {pages}")
        if p + 1 < pages:
            links.append(f'<a href="{page_name(p + 1)}">next &rarr;</a>')
        nav = f"<p>{' '.join(links)}</p>"
        page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}: {len(groups)} groups in {html.escape(folder)}</h1>\n{nav}\n"
                + "\n".join(rows) + f"\n{nav}")
        with open(os.path.join(out_dir, page_name(p)), "w", encoding="utf-8") as f:
            f.write(page)
    return os.path.join(out_dir, "index.html")


MAP_TILE = 48


def map_sheet(files: list, cells, side: int, out: str, tile: int = MAP_TILE) -> str:
    """Write a PNG map: the picture of ``files[i]`` in grid cell ``cells[i]`` (column, row) of a
    ``side`` x ``side`` grid, each fitted in its tile with its aspect ratio kept."""
    sheet = Image.new("RGB", (side * tile, side * tile), "white")
    inner = tile - 2
    for path, (col, row) in zip(files, cells):
        try:
            thumb = thumbnail(path, inner)
        except ImageError:
            thumb = Image.new("RGB", (inner, inner), (200, 200, 200))
        sheet.paste(thumb, (int(col) * tile + 1 + (inner - thumb.width) // 2,
                            int(row) * tile + 1 + (inner - thumb.height) // 2))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out
