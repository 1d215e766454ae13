"""Server-rendered HTML pages: pure functions from plain data to a page. Every string that
comes from a file name or the collection file goes through ``esc``; the page's script puts
names into the page with textContent only."""
from __future__ import annotations

import html
from urllib.parse import urlencode

PER_PAGE = 60  # thumbnails per page of the item grid
GROUPS_PER_PAGE = 20
GROUP_THUMBS = 12


def esc(text) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body{font:14px system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#223;color:#fff;padding:8px 16px}header a{color:#cde;margin-right:16px}
main{padding:12px 16px}h1{font-size:20px}h2{font-size:16px;margin:18px 0 6px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.tile{width:168px;font-size:12px;word-break:break-all}
.tile img{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
#drop{border:2px dashed #889;padding:18px;margin:10px 0;background:#fff;max-width:520px}
#drop.over{background:#eef}.error{color:#a00}.pager a{margin-right:12px}
table.info td{padding:2px 12px 2px 0}
.big{width:min(480px,90vw);max-height:480px;object-fit:contain;background:#eee}
.map{position:relative;background:#fff;border:1px solid #ccd}
.map a{position:absolute;display:block}.map img{width:100%;height:100%;object-fit:contain}
"""

SEARCH_SCRIPT = """
const drop = document.getElementById('drop'), input = document.getElementById('file');
const hits = document.getElementById('hits'), status = document.getElementById('status');
async function search(file) {
  status.textContent = 'searching ' + file.name + ' ...'; status.className = '';
  hits.replaceChildren();
  const form = new FormData(); form.append('image', file);
  const response = await fetch('/api/search?k=24', {method: 'POST', body: form});
  const body = await response.json();
  if (!response.ok) { status.textContent = body.error; status.className = 'error'; return; }
  status.textContent = body.hits.length + ' nearest items to ' + body.query;
  for (const hit of body.hits) {
    const a = document.createElement('a'); a.className = 'tile hit'; a.href = '/items/' + hit.id;
    const img = document.createElement('img'); img.src = '/thumbs/' + hit.id; img.alt = hit.path;
    const caption = document.createElement('div');
    caption.textContent = 'd=' + hit.distance + ' ' + hit.path;
    a.append(img, caption); hits.append(a);
  }
}
input.addEventListener('change', () => input.files.length && search(input.files[0]));
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => {
  e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files.length) search(e.dataTransfer.files[0]);
});
"""


def page(title: str, body: str, script: str = "") -> str:
    nav = ('<a href="/">collection</a><a href="/clusters">clusters</a><a href="/duplicates">duplicates</a>'
           '<a href="/map">map</a><a href="/outliers">outliers</a>')
    tail = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{esc(title)} - hashae</title>"
            f"<style>{STYLE}</style></head><body><header>{nav}</header><main>{body}</main>{tail}</body></html>")


def tile(item_id: int, path: str, caption: str | None = None) -> str:
    return (f'<a class="tile" href="/items/{item_id}"><img loading="lazy" src="/thumbs/{item_id}" alt="{esc(path)}">'
            f"<div>{esc(caption if caption is not None else path)}</div></a>")


def pager(base: str, page_no: int, pages: int, params: dict | None = None) -> str:
    def link(n, text):
        return f'<a href="{esc(base)}?{esc(urlencode({**(params or {}), "page": n}))}">{text}</a>'
    parts = []
    if page_no > 0:
        parts.append(link(page_no - 1, "&larr; previous"))
    parts.append(f"page {page_no + 1} of {max(pages, 1)}")
    if page_no + 1 < pages:
        parts.append(link(page_no + 1, "next &rarr;"))
    return f'<p class="pager">{" ".join(parts)}</p>'


def home(info: dict, model_line: str, items: list, page_no: int, pages: int) -> str:
    """The collection, the search box and one page of the item grid; ``items`` (id, path)."""
    rows = [("collection", info["path"]), ("folder", info["folder"]), ("items", info["items"]),
            ("skipped", info["skipped"]), ("bits", info["bits"]), ("model", model_line)]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    grid = "".join(tile(i, p) for i, p in items)
    body = (f'<h1>hashae</h1><table class="info">{table}</table>'
            '<div id="drop"><b>Find similar:</b> drop an image here or '
            '<input type="file" id="file" accept="image/*"></div><p id="status"></p><div id="hits" class="grid"></div>'
            f'<h2>Items</h2>{pager("/", page_no, pages)}<div class="grid">{grid}</div>{pager("/", page_no, pages)}')
    return page("collection", body, SEARCH_SCRIPT)


def item(item_id: int, path: str, hits: list) -> str:
    """One item and its nearest items; ``hits`` (id, path, distance), the item itself left out."""
    grid = "".join(tile(i, p, f"d={d} {p}") for i, p, d in hits)
    body = (f"<h1>{esc(path)}</h1><p>item {item_id}</p>"
            f'<img class="big" src="/images/{item_id}" alt="{esc(path)}">'
            f'<h2>Nearest items</h2><div class="grid" id="nearest">{grid}</div>')
    return page(path, body)


def groups(title: str, groups_on_page: list, first: int, total: int, page_no: int, pages: int, base: str,
           params: dict) -> str:
    """Rows of thumbnails, one per group, largest first; ``groups_on_page``: lists of (id, path)."""
    rows = []
    for n, members in enumerate(groups_on_page, start=first):
        more = len(members) - GROUP_THUMBS
        thumbs = "".join(tile(i, p) for i, p in members[:GROUP_THUMBS])
        extra = f"<p>... and {more} more (shown: the nearest to the group's centre)</p>" if more > 0 else ""
        rows.append(f'<h2>#{n}: {len(members)} images</h2><div class="grid group">{thumbs}</div>{extra}')
    body = (f"<h1>{esc(title)}: {total} groups</h1>{pager(base, page_no, pages, params)}" + "".join(rows)
            + pager(base, page_no, pages, params))
    return page(title, body)


MAP_CELL = 48  # pixels per grid cell of the map page


def map_page(placed: list, side: int, total: int) -> str:
    """The collection's map: ``placed`` (id, path, column, row) on a ``side`` x ``side`` grid."""
    tiles = "".join(f'<a href="/items/{i}" title="{esc(p)}" style="left:{c * MAP_CELL}px;top:{r * MAP_CELL}px;'
                    f'width:{MAP_CELL - 2}px;height:{MAP_CELL - 2}px"><img loading="lazy" src="/thumbs/{i}" '
                    f'alt="{esc(p)}"></a>' for i, p, c, r in placed)
    note = f"{len(placed)} of {total} items (a sample)" if len(placed) < total else f"{total} items"
    body = (f"<h1>Map</h1><p>{note}, placed by their codes: similar pictures sit together.</p>"
            f'<div class="map" style="width:{side * MAP_CELL}px;height:{side * MAP_CELL}px">{tiles}</div>')
    return page("map", body)


def outliers_page(found: list) -> str:
    """The items that fit the collection least; ``found`` (id, path, score), highest first."""
    grid = "".join(tile(i, p, f"{s:.3f} {p}") for i, p, s in found)
    body = (f"<h1>Outliers</h1><p>The {len(found)} items that fit the collection least, by how badly their "
            "code rebuilds them, how far they are from their nearest items, and how unusual their colours and "
            f'pixels are.</p><div class="grid">{grid}</div>')
    return page("outliers", body)
