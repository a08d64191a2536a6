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

from pathlib import Path

from spacessl.config import UserError, format_config, require, resolve_config, run_main, usage, wants_help
from spacessl.embeddings import cache_meta, read_cache
from spacessl.explore import Explorer, check_address, make_app, server
from spacessl.images import find_images
from spacessl.runs import checkpoint_path, embedding_cache_dir, open_run, output_home, training_data_dir

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
EXACT_LIMIT = 200000            # up to this many images: exact search; above: the run's FAISS index (SSL_Evaluate.py)
SHEET_COLUMNS = 6               # exported contact sheet: panels per row
SHEET_INCHES = 2.2              # exported contact sheet: width of one panel
BATCH_SIZE = 256                # images per embedding batch (uploads are embedded one at a time)
NUM_WORKERS = 0                 # data-loading processes (the explorer reads cached embeddings)
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
# -----------------------------------------------------------------------------------------------


def require_cached_embeddings(cfg: dict) -> None:
    """The explorer opens a run whose images are already embedded: embedding an archive is a
    job for SSL_Evaluate.py / SSL_Embed.py, not for a web page's start."""
    checkpoint = checkpoint_path(cfg["RUN"], cfg["CHECKPOINT"])
    data_dir = Path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else training_data_dir(checkpoint.parent)
    files = find_images(data_dir)
    meta = cache_meta(checkpoint, data_dir, files)
    own = embedding_cache_dir(checkpoint, data_dir)
    home = output_home(checkpoint.parent, cfg["OUTPUT_DIR"]) / own.relative_to(checkpoint.parent)
    if all(read_cache(folder, meta) is None for folder in {own, home}):
        data = f" --DATA_DIR={cfg['DATA_DIR']}" if cfg["DATA_DIR"] else ""
        raise UserError(f"{cfg['RUN']} has no embeddings of the {len(files)} images in {data_dir} from "
                        f"{checkpoint.name} yet: make them with python SSL_Evaluate.py --RUN={cfg['RUN']}"
                        f" --CHECKPOINT={cfg['CHECKPOINT']}{data} (SSL_Embed.py on several GPUs), then start the explorer again")


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    require(min(cfg["SHOWN"], cfg["THUMB_PX"], cfg["MAX_UPLOAD_MB"], cfg["SHEET_COLUMNS"]) >= 1,
            "--SHOWN, --THUMB_PX, --MAX_UPLOAD_MB and --SHEET_COLUMNS must be at least 1")
    require(1 <= cfg["PORT"] <= 65535, f"--PORT={cfg['PORT']}: give a port in 1..65535")
    check_address(cfg["HOST"], cfg["PORT"], cfg["ALLOW_REMOTE"])
    require_cached_embeddings(cfg)
    print(format_config(cfg))
    explorer = Explorer(open_run(cfg), cfg)
    if explorer.missing():
        print(f"{len(explorer.missing())} marked images are no longer in the run (kept in marks.csv, left out of "
              f"the ranking): {', '.join(explorer.missing())}")
    host = f"[{cfg['HOST']}]" if ":" in cfg["HOST"] else cfg["HOST"]
    print(f"map: {explorer.map_source}\nmarks and exports: {explorer.folder}\n"
          f"explorer: http://{host}:{cfg['PORT']}/   (Ctrl-C stops it)")
    server(make_app(explorer), cfg["HOST"], cfg["PORT"]).run()


if __name__ == "__main__":
    run_main(main)
