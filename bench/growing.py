"""What a nightly update of a growing archive costs: adding NEW_SHARE new images to an archive of
IMAGES small images, against embedding all of them.

Usage (from the repository root):
    .venv/bin/python bench/growing.py                        # 100,000 images of 32 px, 1 % new
    .venv/bin/python bench/growing.py --IMAGES=20000 --SIDE=64

Writes IMAGES grey PNG files of random sky-like noise into checkpoints/bench_growing-<time>/data
and an untrained resnet18 run beside them (the model's weights do not change the cost), then times,
through the product's own path (spacessl/embeddings.cached_embeddings, as SSL_Evaluate.py uses it):
  1. embedding the whole archive into an empty cache;
  2. checking an unchanged archive (every file's size and times compared, nothing embedded);
  3. the update after NEW_SHARE x IMAGES new files were added and as many removed;
  4. the same archive embedded from scratch again (the cost the update avoids; SCRATCH_AGAIN).
Printed: seconds for each, images embedded by each, and the update's share of a full embedding.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spacessl.config import run_main, settings  # noqa: E402
from spacessl.embeddings import cached_embeddings  # noqa: E402
from spacessl.images import find_images, loader_workers  # noqa: E402
from spacessl.model import SSLModel  # noqa: E402
from spacessl.training import save_untrained  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
IMAGES = 100000                  # archive size before the update
NEW_SHARE = 0.01                 # share of the archive added (and as many removed) by the update
SIDE = 32                        # px side of each image, and the model's input size
BATCH_SIZE = 256                 # images per embedding batch
NUM_WORKERS = -1                 # data-loading processes: -1 = one per CPU core (capped)
SCRATCH_AGAIN = True             # step 4: embed the updated folder from scratch too (False: compare with step 1)
KEEP = False                     # keep the images and run folder afterwards
SEED = 0
# -----------------------------------------------------------------------------------------------


def write_images(folder: Path, names: list, side: int, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        pixels = np.clip(rng.normal(40, 12, (side, side)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)


def timed(label: str, model, ckpt, data: Path, cache: Path, cfg: dict) -> float:
    files = find_images(data)
    meta = cache / "meta.json"
    before = meta.stat().st_mtime_ns if meta.is_file() else None
    start = time.perf_counter()
    cached_embeddings(model, ckpt, data, files, cache, cfg["BATCH_SIZE"], loader_workers(cfg["NUM_WORKERS"]),
                      torch.device("cpu"))
    seconds = time.perf_counter() - start
    counts = json.loads(meta.read_text())["last_build"]
    done = ("nothing embedded, the cache reused" if meta.stat().st_mtime_ns == before else
            f"{counts['embedded']:,} embedded, {counts['reused']:,} kept from the cache")
    print(f"{label}: {seconds:.1f} s for {len(files):,} images ({done})", flush=True)
    return seconds


def main(argv):
    cfg = settings(globals(), argv)
    rng = np.random.default_rng(cfg["SEED"])
    home = ROOT / "checkpoints" / f"bench_growing-{time.strftime('%Y%m%d-%H%M%S')}"
    data, run = home / "data", home / "run"
    names = [f"{i:07d}.png" for i in range(cfg["IMAGES"])]
    start = time.perf_counter()
    write_images(data, names, cfg["SIDE"], rng)
    print(f"{cfg['IMAGES']:,} images of {cfg['SIDE']} px written in {time.perf_counter() - start:.0f} s: {data}")
    torch.manual_seed(cfg["SEED"])
    model = SSLModel(in_channels=1, input_size=cfg["SIDE"]).eval()
    run.mkdir(parents=True)
    save_untrained(model, run)
    ckpt = run / "best.ckpt"
    full = timed("1. whole archive, empty cache", model, ckpt, data, run / "cache", cfg)
    timed("2. nothing changed", model, ckpt, data, run / "cache", cfg)
    new = int(round(cfg["NEW_SHARE"] * cfg["IMAGES"]))
    write_images(data, [f"n{i:07d}.png" for i in range(new)], cfg["SIDE"], rng)
    for name in names[:new]:
        (data / name).unlink()
    update = timed(f"3. {new:,} added, {new:,} removed", model, ckpt, data, run / "cache", cfg)
    if cfg["SCRATCH_AGAIN"]:
        again = timed("4. the same archive from scratch", model, ckpt, data, run / "scratch", cfg)
        print(f"update: {update:.1f} s = {100 * update / again:.1f} % of embedding the archive from scratch "
              f"({again:.1f} s; first full embedding {full:.1f} s)")
    else:
        print(f"update: {update:.1f} s = {100 * update / full:.1f} % of the first full embedding ({full:.1f} s)")
    if not cfg["KEEP"]:
        shutil.rmtree(home)


if __name__ == "__main__":
    run_main(main)
