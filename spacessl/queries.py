"""From what a user typed to a table of neighbours: query names, the search itself and the grid
picture. SSL_Evaluate.py and the notebook API (api.py) both use these, so a query means the
same thing in both."""

import csv
import difflib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import UserError
from .images import UNREADABLE_ERRORS, image_time, read_image, thumbnail
from .index import EXACT_LIMIT, IndexSettings, cached_index, describe, on_gpus_if_available
from .index import search as index_search
from .hunt import Graph, cached_graph, hunt_scores, top_scored
from .search import mean_query, top_k

log = logging.getLogger("spacessl")

CLOSE_NAMES = 5     # suggestions shown for a query name that is not in the data set
TITLE_INCHES = 0.4  # height added to each grid panel for its two-line title
INDEX_SEED = 0      # seeds the index's k-means sample (IVF) and its recall queries
GRID_PX = 256  # px side of each picture in a grid figure (panels are about 2-3 inches at 100 dpi)
COLUMNS = ["rank", "filename", "cosine_distance"]  # every neighbour table and CSV of the tool (plus `time` in SSL_Evaluate.py's)


def split_queries(text: str) -> list:
    """Comma-separated query names; a name holding a comma is written in double quotes
    ("a,b.png") or with the comma escaped (a\\,b.png)."""
    if not set(text) & {",", '"', "\\"}:  # one name, which may even hold a line break
        return [text.strip()] if text.strip() else []
    try:
        fields = next(csv.reader([text], escapechar="\\", skipinitialspace=True, strict=True), [])
    except csv.Error as err:
        raise UserError(f"--QUERY={text}: cannot split it into names ({err}); quote a name that holds "
                        f"a comma (\"a,b.png\") or escape the comma (a\\,b.png)") from None
    return [field.strip() for field in fields if field.strip()]


def resolve_query(token: str, data_dir: Path, index_of: dict, skipped=()):
    """Row index of an embedded image, or the Path of an image to embed on the fly. `skipped`:
    names in the data folder that were left out of the embeddings as unreadable."""
    if token in index_of:
        return index_of[token]
    path = Path(token).expanduser()  # the shell leaves "~" alone inside --QUERY=~/...
    if path.is_dir() or (not path.is_absolute() and (data_dir / token).is_dir()):
        raise UserError(f"query {token!r} is a folder; give one image file (several: join them with \",\")")
    inside = token
    if path.is_file():
        try:
            inside = path.resolve().relative_to(data_dir.resolve()).as_posix()
        except ValueError:
            inside = None
    if Path(token).name.startswith(".") and (path.is_file() or (data_dir / token).is_file()):
        raise UserError(f"query {token!r} is a hidden file (its name starts with a dot), left out of the "
                        f"embeddings; rename it to search with it")
    if inside in skipped or token in skipped:
        name = inside if inside in skipped else token
        raise UserError(f"query {name!r} is in {data_dir} but was skipped when the data set was embedded: "
                        f"it could not be read ({unreadable_reason(data_dir / name)}); fix or replace the file")
    if path.is_file():
        return index_of.get(inside, path)
    matches = [name for name in index_of if token in (name.rsplit("/", 1)[-1], Path(name).stem)]
    if len(matches) == 1:
        return index_of[matches[0]]
    if len(matches) > 1:
        raise UserError(f"query {token!r} matches {len(matches)} images ({', '.join(matches[:CLOSE_NAMES])}"
                        f"{', ...' if len(matches) > CLOSE_NAMES else ''}); give its path relative to {data_dir}")
    base_names = {name.rsplit("/", 1)[-1]: name for name in index_of}
    close = difflib.get_close_matches(token, list(base_names), n=CLOSE_NAMES)
    hint = f"; closest names: {', '.join(base_names[c] for c in close)}" if close else ""
    raise UserError(f"query {token!r} is neither one of the {len(index_of)} images in {data_dir} "
                    f"nor an existing file{hint}")


def unreadable_reason(path: Path) -> str:
    try:
        read_image(path, 3)
    except UNREADABLE_ERRORS as err:
        return str(err)
    return "it reads now; the embeddings will include it once rebuilt"


def neighbours(run, query: np.ndarray, k: int, exclude=(), exact_limit: int = EXACT_LIMIT,
               index_settings: IndexSettings = IndexSettings()) -> pd.DataFrame:
    """The k images of an opened run (runs.OpenRun) nearest to a unit query vector, as a table of
    rank, filename, cosine_distance: exact search up to exact_limit images, beyond it the run's
    FAISS index (index.py; built once and cached, its search effort tuned to the recall target).
    Asking for more than there are gives all, with a warning."""
    available = len(run.names) - len(set(exclude))
    if k > available:
        log.warning("--TOP_K=%d but only %d other images are embedded: returning all %d", k, available, available)
    if len(run.names) <= exact_limit:
        rows, distances = top_k(run.vectors, query, k, exclude=exclude)
    else:
        source = {**json.loads((run.cache_dir / "meta.json").read_text()), "postprocess": run.transform.kind}
        index, info = cached_index(run.vectors, run.cache_dir, source, index_settings, INDEX_SEED)
        log.info("searched with a %s index, %s (recall@10 %.3f against exact search)",
                 info["type"], describe(info), info["recall_at_10"])
        found = index_search(on_gpus_if_available(index), query, min(k, available), exclude=exclude)
        # The index ranks on 8-bit codes (ivf-sq8, ivf-pca): the distances shown, and the order
        # of the k found, are recomputed exactly from the stored vectors (k rows read, in file
        # order, so ties fall by row as in exact search).
        found = np.sort(found)
        order, distances = top_k(np.asarray(run.vectors[found], dtype=np.float32), query, len(found))
        rows = found[order]
    return pd.DataFrame(dict(zip(COLUMNS, (range(1, len(rows) + 1), [run.names[i] for i in rows],
                                           np.round(distances, 6)))))


