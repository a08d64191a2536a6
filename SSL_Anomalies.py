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



from spacessl.config import OPEN_RUN, format_config, keywords, run_main, settings
from spacessl.errors import require
from spacessl.report import anomaly_report
from spacessl.runs import open_run, result_dir
from spacessl.search import anomaly_table

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results still go to RUN)
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

def main(argv):
    cfg = settings(globals(), argv)
    require(min(cfg["K"], cfg["TOP"], cfg["THUMB_PX"], cfg["COLUMNS"]) >= 1,
            "--K, --TOP, --THUMB_PX and --COLUMNS must be at least 1")
    print(format_config(cfg))
    run = open_run(**keywords(cfg, *OPEN_RUN))
    require(len(run.names) > cfg["K"], f"--K={cfg['K']}: needs more than K images, found {len(run.names)}")
    table = anomaly_table(run.vectors, run.names, cfg["K"])
    top = table.head(cfg["TOP"])
    with result_dir(run, "anomalies", f"k{cfg['K']}", cfg) as out:
        anomaly_report(run, table, out.path, k=cfg["K"], top=cfg["TOP"], thumb_px=cfg["THUMB_PX"],
                       columns=cfg["COLUMNS"])
    print(f"\nmost unusual (score = distance to the {cfg['K']}-th nearest):\n"
          f"{top.head(10).to_string(index=False)}\n\ntable: {out.path / 'anomalies.csv'}\n"
          f"gallery: {out.path / 'anomalies.png'}\npage: {out.path / 'anomalies.html'}")


if __name__ == "__main__":
    run_main(main)
