"""Embed every image with a trained model and find the images most like a query image.

Usage:
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr                  # embed the data set only
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=00042.png
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=00042.png,00107.png --TOP_K=20
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=/path/to/new_event.png

The data set is embedded once into <run>/embeddings/ and reused until the images or the
checkpoint change. Several comma-separated queries are searched by the mean of their
embeddings; a query file outside the data set is embedded on the fly. Each search writes
<run>/queries/<query>-<time>/neighbours.csv, neighbours.png and config.json (the settings)
and prints the table.
"""

import difflib
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, works over ssh and on clusters

from collate import eval_transform
from config import (UserError, atomic_path, format_config, require, resolve_config, run_main,
                    usage, wants_help, write_json)
from embeddings import cached_embeddings, pick_device
from images import UNREADABLE_ERRORS, find_images, load_image, loader_workers
from model import load_model
from runs import checkpoint_path, new_output_dir, training_data_dir
from search import mean_query, top_k

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results go beside it)
QUERY = ""                      # image(s) to search for: a file name in the data set, a path, or several joined by ","; "" = embed only
TOP_K = 10                      # neighbours to return, >= 1
DATA_DIR = ""                   # images to search; "" = the folder the run was trained on
BATCH_SIZE = 256                # images per embedding batch
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
GRID_COLUMNS = 6                # panels per row in neighbours.png
PANEL_INCHES = 2.2              # width of one panel in neighbours.png
GRID_DPI = 100                  # pixels per inch of neighbours.png
# -----------------------------------------------------------------------------------------------

_CLOSE_NAMES = 5      # suggestions shown for a query name that is not in the data set
_TITLE_INCHES = 0.4   # height added to each panel for its two-line title

log = logging.getLogger("spacessl")


def resolve_query(token: str, data_dir: Path, index_of: dict):
    """Row index of an embedded image, or the Path of an image to embed on the fly."""
    if token in index_of:
        return index_of[token]
    path = Path(token)
    if path.is_file():
        try:
            inside = path.resolve().relative_to(data_dir.resolve()).as_posix()
        except ValueError:
            inside = None
        return index_of.get(inside, path)
    matches = [name for name in index_of if token in (name.rsplit("/", 1)[-1], Path(name).stem)]
    if len(matches) == 1:
        return index_of[matches[0]]
    if len(matches) > 1:
        raise UserError(f"query {token!r} matches {len(matches)} images ({', '.join(matches[:_CLOSE_NAMES])}"
                        f"{', ...' if len(matches) > _CLOSE_NAMES else ''}); give its path relative to {data_dir}")
    base_names = {name.rsplit("/", 1)[-1]: name for name in index_of}
    close = difflib.get_close_matches(token, list(base_names), n=_CLOSE_NAMES)
    hint = f"; closest names: {', '.join(base_names[c] for c in close)}" if close else ""
    raise UserError(f"query {token!r} is neither one of the {len(index_of)} images in {data_dir} "
                    f"nor an existing file{hint}")


def embed_file(model, path: Path, device) -> torch.Tensor:
    hp = model.hparams
    try:
        img = load_image(path, hp.in_channels)
    except UNREADABLE_ERRORS as err:
        raise UserError(f"query image {path} could not be read ({err})") from None
    batch = eval_transform(hp.input_size, hp.in_channels)(img).unsqueeze(0).to(device)
    return model.to(device).embed(batch)[0].cpu().numpy()


def draw_grid(panels: list, channels: int, columns: int, inches: float, dpi: int, out: Path) -> None:
    """panels: (image path, title) pairs, query first."""
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(columns * inches, rows * (inches + _TITLE_INCHES)))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, title) in zip(axes.flat, panels):
        ax.imshow(load_image(path, channels), cmap="gray" if channels == 1 else None)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    require(cfg["NUM_WORKERS"] >= -1, f"--NUM_WORKERS={cfg['NUM_WORKERS']}: -1 (auto), 0 or more")
    require(cfg["TOP_K"] >= 1, f"--TOP_K={cfg['TOP_K']}: must be at least 1")
    require(min(cfg["BATCH_SIZE"], cfg["GRID_COLUMNS"], cfg["GRID_DPI"]) >= 1 and cfg["PANEL_INCHES"] > 0,
            "--BATCH_SIZE, --GRID_COLUMNS and --GRID_DPI must be at least 1, --PANEL_INCHES above 0")
    device = pick_device(cfg["DEVICE"])
    ckpt = checkpoint_path(cfg["RUN"], cfg["CHECKPOINT"])
    model = load_model(ckpt)
    run_dir = ckpt.parent
    data_dir = Path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else training_data_dir(run_dir)
    files = find_images(data_dir)
    workers = loader_workers(cfg["NUM_WORKERS"])
    print(f"checkpoint: {ckpt}\ndata: {data_dir} ({len(files)} images)\n{format_config(cfg)}")

    cache_dir = run_dir / "embeddings" / f"{ckpt.stem}__{data_dir.resolve().name}"
    vectors, names = cached_embeddings(model, ckpt, data_dir, files, cache_dir,
                                       cfg["BATCH_SIZE"], workers, device)
    print(f"embeddings: {cache_dir / 'embeddings.npy'} ({vectors.shape[0]} x {vectors.shape[1]})")
    tokens = [token.strip() for token in cfg["QUERY"].split(",") if token.strip()]
    if not tokens:
        print("no --QUERY given: embedding done")
        return

    index_of = {name: i for i, name in enumerate(names)}
    resolved = [resolve_query(token, data_dir, index_of) for token in tokens]
    query_vectors = [vectors[r] if isinstance(r, int) else embed_file(model, r, device) for r in resolved]
    query = mean_query(np.stack(query_vectors))
    rows, distances = top_k(vectors, query, cfg["TOP_K"], exclude=[r for r in resolved if isinstance(r, int)])
    table = pd.DataFrame({"rank": range(1, len(rows) + 1), "filename": [names[i] for i in rows],
                          "cosine_distance": distances.round(6)})

    query_paths = [data_dir / names[r] if isinstance(r, int) else r for r in resolved]
    label = Path(tokens[0]).stem + (f"+{len(tokens) - 1}" if len(tokens) > 1 else "")
    out_dir = new_output_dir(run_dir / "queries", label)
    write_json(out_dir / "config.json", {
        "hyperparameters": cfg, "resolved": {"checkpoint": str(ckpt.resolve()),
                                             "data_dir": str(data_dir.resolve()),
                                             "queries": [str(p) for p in query_paths]}})
    with atomic_path(out_dir / "neighbours.csv") as tmp:
        table.to_csv(tmp, index=False)
    panels = [(path, f"query\n{short(path.name)}") for path in query_paths]
    panels += [(data_dir / name, f"#{rank}  d={dist:.3f}\n{short(Path(name).name)}")
               for rank, name, dist in table.itertuples(index=False)]
    draw_grid(panels, model.hparams.in_channels, cfg["GRID_COLUMNS"], cfg["PANEL_INCHES"],
              cfg["GRID_DPI"], out_dir / "neighbours.png")
    print(f"\nnearest to {', '.join(tokens)}:\n{table.to_string(index=False)}")
    print(f"\ntable: {out_dir / 'neighbours.csv'}\npicture: {out_dir / 'neighbours.png'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    run_main(main)