def with_times(run, table: pd.DataFrame) -> pd.DataFrame:
    """The table with a `time` column: when each image was taken (UTC, ISO 8601; empty where
    neither its file nor its name says: images.image_time)."""
    times = [image_time(run.data_dir, name) for name in table["filename"]]
    return table.assign(time=[t.isoformat() if t is not None else "" for t in times])


def apart_from(run, table: pd.DataFrame, query_rows: list, query_times: list, within: float) -> pd.DataFrame:
    """The rows of a neighbour table taken more than `within` seconds from every query image, or,
    for a query whose time is unknown, more than `within` frames from it in file-name order (an
    all-sky camera's next frames show the same event again)."""
    index_of = {name: i for i, name in enumerate(run.names)}
    keep = []
    for name in table["filename"]:
        taken = image_time(run.data_dir, name)
        near = False
        for row, moment in zip(query_rows, query_times):
            if moment is not None and taken is not None:
                near |= abs((taken - moment).total_seconds()) <= within
            elif row is not None:
                near |= abs(index_of[name] - row) <= within
        keep.append(not near)
    kept = table[keep].reset_index(drop=True)
    return kept.assign(rank=range(1, len(kept) + 1))


def neighbours_apart(run, query: np.ndarray, query_rows: list, query_times: list, k: int, exclude, within: float,
                     exact_limit: int = EXACT_LIMIT, index_settings: IndexSettings = IndexSettings()) -> pd.DataFrame:
    """neighbours() without the images taken within `within` of a query (apart_from): more are
    asked for until k are left or every image has been looked at."""
    available = len(run.names) - len(set(exclude))
    asked = min(k, available)
    while True:
        table = apart_from(run, neighbours(run, query, asked, exclude, exact_limit, index_settings),
                           query_rows, query_times, within)
        if len(table) >= k or asked >= available:
            return table.head(k)
        asked = min(4 * asked, available)


def hunt_graph(run, exact_limit: int = EXACT_LIMIT, index_settings: IndexSettings = IndexSettings()) -> Graph:
    """The nearest-neighbour graph a hunt spreads its marks over (hunt.py), built once per run and
    post-processing and cached beside the embeddings: exact neighbours up to exact_limit images,
    beyond it through the run's FAISS index."""
    source = {**json.loads((run.cache_dir / "meta.json").read_text()), "postprocess": run.transform.kind}
    index = None
    if len(run.names) > exact_limit:
        index, _ = cached_index(run.vectors, run.cache_dir, source, index_settings, INDEX_SEED)
    return cached_graph(run.vectors, run.cache_dir, source, index)


def hunt_neighbours(run, graph: Graph, yes: list, no: list, k: int, exclude=()):
    """(table, how): the k images a hunt shows first, from the images marked yes and no (rows of
    the run, or search vectors of images outside it), as rank, filename, cosine_distance (to the
    mean of the yes images, for reference: the order is the hunt's), `exclude` left out."""
    scores, how = hunt_scores(run.vectors, graph, yes, no)
    rows = top_scored(scores, k, exclude)
    yes_vectors = np.stack([np.asarray(run.vectors[m] if isinstance(m, (int, np.integer)) else m, dtype=np.float64)
                            for m in yes])
    distances = 1 - np.asarray(run.vectors[np.sort(rows)], dtype=np.float64)[np.argsort(np.argsort(rows))] \
        @ mean_query(yes_vectors)
    table = pd.DataFrame(dict(zip(COLUMNS, (range(1, len(rows) + 1), [run.names[i] for i in rows],
                                            np.round(distances, 6)))))
    return table, how


def short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def grid_figure(panels: list, channels: int, stretch: str, columns: int, inches: float) -> Figure:
    """panels: (image path, title) pairs, query first, each shown as the model sees it
    (images.thumbnail); no pyplot, so no GUI backend is needed."""
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(columns * inches, rows * (inches + TITLE_INCHES)))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, title) in zip(axes.flat, panels):
        ax.imshow(thumbnail(path, channels, stretch, GRID_PX))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def neighbour_panels(query_paths: list, data_dir: Path, table: pd.DataFrame) -> list:
    panels = [(path, f"query\n{short(Path(path).name)}") for path in query_paths]
    return panels + [(data_dir / name, f"#{rank}  d={dist:.3f}\n{short(Path(name).name)}")
                     for rank, name, dist in table[COLUMNS].itertuples(index=False)]
