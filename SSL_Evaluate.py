"""Embed every image with a trained model and find the images most like a query image.

Usage:
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr                  # embed the data set only
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=00042.png
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=00042.png,00107.png --TOP_K=20
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=/path/to/new_event.png
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr --QUERY=a.png,b.png --NOT=c.png,d.png

The data set is embedded once into <run>/embeddings/ and reused until the images or the
checkpoint change. Several comma-separated queries are searched by the mean of their
embeddings; a query file outside the data set is embedded on the fly. NOT names images the
results should not be like: the archive is then ranked as a hunt, the QUERY images (yes) and
the NOT images (no) spread over its nearest-neighbour graph (spacessl/hunt.py; SSL_Explore.py
does the same interactively). Each search prints the
table and writes <run>/queries/<query>-<time>/: neighbours.csv, neighbours.png, config.json
(the settings) and, with REPORT, report.html (one self-contained page: the query, its
neighbours, the map of the data set with both marked, and Grad-CAM maps of what makes the
nearest ones similar, also saved as map.png and explain_<rank>.png).
"""

from pathlib import Path

import numpy as np

from spacessl.config import OPEN_RUN, format_config, keywords, run_main, settings
from spacessl.errors import UserError, require
from spacessl.files import atomic_path
from spacessl.explain import CAM_LAYERS
from spacessl.hunt import query_vector
from spacessl.images import image_time
from spacessl.index import EXACT_LIMIT as LIBRARY_EXACT_LIMIT, IndexSettings
from spacessl.maps import METHODS
from spacessl.queries import (grid_figure, hunt_graph, hunt_neighbours, neighbour_panels, neighbours,
                              neighbours_apart, resolve_query, split_queries, with_times)
from spacessl.report import query_report
from spacessl.runs import open_run, result_dir

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results still go to RUN)
QUERY = ""                      # image(s) to search for: a file name in the data set, a path, or several joined by ","
                                # (a name holding a comma in double quotes, or the comma as \,); "" = embed only
POSTPROCESS = "auto"            # embeddings before cosine search, fitted on this folder's set (spacessl/postprocess.py):
                                # auto (whiten if images >= dimensions, else centre; measured, docs/quality.md, "Retrieval
                                # quality") | whiten (PCA-whitened) | centre | none
NOT = ""                        # images the results should not be like, as QUERY: ranked as a hunt from QUERY (yes)
                                # and NOT (no) over the archive's neighbour graph (spacessl/hunt.py); "" = none
TOP_K = 10                      # neighbours to return, >= 1
EXCLUDE_WITHIN = 0.0            # leave out images taken within this many seconds of a query (a camera's next frames
                                # show the same event again); frames in file-name order where no time is known
                                # (times: THEMIS PGM headers, FITS DATE-OBS, or a date_time in the file name); 0 = none
DATA_DIR = ""                   # images to search; "" = the folder the run was trained on
OUTPUT_DIR = ""                 # where results go; "" = inside the run folder, or checkpoints/<run name> here
                                # when the run folder cannot be written (a colleague's run, a read-only mount)
BATCH_SIZE = 256                # images per embedding batch
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
GRID_COLUMNS = 6                # panels per row in neighbours.png
PANEL_INCHES = 2.2              # width of one panel in neighbours.png
GRID_DPI = 100                  # pixels per inch of neighbours.png
EXACT_LIMIT = LIBRARY_EXACT_LIMIT  # up to this many images (spacessl/index.py's EXACT_LIMIT): exact search; above: a FAISS
                                # index (recall printed)
INDEX_KIND = "auto"             # auto (= ivf-pca, the fastest measured: docs/search.md) | ivf-pca (8-bit, 128
                                # principal components, re-ranked) | hnsw | ivf-flat | ivf-sq8 (8-bit codes)
RECALL_TARGET = 0.95            # recall@10 against exact search the index must reach, in (0, 1]: its search
                                # effort (HNSW efSearch, IVF nprobe) is tuned to it on this archive's own
                                # embeddings, once, when the index is built
NPROBE = 0                      # IVF cells searched per query: 0 = tuned to RECALL_TARGET | a fixed number
NLIST = 0                       # IVF cells; 0 = 4 x sqrt(number of images). Fewer cells than the archive has groups of alike images loses recall (docs/performance.md, Performance)
REPORT = True                   # also write report.html (and its map.png, explain_<rank>.png)
MAP_METHOD = "umap"             # report map when the run has no map of these images yet: umap | tsne
EXPLAIN_TOP = 3                 # nearest neighbours given a Grad-CAM explanation in the report, >= 0
CAM_LAYER = "layer3"            # ResNet stage Grad-CAM weighs, layer1..layer4; layer3's maps are 2x finer than layer4's
THUMB_PX = 160                  # side of the report's thumbnails, px
# -----------------------------------------------------------------------------------------------


