"""The report page: one self-contained HTML file (inline CSS, no script, no remote URL).

Every function returns an HTML fragment; every piece of text from the run passes through
:func:`html.escape`. Pictures are referenced by relative ``src`` paths inside the report folder.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .grid import Gallery, Grid, Picture

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1240px;padding:0 18px 40px;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin:18px 0 4px}h2{font-size:1.35em;border-bottom:2px solid #ccd;padding-bottom:3px;margin-top:40px}
h3{font-size:1.1em;margin-top:26px}p.meta{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #bbc;padding:3px 7px}
th{background:#eef0f6}td.v{text-align:right;white-space:nowrap}caption{text-align:left;color:#444;padding:4px 0;font-size:.92em}
.notes{background:#fff6dc;border:1px solid #e0c060;border-radius:6px;padding:8px 14px;margin:14px 0}
.notes li{margin:3px 0}.msg{background:#eef3fb;border-left:4px solid #6b8fd6;padding:6px 10px}
nav.toc{background:#f6f7fa;border:1px solid #dde;border-radius:6px;padding:6px 14px;font-size:.92em}
nav.toc ul{margin:4px 0;padding-left:20px}nav.toc li{margin:2px 0}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#444;font-size:.9em;max-width:1000px}
table.pics td,table.pics th{border:none;padding:2px 3px;vertical-align:top;text-align:center;font-size:.78em}
table.pics img{display:block;border:1px solid #ccc}table.pics th img.bar{width:100%;height:10px;border:none;margin:2px 0}
.scroll{overflow-x:auto}.groups{display:flex;flex-wrap:wrap;gap:8px 28px}.groups p{margin:4px 0}
.key{font-family:ui-monospace,monospace}
.sup{background:#e8dcff;color:#4b2a8a;border-radius:3px;padding:0 4px;font-size:.8em;font-weight:normal}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.item{border:1px solid #dde;border-radius:4px;padding:4px;font-size:.78em;text-align:center}
.item img{display:inline-block;margin:1px}.none{display:inline-block;width:120px;height:90px;background:#eee;color:#777;
font-size:.8em;line-height:90px}
""".strip()


def e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def img(picture: Picture, cls: str = "") -> str:
    """An ``<img>`` with alt text, or a grey box naming what is missing."""
    if picture.src is None:
        return f'<span class="none" title="{e(picture.alt)}">{e(picture.caption or "unavailable")}</span>'
    attr = f' class="{e(cls)}"' if cls else ""
    return f'<img src="{e(picture.src)}" alt="{e(picture.alt)}"{attr}>'


def figure(src: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{e(src)}" alt="{e(alt)}"><figcaption>{e(caption)}</figcaption></figure>'


def message(text: str) -> str:
    return f'<p class="msg">{e(text)}</p>'


def sup_badge(supervised: bool) -> str:
    return ' <span class="sup" title="supervised: trained with labelled defects">supervised</span>' if supervised else ""


def notes_box(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{e(line)}</li>" for line in lines)
    return f'<section class="notes" id="notes"><b>Notes: what this report skipped</b><ul>{items}</ul></section>'


def toc(entries: Iterable[tuple[str, str, list[tuple[str, str]]]]) -> str:
    """A nested list of links: (anchor, title, [(sub-anchor, sub-title), ...])."""
    parts = ['<nav class="toc"><b>Contents</b><ul>']
    for anchor, title, children in entries:
        parts.append(f'<li><a href="#{e(anchor)}">{e(title)}</a>')
        if children:
            parts.append("<ul>" + "".join(f'<li><a href="#{e(a)}">{e(t)}</a></li>' for a, t in children) + "</ul>")
        parts.append("</li>")
    parts.append("</ul></nav>")
    return "".join(parts)


def simple_table(header: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", numeric_from: int = 1) -> str:
    """A table of already-escaped cell HTML (header escaped here)."""
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{e(caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = [f'<td class="v">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row)]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


# --------------------------------------------------------------------------- pictures


def grid_html(grid: Grid, anchor: str) -> str:
    parts = [message(m) for m in grid.messages]
    shown = [s for s in grid.scales if s.has_maps]
    for scale in grid.scales:
        if not scale.has_maps:
            parts.append(message(f"{scale.method}: {scale.why_not}."))
    if not grid.rows:
        return "".join(parts)
    head = ["<tr><th>test image</th><th>image</th><th>ground truth</th>"]
    for scale in shown:
        threshold = "no calibrated map threshold" if scale.threshold is None else f"99 % threshold {scale.threshold:.4g}"
        bar = img(scale.bar, "bar") if scale.bar else ""
        head.append(
            f"<th>{e(scale.method)}{sup_badge(scale.supervised)}<br>seed {e(scale.seed)}{bar}"
            f"{e(f'{scale.low:.4g}')} … {e(f'{scale.high:.4g}')}<br>{e(threshold)}</th>"
        )
    head.append("</tr>")
    rows = []
    for row in grid.rows:
        cells = [f'<td class="key">{e(row.key)}</td>', f"<td>{img(row.image)}</td>", f"<td>{img(row.ground_truth)}</td>"]
        cells += [f"<td>{img(row.maps[s.method])}</td>" if s.method in row.maps else "<td></td>" for s in shown]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    keys = ", ".join(row.key for row in grid.rows)
    table = f'<table class="pics" id="{e(anchor)}-grid-table" data-keys="{e(keys)}">' + "".join(head) + "".join(rows) + "</table>"
    parts.append(f'<div class="scroll">{table}</div>')
    return "".join(parts)


def galleries_html(galleries: Sequence[Gallery]) -> str:
    parts = []
    for gallery in galleries:
        parts.append(f"<h4>{e(gallery.method)}{sup_badge(gallery.supervised)} (seed {e(gallery.seed)})</h4>")
        if gallery.message:
            parts.append(message(f"Maps not shown: {gallery.message}."))
        groups = []
        for title, items in (
            ("highest-scored good images (false alarms first)", gallery.false_alarms),
            ("lowest-scored defective images (misses first)", gallery.misses),
        ):
            if not items:
                groups.append(f"<div><p>{e(title)}: none in the test set.</p></div>")
                continue
            cells = []
            for item in items:
                pics = img(item.image) + (img(item.overlay) if item.overlay is not None else "")
                cells.append(f'<div class="item">{pics}<br><span class="key">{e(item.key)}</span><br>score {e(f"{item.score:.4g}")}</div>')
            groups.append(f'<div><p>{e(title)}:</p><div class="gallery">{"".join(cells)}</div></div>')
        parts.append(f'<div class="groups">{"".join(groups)}</div>')
    return "".join(parts)


# --------------------------------------------------------------------------- document


@dataclass
class Section:
    """A titled part of the page with its own anchor and optional sub-sections."""

    anchor: str
    title: str
    body: str = ""
    children: list[Section] = field(default_factory=list)
    badge: str = ""

    def html(self, level: int = 2) -> str:
        parts = [f'<section id="{e(self.anchor)}"><h{level}>{e(self.title)}{self.badge}</h{level}>']
        if self.children:
            parts.append(toc((c.anchor, c.title, []) for c in self.children))
        parts.append(self.body)
        parts.extend(c.html(level + 1) for c in self.children)
        parts.append("</section>")
        return "".join(parts)


def document(title: str, meta: str, notes: Sequence[str], contents: str, sections: Sequence[Section]) -> str:
    """The whole page: title, notes box, table of contents (``contents``, see :func:`toc`), sections."""
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(meta)}</p>',
        notes_box(notes),
        contents,
        *(s.html() for s in sections),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
