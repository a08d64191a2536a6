"""Reports: self-contained HTML pages (every picture is inlined as a data URI, so the file opens
offline, can be mailed or copied anywhere, and needs no server), the query report of
SSL_Evaluate.py and the pair gallery of SSL_Anomalies.py. Every picture of an image is
images.thumbnail's: as the model sees it.

Each <img> records in its data-state attribute whether the browser decoded it ("loaded") or
not ("failed", also shown as a red frame), so a broken picture is visible, and checkable.
"""

import base64
import html
import io
import logging
import time
from pathlib import Path

from PIL import Image, ImageDraw

from .errors import UserError
from .files import atomic_path
from .explain import explain_pair
from .images import thumbnail
from .maps import MIN_DIST, NEIGHBOURS, PERPLEXITY, SEED, draw_scatter, latest_map, project, save_map
from .queries import COLUMNS
from .runs import result_dir

log = logging.getLogger("spacessl")
CAPTION_PX = 16  # height of the caption strip under each pair of a gallery

STYLE = """
body { background: #111; color: #ddd; font: 14px/1.4 system-ui, sans-serif; margin: 24px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; background: #1d1d1d; padding: 6px; border-radius: 4px; }
figcaption { font-size: 12px; max-width: 220px; overflow-wrap: anywhere; }
img[data-state="failed"] { outline: 3px solid red; }
table.meta td { padding: 0 12px 0 0; vertical-align: top; }
"""
IMG_EVENTS = 'onload="this.dataset.state=\'loaded\'" onerror="this.dataset.state=\'failed\'"'


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def figure(uri: str, caption: str, css_class: str) -> str:
    return (f'<figure class="{css_class}"><img src="{uri}" data-state="pending" {IMG_EVENTS} '
            f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def write_page(out: Path, title: str, meta: dict, sections: list) -> None:
    """sections: (heading, [(data uri, caption, css class)]) in page order."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    body = [f"<h1>{html.escape(title)}</h1>", f'<table class="meta">{rows}</table>']
    for heading, figures in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append('<div class="grid">' + "".join(figure(*f) for f in figures) + "</div>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")


def created() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def report_map(run, map_method: str, settings: dict):
    """The run's newest map of exactly these images, or a new one (saved under <run>/maps with the
    settings that made it); None when there are too few images to map."""
    coords = latest_map(run.home, run.names)
    if coords is not None:
        return coords
    try:
        coords = project(run.vectors, map_method, NEIGHBOURS, MIN_DIST, PERPLEXITY, SEED)
    except UserError as err:
        log.warning("report without a map: %s", err)
        return None
    with result_dir(run, "maps", map_method, settings, n_images=len(run.names)) as out:
        save_map(out.path, coords, run.names, None, f"{map_method} map of {len(run.names)} images")
    return coords


def query_report(run, out_dir: Path, query_paths: list, query_rows: list, rows, table, *, thumb_px: int,
                 map_method: str, explain_top: int, cam_layer: str, settings: dict) -> None:
    """report.html for a query: the query, its neighbours, the map with both marked, and Grad-CAM
    pictures of what makes the first explain_top neighbours similar to the query."""
    hp = run.model.hparams

    def thumb(path):
        return png_uri(thumbnail(path, hp.in_channels, hp.stretch, thumb_px))

    queries = [(thumb(p), f"query: {p.name}", "query") for p in query_paths]
    neighbours = [(thumb(run.data_dir / name), f"#{rank}  d={dist:.4f}  {name}", "neighbour")
                  for rank, name, dist in table[COLUMNS].itertuples(index=False)]
    sections = [("Query" + ("" if len(queries) == 1 else " (searched by the mean of their embeddings)"), queries),
                ("Nearest neighbours (cosine distance)", neighbours)]
    coords = report_map(run, map_method, settings)
    if coords is not None:
        draw_scatter(coords, None, {"query": query_rows, "neighbours": list(rows)},
                     f"{len(run.names)} images; query and its {len(rows)} nearest marked", out_dir / "map.png")
        note = "" if query_rows else " (the query is not in the data set, so only its neighbours are marked)"
        sections.append(("Map of the data set", [(file_uri(out_dir / "map.png"), "map" + note, "map")]))
    if explain_top and not hasattr(run.model.backbone, cam_layer):
        log.info("no Grad-CAM maps in the report: a %s backbone has no convolutional %s", hp.backbone, cam_layer)
        explain_top = 0
    explained = []
    for rank, name, _ in list(table[COLUMNS].itertuples(index=False))[:explain_top]:
        picture = explain_pair(run.model, query_paths[0], run.data_dir / name, cam_layer,
                               max(1, thumb_px // hp.input_size))
        with atomic_path(out_dir / f"explain_{rank}.png") as tmp:
            picture.save(tmp, format="PNG")
        explained.append((png_uri(picture), f"query | its Grad-CAM | #{rank}'s Grad-CAM | #{rank} {name}",
                          "explanation"))
    if explained:
        sections.append((f"What makes them similar (Grad-CAM on {cam_layer}, target: cosine "
                         "similarity; red = raises it)", explained))
    meta = {"checkpoint": run.checkpoint, "data": f"{run.data_dir} ({len(run.names)} images)",
            "query": ", ".join(str(p) for p in query_paths), "created": created()}
    write_page(out_dir / "report.html", f"Images most like {query_paths[0].name}", meta, sections)


def draw_gallery(pairs: list, channels: int, stretch: str, thumb: int, columns: int, out) -> None:
    """pairs: (image path, neighbour path, caption); each cell = image | neighbour + caption."""
    rows = -(-len(pairs) // columns)
    width, height = 2 * thumb, thumb + CAPTION_PX
    sheet = Image.new("RGB", (columns * width, rows * height), "black")
    draw = ImageDraw.Draw(sheet)
    for i, (path, neighbour, caption) in enumerate(pairs):
        x, y = (i % columns) * width, (i // columns) * height
        for j, source in enumerate((path, neighbour)):
            sheet.paste(thumbnail(source, channels, stretch, thumb), (x + j * thumb, y))
        draw.text((x + 2, y + thumb + 2), caption, fill="white")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


def caption(rank: int, score: float) -> str:
    """The label under a pair: rank and score kept apart ("#1  d=0.104", never "#10.104")."""
    return f"#{rank}  d={score:.3f}"


def anomaly_report(run, table, out_dir: Path, *, k: int, top: int, thumb_px: int, columns: int) -> None:
    """anomalies.csv (every image ranked), anomalies.png (the `top` most unusual beside their
    nearest image) and anomalies.html."""
    with atomic_path(out_dir / "anomalies.csv") as tmp:
        table.to_csv(tmp, index=False)
    top = table.head(top)
    hp, data = run.model.hparams, run.data_dir
    draw_gallery([(data / row.filename, data / row.nearest, caption(row.rank, row.score)) for row in top.itertuples()],
                 hp.in_channels, hp.stretch, thumb_px, columns, out_dir / "anomalies.png")

    def thumb(name):
        return png_uri(thumbnail(data / name, hp.in_channels, hp.stretch, thumb_px))

    figures = []
    for row in top.itertuples():
        figures.append((thumb(row.filename), f"#{row.rank} score {row.score:.4f}: {row.filename}", "anomaly"))
        figures.append((thumb(row.nearest), f"its nearest, d={row.nearest_distance:.4f}: {row.nearest}", "nearest"))
    write_page(out_dir / "anomalies.html", f"The {len(top)} most unusual of {len(table)} images",
               {"checkpoint": run.checkpoint, "data": data, "score": f"cosine distance to the {k}-th "
                "nearest other image", "created": created()},
               [("Most unusual first, each followed by its nearest neighbour", figures),
                ("Overview", [(file_uri(out_dir / "anomalies.png"), "anomalies.png", "overview")])])