def main(argv):
    cfg = settings(globals(), argv)
    require(cfg["TOP_K"] >= 1, f"--TOP_K={cfg['TOP_K']}: must be at least 1")
    require(cfg["EXACT_LIMIT"] >= 0, "--EXACT_LIMIT must be >= 0")
    try:
        index_settings = IndexSettings(cfg["INDEX_KIND"], cfg["NLIST"], cfg["NPROBE"], cfg["RECALL_TARGET"])
    except ValueError as err:
        raise UserError(str(err)) from None
    require(cfg["MAP_METHOD"] in METHODS, f"--MAP_METHOD={cfg['MAP_METHOD']}: choose {' or '.join(METHODS)}")
    require(cfg["CAM_LAYER"] in CAM_LAYERS, f"--CAM_LAYER={cfg['CAM_LAYER']}: choose {', '.join(CAM_LAYERS)}")
    require(cfg["EXPLAIN_TOP"] >= 0 and cfg["THUMB_PX"] >= 1, "--EXPLAIN_TOP must be >= 0, --THUMB_PX >= 1")
    require(cfg["EXCLUDE_WITHIN"] >= 0, f"--EXCLUDE_WITHIN={cfg['EXCLUDE_WITHIN']}: seconds (or frames) >= 0; 0 = none")
    require(min(cfg["GRID_COLUMNS"], cfg["GRID_DPI"]) >= 1 and cfg["PANEL_INCHES"] > 0,
            "--GRID_COLUMNS and --GRID_DPI must be at least 1, --PANEL_INCHES above 0")
    print(format_config(cfg))
    run = open_run(**keywords(cfg, *OPEN_RUN))
    model, data_dir, vectors, names = run.model, run.data_dir, run.vectors, run.names
    tokens, not_tokens = split_queries(cfg["QUERY"]), split_queries(cfg["NOT"])
    require(tokens or not not_tokens, "--NOT needs --QUERY: the images the results should be like")
    if not tokens:
        print("no --QUERY given: embedding done")
        return

    index_of = {name: i for i, name in enumerate(names)}
    resolved = [resolve_query(token, data_dir, index_of, run.skipped) for token in tokens]
    unlike = [resolve_query(token, data_dir, index_of, run.skipped) for token in not_tokens]

    # Rows of the data set stay rows (a hunt starts from them); other files are embedded on the fly.
    yes, no = ([r if isinstance(r, int) else run.embed(r) for r in items] for items in (resolved, unlike))
    exclude = [r for r in resolved + unlike if isinstance(r, int)]
    query = query_vector(np.stack([vectors[m] if isinstance(m, int) else m for m in yes]))
    if unlike:
        graph = hunt_graph(run, cfg["EXACT_LIMIT"], index_settings)
        table, how = hunt_neighbours(run, graph, yes, no, cfg["TOP_K"], exclude)
        print(f"ranked by {how}")
    elif cfg["EXCLUDE_WITHIN"] > 0:
        times = [image_time(data_dir, names[r]) if isinstance(r, int) else image_time(r.parent, r.name)
                 for r in resolved]
        table = neighbours_apart(run, query, [r if isinstance(r, int) else None for r in resolved], times,
                                 cfg["TOP_K"], exclude, cfg["EXCLUDE_WITHIN"], cfg["EXACT_LIMIT"], index_settings)
    else:
        table = neighbours(run, query, cfg["TOP_K"], exclude, cfg["EXACT_LIMIT"], index_settings)
    table = with_times(run, table)
    rows = [index_of[name] for name in table.filename]

    query_paths = [data_dir / names[r] if isinstance(r, int) else r for r in resolved]
    label = Path(tokens[0]).stem + (f"+{len(tokens) - 1}" if len(tokens) > 1 else "")
    with result_dir(run, "queries", label, cfg, queries=[str(p) for p in query_paths],
                    not_like=[str(data_dir / names[r]) if isinstance(r, int) else str(r) for r in unlike]) as out:
        with atomic_path(out.path / "neighbours.csv") as tmp:
            table.to_csv(tmp, index=False)
        grid = grid_figure(neighbour_panels(query_paths, data_dir, table), model.hparams.in_channels,
                           model.hparams.stretch, cfg["GRID_COLUMNS"], cfg["PANEL_INCHES"])
        with atomic_path(out.path / "neighbours.png") as tmp:
            grid.savefig(tmp, format="png", dpi=cfg["GRID_DPI"])
        if cfg["REPORT"]:
            query_report(run, out.path, query_paths, [r for r in resolved if isinstance(r, int)], rows, table,
                         thumb_px=cfg["THUMB_PX"], map_method=cfg["MAP_METHOD"], explain_top=cfg["EXPLAIN_TOP"],
                         cam_layer=cfg["CAM_LAYER"], settings=cfg)
    print(f"\nnearest to {', '.join(tokens)}:\n{table.to_string(index=False)}")
    print(f"\ntable: {out.path / 'neighbours.csv'}\npicture: {out.path / 'neighbours.png'}")
    if cfg["REPORT"]:
        print(f"report: {out.path / 'report.html'}")


if __name__ == "__main__":
    run_main(main)
