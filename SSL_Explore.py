"""Explore a trained run in the browser and hunt for a rare kind of image: "more like these, not like those".

Usage:
    python SSL_Evaluate.py --RUN=checkpoints/oath_simclr       # once: embed the images (cached)
    python SSL_Map.py --RUN=checkpoints/oath_simclr            # optional: the map the explorer shows
    python SSL_Explore.py --RUN=checkpoints/oath_simclr        # then open the printed address

Pages: a map of the archive (points; hover for the image, click to search with it), a query
view (a file name, a click on the map, or an uploaded image) and a hunt view: mark images "yes"
or "no" and the archive is ranked again from all marks (the mean of the yes images; from two
of each on, plus the direction of a linear classifier of yes against no: spacessl/hunt.py),
unmarked images first. Marks
and the ranking are saved in <run>/explore/ (marks.csv, ranking.csv) and come back when the
explorer starts again; Export writes the top images as ranking.csv and contact_sheet.png to
<run>/explore/exports/. The same ranking without a browser:
SSL_Evaluate.py --QUERY=a.png,b.png --NOT=c.png,d.png. Ctrl-C stops the explorer.
"""

from spacessl.config import OPEN_RUN, format_config, keywords, run_main, settings
from spacessl.errors import UserError, require
from spacessl.explore import ExploreSettings, Explorer, check_address, make_app, server
from spacessl.index import EXACT_LIMIT as LIBRARY_EXACT_LIMIT, IndexSettings
from spacessl.runs import open_run

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file
DATA_DIR = ""                   # images; "" = the folder the run was trained on
OUTPUT_DIR = ""                 # where marks and exports go; "" = inside the run folder, or checkpoints/<run name>
                                # here when the run folder cannot be written
POSTPROCESS = "auto"            # as SSL_Evaluate.py: auto | whiten | centre | none
HOST = "127.0.0.1"              # address to listen on; this machine only unless ALLOW_REMOTE
PORT = 8765                     # TCP port
ALLOW_REMOTE = False            # True: allow a HOST other machines can reach (no login: anyone there sees the archive)
SHOWN = 24                      # neighbours and ranked images shown (and exported by default), >= 1
THUMB_PX = 128                  # side of the thumbnails, px (made once, cached in <run>/explore/thumbs/)
MAX_UPLOAD_MB = 50              # largest image file accepted as an upload, MB
EXACT_LIMIT = LIBRARY_EXACT_LIMIT  # up to this many images (spacessl/index.py's EXACT_LIMIT): exact search; above: the
                                # run's FAISS index (SSL_Evaluate.py)
INDEX_KIND = "auto"             # as SSL_Evaluate.py: auto | ivf-pca | hnsw | ivf-flat | ivf-sq8; the same settings there and
RECALL_TARGET = 0.95            # here reuse one index (saved beside the embeddings), other settings build another
NPROBE = 0                      # IVF cells searched per query: 0 = tuned to RECALL_TARGET | a fixed number
NLIST = 0                       # IVF cells; 0 = 4 x sqrt(number of images)
SHEET_COLUMNS = 6               # exported contact sheet: panels per row
SHEET_INCHES = 2.2              # exported contact sheet: width of one panel
BATCH_SIZE = 256                # images per embedding batch (uploads are embedded one at a time)
NUM_WORKERS = 0                 # data-loading processes (the explorer reads cached embeddings)
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
# -----------------------------------------------------------------------------------------------


def explore_settings(cfg: dict) -> ExploreSettings:
    """The block's settings as the explorer's (a ValueError names a bad index setting)."""
    return ExploreSettings(shown=cfg["SHOWN"], thumb_px=cfg["THUMB_PX"], max_upload_mb=cfg["MAX_UPLOAD_MB"],
                           sheet_columns=cfg["SHEET_COLUMNS"], sheet_inches=cfg["SHEET_INCHES"],
                           exact_limit=cfg["EXACT_LIMIT"],
                           index=IndexSettings(cfg["INDEX_KIND"], cfg["NLIST"], cfg["NPROBE"], cfg["RECALL_TARGET"]))


def main(argv):
    cfg = settings(globals(), argv)
    require(min(cfg["SHOWN"], cfg["THUMB_PX"], cfg["MAX_UPLOAD_MB"], cfg["SHEET_COLUMNS"]) >= 1,
            "--SHOWN, --THUMB_PX, --MAX_UPLOAD_MB and --SHEET_COLUMNS must be at least 1")
    require(1 <= cfg["PORT"] <= 65535, f"--PORT={cfg['PORT']}: give a port in 1..65535")
    check_address(cfg["HOST"], cfg["PORT"], cfg["ALLOW_REMOTE"])
    try:
        shown = explore_settings(cfg)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(format_config(cfg))
    # Embedding an archive is a job for SSL_Evaluate.py / SSL_Embed.py, not for a web page's start.
    explorer = Explorer(open_run(**keywords(cfg, *OPEN_RUN), embed=False), shown)
    if explorer.missing():
        print(f"{len(explorer.missing())} marked images are no longer in the run (kept in marks.csv, left out of "
              f"the ranking): {', '.join(explorer.missing())}")
    host = f"[{cfg['HOST']}]" if ":" in cfg["HOST"] else cfg["HOST"]
    print(f"map: {explorer.map_source}\nmarks and exports: {explorer.folder}\n"
          f"explorer: http://{host}:{cfg['PORT']}/   (Ctrl-C stops it)")
    server(make_app(explorer), cfg["HOST"], cfg["PORT"]).run()


if __name__ == "__main__":
    run_main(main)
