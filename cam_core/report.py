"""A self-contained HTML page from the output of ``cam-core evaluate`` or the benchmark suite.

The page holds everything it shows: images are embedded as base64 ``data:`` URIs, the curves are
inline SVG, the style sheet is inline, and there is no script and no external resource, so the
file can be mailed, archived or opened offline.

- A folder written by ``cam-core evaluate`` (``results.json`` with ``"kind": "cam-core evaluate"``)
  gives: the settings, the localisation table, BoxAcc-versus-threshold curves (one chart per IoU
  criterion, one line per method) and the gallery of the best and worst localised images of each
  method side by side (ground-truth boxes green, predicted boxes white).
- Any other folder with a ``report.md`` (e.g. ``benchmarks/results``) is rendered from its
  Markdown (headings, tables, lists, code, links), every PNG it links embedded; PNGs of the folder
  that it does not link are shown at the end.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from cam_core._io import atomic_write_bytes
from cam_core._tables import fmt

__all__ = ["boxacc_charts", "boxacc_svg", "build_report", "markdown_to_html", "svg_line_chart",
           "svg_row"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")

# The page may load nothing from anywhere: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
code, pre { background: #f5f5f5; font-size: 0.9em; } pre { padding: 0.6em; overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.facts td { text-align: left; }
.gallery td, .gallery thead th { vertical-align: top; text-align: center; }
.gallery img { max-width: 220px; max-height: 220px; display: block; margin: 0 auto; }
.caption { font-size: 0.8em; color: #444; max-width: 220px; overflow-wrap: anywhere; }
img.figure { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _inside(folder: Path, path: Path) -> Path | None:
    """``path`` resolved, when it is a file inside ``folder`` (links resolved); else None."""
    try:
        root = Path(folder).resolve()
        target = (root / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if target != root and root in target.parents and target.is_file():
        return target
    return None


def _data_uri(path: Path) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    suffix = Path(path).suffix.lower()
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml", ".gif": "image/gif"}.get(suffix, "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------------------------
# charts


def boxacc_charts(curves: dict, *, criteria=None, title: str = "BoxAcc at IoU >= {key}",
                  width: int = 420, height: int = 280, legend: int = 110) -> list[str]:
    """BoxAcc against the threshold, one SVG chart per IoU criterion, one line per method: the
    BoxAcc chart of the report, the command line and the benchmarks.

    ``curves`` maps each method (its line's label) to its ``curves`` record of ``results.json``
    (``thresholds`` and ``box_acc``: IoU criterion -> BoxAcc per threshold, in percent).
    ``criteria``: the IoU criteria to chart (keys of ``box_acc``; default: all of the first
    method's); ``title``: each chart's title, ``{key}`` standing for its criterion; ``width``,
    ``height``, ``legend``: as :func:`svg_line_chart`'s.
    """
    first = next(iter(curves.values()))
    charts = []
    for key in first.get("box_acc", {}) if criteria is None else criteria:
        series = {m: c["box_acc"][key] for m, c in curves.items() if key in c.get("box_acc", {})}
        charts.append(svg_line_chart(
            first["thresholds"], series, title=title.replace("{key}", key),
            xlabel="threshold (fraction of the map's maximum)", ylabel="BoxAcc (%)", ymax=100.0,
            width=width, height=height, legend=legend,
        ))
    return charts


def boxacc_svg(curves: dict) -> str:
    """The charts of :func:`boxacc_charts` side by side in one standalone SVG document."""
    return svg_row(boxacc_charts(curves), width=420, height=280)  # svg_line_chart's defaults


def svg_row(charts: list[str], *, width: int, height: int) -> str:
    """Charts of one size (:func:`svg_line_chart` output) side by side, as one SVG document."""
    inner = "".join(f'<g transform="translate({i * width}, 0)">{c}</g>' for i, c in enumerate(charts))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(charts)}" '
            f'height="{height}" viewBox="0 0 {width * len(charts)} {height}">{inner}</svg>\n')


def svg_line_chart(
    x,
    series: dict,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 420,
    height: int = 280,
    ymax: float | None = None,
    legend: int = 110,
) -> str:
    """An inline SVG line chart: one polyline per entry of ``series`` (name -> y values).

    ``x`` and every series have the same length; ``None`` values break nothing (they are skipped).
    """
    xs = [float(v) for v in x]
    left, right, top, bottom = 48, legend, 26, 40
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1.0
    values = [float(v) for ys in series.values() for v in ys if v is not None]
    y1 = ymax if ymax is not None else (max(values) if values else 1.0)
    y1 = y1 if y1 > 0 else 1.0

    def px(v):
        return left + (v - x0) / (x1 - x0) * pw

    def py(v):
        return top + ph - v / y1 * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
        f'<text x="{left + pw / 2}" y="16" text-anchor="middle" font-size="13">{_esc(title)}</text>',
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="11">'
        f"{_esc(xlabel)}</text>",
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 12 {top + ph / 2})">{_esc(ylabel)}</text>',
    ]
    for i in range(5):
        yv = y1 * i / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" '
                     f'stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{py(yv) + 4:.1f}" text-anchor="end" '
                     f'font-size="10">{yv:.0f}</text>')
        xv = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{px(xv):.1f}" y="{top + ph + 14}" text-anchor="middle" '
                     f'font-size="10">{xv:.2f}</text>')
    for k, (name, ys) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{px(xv):.1f},{py(float(yv)):.1f}" for xv, yv in zip(xs, ys)
                       if yv is not None)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                     f'points="{pts}"><title>{_esc(name)}</title></polyline>')
        ly = top + 12 + 16 * k
        parts.append(f'<line x1="{left + pw + 8}" x2="{left + pw + 26}" y1="{ly - 4}" '
                     f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 30}" y="{ly}" font-size="11">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Markdown, parsed by markdown-it-py (CommonMark + pipe tables, raw HTML off); the page must stand
# alone, so local images are embedded and links leave nothing but their text


def markdown_to_html(md: str, *, base: Path | None = None, embedded: set | None = None) -> str:
    """Render the Markdown of the project's reports as HTML (CommonMark and pipe tables, with
    markdown-it-py; raw HTML in the source is escaped).

    Images and links to local PNG/JPEG/SVG files inside ``base`` are embedded as data URIs (their
    resolved paths are added to ``embedded``; a link becomes a captioned figure); other images
    keep their alt text, other links their text (in-page ``#anchors`` stay links).
    """

    embedded = set() if embedded is None else embedded
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    for tok in tokens:
        if tok.type == "inline" and tok.children:
            tok.children = _stand_alone(tok.children, base, embedded)
    return parser.renderer.render(tokens, parser.options, {})


def _stand_alone(children: list, base: Path | None, embedded: set) -> list:
    """Inline tokens with images embedded or reduced to text and links resolved (see above)."""
    def text(content: str) -> Token:
        tok = Token("text", "", 0)
        tok.content = content
        return tok

    def raw(content: str) -> Token:
        tok = Token("html_inline", "", 0)
        tok.content = content
        return tok

    out, i = [], 0
    while i < len(children):
        tok = children[i]
        if tok.type == "image":
            alt = "".join(c.content for c in tok.children or ())
            uri = _local_image(str(tok.attrGet("src") or ""), base, embedded)
            out.append(text(alt) if uri is None else
                       raw(f'<img class="figure" alt="{_esc(alt)}" src="{uri}">'))
            i += 1
            continue
        if tok.type == "link_open":
            depth, j = 1, i + 1
            while depth:  # the matching link_close (links do not nest, but be exact)
                depth += {"link_open": 1, "link_close": -1}.get(children[j].type, 0)
                j += 1
            inner = _stand_alone(children[i + 1:j - 1], base, embedded)
            href = str(tok.attrGet("href") or "")
            uri = _local_image(href, base, embedded)
            if uri is not None:
                label = "".join(c.content for c in children[i + 1:j - 1])
                out.append(raw(f'<figure><img class="figure" alt="{_esc(label)}" src="{uri}">'
                               f"<figcaption>{_esc(label)}</figcaption></figure>"))
            elif href.startswith("#"):
                out += [tok, *inner, children[j - 1]]
            else:
                out += inner
            i = j
            continue
        out.append(tok)
        i += 1
    return out


def _local_image(src: str, base: Path | None, embedded: set) -> str | None:
    if base is None or "://" in src or not src.lower().endswith((".png", ".jpg", ".jpeg", ".svg")):
        return None
    path = _inside(base, Path(src))  # only files inside the folder being rendered
    if path is None:
        return None
    uri = _data_uri(path)
    if uri is not None:
        embedded.add(path)
    return uri



# --------------------------------------------------------------------------------------------
# pages


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        f"<title>{_esc(title)}</title>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _table(columns: list[str], rows: list[list], *, cls: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _evaluate_page(results: dict, folder: Path) -> str:
    title = "cam-core evaluate: localisation report"
    ds = results.get("dataset", {})
    st = results.get("settings", {})
    model = results.get("model", {})
    body = [f"<h1>{_esc(title)}</h1>"]
    facts = [
        ("dataset", f"{ds.get('path', '?')} ({ds.get('format', '?')}, {ds.get('images', '?')} images)"),
        ("model", f"{model.get('spec', '?')} ({model.get('framework', '?')})"),
        ("layers", ", ".join(model.get("layers", [])) or "default"),
        ("protocol", st.get("protocol", "?")),
        ("methods", ", ".join(results.get("methods", {}))),
        ("classification top-1", fmt(results.get("classification", {}).get("top1"))),
    ]
    body.append('<table class="facts"><tbody>' + "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts) + "</tbody></table>")

    table = results.get("table", {})
    if table:
        body.append("<h2>Localisation</h2>")
        body.append(_table(table["columns"], table["rows"], cls="results"))
        if table.get("notes"):
            body.append(f'<p class="note">{_esc(table["notes"])}</p>')

    methods = results.get("methods", {})
    curves = {m: r.get("curves") for m, r in methods.items() if r.get("curves")}
    if curves:
        body.append("<h2>BoxAcc versus threshold</h2>")
        body.append('<div class="charts">' + "".join(boxacc_charts(curves)) + "</div>")

    galleries = {m: r.get("gallery", []) for m, r in methods.items() if r.get("gallery")}
    if galleries:
        body.append("<h2>Best and worst localised images</h2>")
        body.append('<p class="note">Ground-truth boxes in green, predicted box in white; '
                    "ranked by the IoU of the predicted box at the gallery threshold.</p>")
        names = list(galleries)
        rows_html = []
        for rank in ("best", "worst"):
            n = max(sum(1 for g in gal if g["rank"] == rank) for gal in galleries.values())
            for i in range(n):
                cells = [f"<th>{rank} {i + 1}</th>"]
                for m in names:
                    items = [g for g in galleries[m] if g["rank"] == rank]
                    if i >= len(items):
                        cells.append("<td></td>")
                        continue
                    g = items[i]
                    inside = _inside(folder, Path(str(g.get("file", ""))))
                    uri = _data_uri(inside) if inside is not None else None
                    img = (f'<img alt="{_esc(m)} {rank} {i + 1}" src="{uri}">' if uri
                           else "<em>missing</em>")
                    cap = (f"IoU {_esc(fmt(g.get('iou'), 2))} &middot; "
                           f"{_esc(Path(str(g.get('image', '?'))).name)}")
                    cells.append(f'<td>{img}<div class="caption">{cap}</div></td>')
                rows_html.append("<tr>" + "".join(cells) + "</tr>")
        head = "<tr><th></th>" + "".join(f"<th>{_esc(m)}</th>" for m in names) + "</tr>"
        body.append(f'<table class="gallery"><thead>{head}</thead><tbody>'
                    + "".join(rows_html) + "</tbody></table>")
    return _page(title, body)


def _markdown_page(folder: Path) -> str:
    md_path = folder / "report.md"
    md = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    if not md:
        table_md = folder / "table.md"
        md = table_md.read_text(encoding="utf-8") if table_md.is_file() else ""
    embedded: set = set()
    title = next((ln.lstrip("# ").strip() for ln in md.splitlines() if ln.startswith("#")),
                 f"Report: {folder.name}")
    body = [markdown_to_html(md, base=folder, embedded=embedded)]
    rest = [p for p in sorted(folder.glob("*.png")) if p.resolve() not in embedded]
    if rest:
        body.append("<h2>Other figures</h2>")
        for p in rest:
            inside = _inside(folder, Path(p.name))  # a link to a file elsewhere is not embedded
            uri = _data_uri(inside) if inside is not None else None
            if uri:
                body.append(f'<figure><img class="figure" alt="{_esc(p.name)}" src="{uri}">'
                            f"<figcaption>{_esc(p.name)}</figcaption></figure>")
    return _page(title, body)


def build_report(results_dir, /, *, out=None) -> Path:
    """Write one self-contained HTML page for ``results_dir``; return its path.

    Parameters
    ----------
    results_dir : str or Path
        A folder written by ``cam-core evaluate`` or by the benchmark suite (``report.md``).
    out : str or Path, optional
        The HTML file; by default ``results_dir / "report.html"``. Written atomically.

    Raises
    ------
    FileNotFoundError
        ``results_dir`` is not a folder, or holds neither ``results.json`` nor ``report.md``.
    ValueError
        ``results.json`` is not valid JSON.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"`results_dir` must be a folder; got {str(folder)!r}")
    rj = folder / "results.json"
    results = None
    if rj.is_file():
        try:
            results = json.loads(rj.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{rj} is not valid JSON: {exc}") from None
    path = Path(out) if out is not None else folder / "report.html"
    if path.is_dir():
        raise ValueError(f"`out` must name the HTML file to write; {str(path)!r} is a folder")
    if isinstance(results, dict) and results.get("kind") == "cam-core evaluate":
        try:
            page = _evaluate_page(results, folder)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            what = f"key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise ValueError(f"{rj} is not a complete results file of cam-core evaluate "
                             f"(missing or malformed: {what})") from None
    elif (folder / "report.md").is_file() or (folder / "table.md").is_file():
        page = _markdown_page(folder)
    else:
        raise FileNotFoundError(
            f"{folder} holds no results: expected results.json from `cam-core evaluate` or a "
            "report.md"
        )

    return atomic_write_bytes(path, page.encode("utf-8"))
