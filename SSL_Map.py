"""Draw a map of a trained run's embedding space: every image as a point, similar images close.

Usage:
    python SSL_Map.py --RUN=checkpoints/oath_simclr                         # UMAP, unlabelled
    python SSL_Map.py --RUN=checkpoints/oath_simclr --MAP_METHOD=tsne
    python SSL_Map.py --RUN=checkpoints/demo-... --LABELS=data/sample/galaxy_labels.csv --CLASS_COLUMN=class_name

Writes <run>/maps/<method>-<time>/: coords.csv (filename, x, y and the class when labels are
given), map.png (points, coloured by class when labels are given), mosaic.png (thumbnails at
their map positions, one per grid cell) and config.json. SSL_Evaluate.py's report reuses the
newest map of the same images.
"""


from spacessl.config import OPEN_RUN, format_config, keywords, run_main, settings
from spacessl.errors import require
from spacessl.labels import match_labels, read_labels
from spacessl.maps import METHODS, draw_mosaic, project, save_map
from spacessl.runs import open_run, result_dir

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results still go to RUN)
DATA_DIR = ""                   # images; "" = the folder the run was trained on
OUTPUT_DIR = ""                 # where results go; "" = inside the run folder, or checkpoints/<run name> here
                                # when the run folder cannot be written (a colleague's run, a read-only mount)
POSTPROCESS = "auto"            # embeddings before cosine search, fitted on this folder's set (spacessl/postprocess.py):
                                # auto (whiten if images >= dimensions, else centre; measured, docs/quality.md, "Retrieval
                                # quality") | whiten (PCA-whitened) | centre | none
MAP_METHOD = "umap"             # umap (umap-learn) | tsne (scikit-learn)
NEIGHBOURS = 15                 # UMAP n_neighbors: larger keeps more global structure
MIN_DIST = 0.1                  # UMAP min_dist in [0, 1]: smaller packs clusters tighter
PERPLEXITY = 30.0               # t-SNE perplexity, roughly the neighbours each point keeps
LABELS = ""                     # optional CSV (id, class) to colour points by; "" = unlabelled
ID_COLUMN = ""                  # labels column naming the image; "" = auto
CLASS_COLUMN = ""               # labels column with the class; "" = auto
MERGE_CLASSES = ""              # classes drawn as one, "a+b" or "a+b;c+d"
MOSAIC_PX = 1600                # side of mosaic.png in px
THUMB_PX = 40                   # side of each thumbnail (and grid cell) in mosaic.png, px
BATCH_SIZE = 256                # images per embedding batch
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
SEED = 0                        # seeds the projection
# -----------------------------------------------------------------------------------------------


def main(argv):
    cfg = settings(globals(), argv)
    require(cfg["MAP_METHOD"] in METHODS, f"--MAP_METHOD={cfg['MAP_METHOD']}: choose {' or '.join(METHODS)}")
    require(cfg["NEIGHBOURS"] >= 2 and 0 <= cfg["MIN_DIST"] <= 1 and cfg["PERPLEXITY"] > 0,
            "--NEIGHBOURS must be at least 2, --MIN_DIST in [0, 1], --PERPLEXITY above 0")
    require(1 <= cfg["THUMB_PX"] <= cfg["MOSAIC_PX"], "--THUMB_PX must be between 1 and --MOSAIC_PX")
    labels_table = (read_labels(cfg["LABELS"], cfg["ID_COLUMN"], cfg["CLASS_COLUMN"], cfg["MERGE_CLASSES"])
                    if cfg["LABELS"] else None)
    print(format_config(cfg))
    run = open_run(**keywords(cfg, *OPEN_RUN))
    vectors, names = run.vectors, run.names
    labels = None
    if labels_table is not None:  # a labelled map shows the labelled images only
        rows, labels = match_labels(labels_table, names, cfg["LABELS"])
        vectors, names = vectors[rows], [names[i] for i in rows]
    coords = project(vectors, cfg["MAP_METHOD"], cfg["NEIGHBOURS"], cfg["MIN_DIST"], cfg["PERPLEXITY"],
                     cfg["SEED"])

    with result_dir(run, "maps", cfg["MAP_METHOD"], cfg, n_images=len(names)) as out:
        save_map(out.path, coords, names, labels,
                 f"{cfg['MAP_METHOD']} map of {len(names)} images ({run.checkpoint.parent.name})")
        drawn = draw_mosaic(coords, run.data_dir, names, run.model.hparams.in_channels, cfg["MOSAIC_PX"],
                            cfg["THUMB_PX"], out.path / "mosaic.png", stretch=run.model.hparams.stretch)
    print(f"map: {out.path / 'map.png'}\nmosaic: {out.path / 'mosaic.png'} ({drawn} of {len(names)} images "
          f"shown, one per cell)\ncoordinates: {out.path / 'coords.csv'}")


if __name__ == "__main__":
    run_main(main)
