"""Rank the images that look least like any other: the rare events in an archive.

Usage:
    python SSL_Anomalies.py --RUN=checkpoints/oath_simclr
    python SSL_Anomalies.py --RUN=checkpoints/oath_simclr --TOP=100 --K=10

Each image is scored by the cosine distance to its K-th nearest other image (the k-NN distance
outlier score of Ramaswamy, Rastogi & Shim 2000): an image with no close neighbours scores high,
a member of a crowd scores low, and K > 1 keeps a pair of near-duplicates from hiding each
other. Writes <run>/anomalies/<time>/: anomalies.csv (every image, most anomalous first, with
its score and nearest neighbour), anomalies.png and anomalies.html (the TOP of them, each beside
its nearest neighbour) and config.json. Exact search: O(n^2) time, fine up to ~10^5 images.
"""


import pandas as pd
from PIL import Image, ImageDraw

from spacessl.config import (atomic_path, format_config, require, resolve_config, run_main, usage, wants_help)
from spacessl.images import load_image
from spacessl.report import created, file_uri, png_uri, write_page
from spacessl.runs import open_run, result_dir
from spacessl.search import all_nearest

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results go beside it)
DATA_DIR = ""                   # images; "" = the folder the run was trained on
OUTPUT_DIR = ""                 # where results go; "" = inside the run folder, or checkpoints/<run name> here
                                # when the run folder cannot be written (a colleague's run, a read-only mount)
POSTPROCESS = "auto"            # embeddings before cosine search, fitted on this folder's set (spacessl/postprocess.py):
                                # auto (whiten if images >= dimensions, else centre; measured, docs/quality.md, "Retrieval
                                # quality") | whiten (PCA-whitened) | centre | none
K = 5                           # score = cosine distance to the K-th nearest other image, >= 1
TOP = 50                        # most anomalous images shown in anomalies.png / .html
THUMB_PX = 128                  # side of each thumbnail, px
COLUMNS = 5                     # (image, nearest neighbour) pairs per row in anomalies.png
BATCH_SIZE = 256                # images per embedding batch
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
# -----------------------------------------------------------------------------------------------

_CAPTION_PX = 16  # height of the caption strip under each pair in anomalies.png


def score_images(vectors, k: int):
    """(score, nearest neighbour index, its distance) per image; score = distance to the k-th."""
    nearest, similarity = all_nearest(vectors, k, desc="nearest neighbours")
    return 1 - similarity[:, -1], nearest[:, 0], 1 - similarity[:, 0]


def caption(rank: int, score: float) -> str:
    """The label under a pair: rank and score kept apart ("#1  d=0.104", never "#10.104")."""
    return f"#{rank}  d={score:.3f}"


def draw_gallery(pairs: list, channels: int, thumb: int, columns: int, out) -> None:
    """pairs: (image path, neighbour path, caption); each cell = image | neighbour + caption."""
    rows = -(-len(pairs) // columns)
    width, height = 2 * thumb, thumb + _CAPTION_PX
    sheet = Image.new("RGB", (columns * width, rows * height), "black")
    draw = ImageDraw.Draw(sheet)
    for i, (path, neighbour, caption) in enumerate(pairs):
        x, y = (i % columns) * width, (i // columns) * height
        for j, source in enumerate((path, neighbour)):
            sheet.paste(load_image(source, channels).convert("RGB").resize((thumb, thumb)), (x + j * thumb, y))
        draw.text((x + 2, y + thumb + 2), caption, fill="white")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    require(min(cfg["K"], cfg["TOP"], cfg["THUMB_PX"], cfg["COLUMNS"]) >= 1,
            "--K, --TOP, --THUMB_PX and --COLUMNS must be at least 1")
    print(format_config(cfg))
    run = open_run(cfg)
    require(len(run.names) > cfg["K"], f"--K={cfg['K']}: needs more than K images, found {len(run.names)}")
    score, nearest, nearest_distance = score_images(run.vectors, cfg["K"])
    table = pd.DataFrame({"filename": run.names, "score": score.round(6),
                          "nearest": [run.names[i] for i in nearest],
                          "nearest_distance": nearest_distance.round(6)})
    table = table.sort_values(["score", "filename"], ascending=[False, True], ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))

    out_dir = result_dir(run, "anomalies", f"k{cfg['K']}", cfg)
    with atomic_path(out_dir / "anomalies.csv") as tmp:
        table.to_csv(tmp, index=False)
    top = table.head(cfg["TOP"])
    channels, data = run.model.hparams.in_channels, run.data_dir
    draw_gallery([(data / row.filename, data / row.nearest, caption(row.rank, row.score))
                  for row in top.itertuples()], channels, cfg["THUMB_PX"], cfg["COLUMNS"],
                 out_dir / "anomalies.png")

    def thumb(name):
        return png_uri(load_image(data / name, channels).convert("RGB").resize((cfg["THUMB_PX"],) * 2))

    figures = []
    for row in top.itertuples():
        figures.append((thumb(row.filename), f"#{row.rank} score {row.score:.4f}: {row.filename}", "anomaly"))
        figures.append((thumb(row.nearest), f"its nearest, d={row.nearest_distance:.4f}: {row.nearest}",
                        "nearest"))
    write_page(out_dir / "anomalies.html", f"The {len(top)} most unusual of {len(table)} images",
               {"checkpoint": run.checkpoint, "data": data, "score": f"cosine distance to the {cfg['K']}-th "
                "nearest other image", "created": created()},
               [("Most unusual first, each followed by its nearest neighbour", figures),
                ("Overview", [(file_uri(out_dir / "anomalies.png"), "anomalies.png", "overview")])])
    print(f"\nmost unusual (score = distance to the {cfg['K']}-th nearest):\n"
          f"{top.head(10).to_string(index=False)}\n\ntable: {out_dir / 'anomalies.csv'}\n"
          f"gallery: {out_dir / 'anomalies.png'}\npage: {out_dir / 'anomalies.html'}")


if __name__ == "__main__":
    run_main(main)
