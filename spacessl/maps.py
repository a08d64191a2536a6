"""2-D maps of an embedding space: UMAP or t-SNE coordinates, a scatter plot coloured by class,
and a thumbnail mosaic (each image drawn at its place on the map)."""

import math
import sys

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from scipy.optimize import linear_sum_assignment

from .errors import UserError
from .files import atomic_path
from .images import thumbnail

METHODS = ("umap", "tsne")
# Library defaults (umap-learn: n_neighbors 15, min_dist 0.1; scikit-learn t-SNE: perplexity 30),
# used where a map is made without settings of its own (the query report).
NEIGHBOURS, MIN_DIST, PERPLEXITY, SEED = 15, 0.1, 30.0, 0
SCATTER_INCHES = 7
SCATTER_DPI = 110
POINT_SIZE = 8


def minimum_images(method: str, neighbours: int, perplexity: float) -> int:
    """UMAP needs more images than its neighbourhood size, t-SNE more than 3 x perplexity
    (scikit-learn requires perplexity < n; 3 x keeps its neighbourhood search meaningful)."""
    return neighbours + 1 if method == "umap" else int(3 * perplexity) + 1


def project(vectors: np.ndarray, method: str, neighbours: int, min_dist: float, perplexity: float,
            seed: int) -> np.ndarray:
    """(n, 2) coordinates of the embeddings, by cosine similarity."""
    need = minimum_images(method, neighbours, perplexity)
    if len(vectors) < need:
        knob = "--NEIGHBOURS" if method == "umap" else "--PERPLEXITY"
        raise UserError(f"{method} needs at least {need} images with these settings, got {len(vectors)}; "
                        f"lower {knob} or add images")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise UserError("UMAP needs the umap-learn package: pip install umap-learn "
                            "(or use --MAP_METHOD=tsne)") from None
        # A fixed random_state makes the map reproducible and UMAP single-threaded (its n_jobs=1).
        # On a terminal UMAP says its steps and shows its epochs as a tqdm bar (progress.py's rule).
        reducer = umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, metric="cosine",
                            random_state=seed, n_jobs=1, verbose=sys.stderr.isatty())
        return reducer.fit_transform(vectors).astype(np.float64)
    from sklearn.manifold import TSNE

    return TSNE(perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(vectors)


def unit_square(coords: np.ndarray) -> np.ndarray:
    """Coordinates scaled into [0, 1] along each axis (for placing thumbnails)."""
    low, high = coords.min(axis=0), coords.max(axis=0)
    return (coords - low) / np.where(high > low, high - low, 1)


def draw_scatter(coords: np.ndarray, labels, highlight: dict, title: str, out) -> None:
    """Scatter of all points, coloured by label when given; highlight: {name: indices} drawn on top."""
    fig = Figure(figsize=(SCATTER_INCHES, SCATTER_INCHES))
    ax = fig.subplots()
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=POINT_SIZE, c="0.6", linewidths=0)
    else:
        for label in sorted(set(labels), key=str):
            mask = np.asarray(labels) == label
            ax.scatter(coords[mask, 0], coords[mask, 1], s=POINT_SIZE, linewidths=0, label=str(label))
    markers = iter([("*", "red", 18), ("o", "black", 8), ("s", "blue", 8)])
    for name, indices in highlight.items():
        marker, colour, size = next(markers)
        ax.scatter(coords[indices, 0], coords[indices, 1], marker=marker, s=size ** 2, c=colour,
                   edgecolors="white", linewidths=0.8, label=name)
    if labels is not None or highlight:
        ax.legend(fontsize=8, markerscale=1.5, loc="best")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=SCATTER_DPI)


def draw_mosaic(coords: np.ndarray, root, files: list, channels: int, canvas_px: int, thumb_px: int, out,
                seed: int = 0, *, stretch: str) -> int:
    """Thumbnails on a square grid laid over the map: as few cells as hold every image (at most
    canvas_px // thumb_px a side; thumbnails grow to fill the canvas), each image in its own cell,
    assigned so the summed squared distance from map position to cell is least (the Hungarian
    method, scipy's linear_sum_assignment): nearby images stay nearby and no cell is left black
    while images are missing. An archive larger than the grid is shown by a seeded random sample.
    Returns the number of images drawn."""
    cells = max(1, min(canvas_px // thumb_px, math.ceil(math.sqrt(len(files)))))
    side = canvas_px // cells
    shown = np.arange(len(files))
    if len(files) > cells * cells:
        shown = np.sort(np.random.default_rng(seed).choice(len(files), size=cells * cells, replace=False))
    position = unit_square(coords[shown]) * (cells - 1)
    grid = np.stack(np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij"), axis=-1).reshape(-1, 2)
    cost = ((position[:, None, :] - grid[None, :, :]) ** 2).sum(axis=-1)
    rows, chosen_cells = linear_sum_assignment(cost)
    canvas = Image.new("RGB", (cells * side, cells * side), "black")  # sky images: dark
    for i, c in zip(shown[rows], chosen_cells):
        cx, cy = grid[c]
        thumb = thumbnail(f"{root}/{files[i]}", channels, stretch, side)
        canvas.paste(thumb, (int(cx) * side, (cells - 1 - int(cy)) * side))  # y grows upwards on a map
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return len(rows)


def save_map(out_dir, coords: np.ndarray, names: list, labels, title: str) -> None:
    """coords.csv (filename, x, y[, label]) and map.png in out_dir."""
    table = pd.DataFrame({"filename": names, "x": coords[:, 0], "y": coords[:, 1]})
    if labels is not None:
        table["label"] = labels
    with atomic_path(out_dir / "coords.csv") as tmp:
        table.to_csv(tmp, index=False)
    draw_scatter(coords, labels, {}, title, out_dir / "map.png")


def latest_map(run_dir, names: list):
    """Coordinates (rows in the order of `names`) from the newest map of run_dir/maps made from
    exactly these images, or None."""
    for coords_file in sorted((run_dir / "maps").glob("*/coords.csv"), key=lambda p: p.stat().st_mtime,
                              reverse=True):
        table = pd.read_csv(coords_file, keep_default_na=False)
        if sorted(table["filename"]) == sorted(names):
            return table.set_index("filename").loc[names, ["x", "y"]].to_numpy()
    return None
