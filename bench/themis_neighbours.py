"""Label-free retrieval check on real THEMIS all-sky frames: are consecutive frames each other's
nearest neighbours?

Usage (from the repository root, with ../shared beside it; a few minutes on 2 CPU cores):
    .venv/bin/python bench/themis_neighbours.py
    .venv/bin/python bench/themis_neighbours.py --METHOD=byol --MAX_EPOCHS=30

Trains SSL_Train.py directly on the raw PGM files of ../shared/data/themis_asi_gill_20140310
(6 minute files of 20 16-bit frames, 3 s apart: 120 frames, read frame by frame), embeds every
frame, and prints the fraction of frames whose nearest other frame (cosine) is within
each of MAX_GAPS frames in time (chance: about 2 x gap / 119), for the trained model, the same network with random weights and raw
pixels (downsampled, PCA). The aurora changes little in 3 s, so a useful embedding should find
the neighbouring frames; frames are listed in time order (file per minute, then frame).
Everything goes to checkpoints/bench_themis-<time>/.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from spacessl.baselines import random_init_embeddings, raw_pixel_embeddings  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.embeddings import embed_images  # noqa: E402
from spacessl.hardware import pick_device  # noqa: E402
from spacessl.images import find_images  # noqa: E402
from spacessl.metrics import temporal_neighbour_fraction  # noqa: E402
from spacessl.model import load_model  # noqa: E402
from spacessl import postprocess  # noqa: E402
from spacessl.runs import new_output_dir  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
FRAMES_DIR = "../shared/data/themis_asi_gill_20140310/frames"  # THEMIS ASI raw minute files (PGM)
OUT_DIR = "checkpoints"          # the benchmark's run folder goes here
METHOD = "simclr"                # simclr | simsiam | byol | nnclr | dino (mae needs a ViT: pass BACKBONE through TRAIN_ARGS)
TRAIN_ARGS = ""                  # further SSL_Train.py arguments, space-separated (e.g. "--BACKBONE=vit_tiny")
INPUT_SIZE = 64                  # px crops the network sees (frames are 256 px)
CACHE_SIZE = 96                  # px side of the decode-once cache the crops are cut from
BATCH_SIZE = 32                  # training batch (108 training frames: 3 steps an epoch)
MAX_EPOCHS = 60                  # passes over the frames
WARMUP_EPOCHS = 5                # learning-rate warm-up epochs
NUM_WORKERS = 2                  # loader processes (this machine has 2 cores)
MAX_GAPS = "1,2,5"               # a nearest neighbour within this many frames (3 s each) counts as found; one column each
RAW_PIXELS = 32                  # raw-pixel baseline: side of the downsampled frame
RAW_PCA_DIM = 64                 # raw-pixel baseline: principal components kept
SEED = 42                        # training seed and the random-weights baseline's
POSTPROCESS = "none,centre,whiten"  # search post-processings, each applied to every row (spacessl/postprocess.py)
REUSE = ""                       # an earlier run's best.ckpt to score instead of training one
# -----------------------------------------------------------------------------------------------


def main(argv):
    cfg = settings(globals(), argv)
    frames_dir = Path(cfg["FRAMES_DIR"])
    if not frames_dir.is_dir():
        raise UserError(f"{frames_dir} not found: this benchmark reads ../shared/data beside the repository")
    out = new_output_dir(Path(cfg["OUT_DIR"]), "bench_themis")
    train_args = [f"--DATA_DIR={frames_dir}", f"--CHECKPOINT_DIR={out}", "--RUN_NAME=run", "--AUGMENTATION=allsky",
                  f"--METHOD={cfg['METHOD']}", f"--INPUT_SIZE={cfg['INPUT_SIZE']}", "--PIPELINE=cache",
                  f"--CACHE_SIZE={cfg['CACHE_SIZE']}", f"--BATCH_SIZE={cfg['BATCH_SIZE']}",
                  f"--MAX_EPOCHS={cfg['MAX_EPOCHS']}", f"--WARMUP_EPOCHS={cfg['WARMUP_EPOCHS']}",
                  f"--NUM_WORKERS={cfg['NUM_WORKERS']}", f"--SEED={cfg['SEED']}", *cfg["TRAIN_ARGS"].split()]
    start = time.perf_counter()
    if cfg["REUSE"]:
        checkpoint = Path(cfg["REUSE"])
    else:
        subprocess.run([sys.executable, str(ROOT / "SSL_Train.py"), *train_args], cwd=ROOT, check=True)
        checkpoint = out / "run" / "best.ckpt"
    train_seconds = time.perf_counter() - start

    files = find_images(frames_dir)  # time order: minute files, then frames
    model = load_model(checkpoint)
    device = pick_device("auto")
    trained, kept = embed_images(model, frames_dir, files, cfg["BATCH_SIZE"], cfg["NUM_WORKERS"], device)
    if kept != files:
        raise UserError(f"some frames under {frames_dir} could not be read; see the warnings above")
    hp = dict(model.hparams)
    vectors = {
        f"{cfg['METHOD']} ({cfg['MAX_EPOCHS']} epochs)": trained,
        "random weights": random_init_embeddings(hp, frames_dir, files, cfg["SEED"], cfg["BATCH_SIZE"],
                                                 cfg["NUM_WORKERS"], device),
        "raw pixels": raw_pixel_embeddings(frames_dir, files, hp["in_channels"], cfg["RAW_PIXELS"],
                                           cfg["RAW_PCA_DIM"], cfg["SEED"], hp["stretch"]),
    }
    vectors = {f"{name}, {kind}": postprocess.fit(v, kind).apply(v)
               for name, v in vectors.items() for kind in cfg["POSTPROCESS"].split(",")}
    gaps = [int(g) for g in cfg["MAX_GAPS"].split(",")]
    scores = {name: {gap: temporal_neighbour_fraction(v, gap) for gap in gaps} for name, v in vectors.items()}
    report = {"frames": len(files), "train_seconds": train_seconds, "fraction_nearest_within_gap": scores,
              "torch": torch.__version__}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(files)} THEMIS frames (GILL 2014-03-10 06:00-06:06 UT, 3 s apart); training "
          f"{train_seconds / 60:.1f} min. Share of frames whose nearest neighbour is within +-gap frames:")
    print(f"  {'gap':<36} " + " ".join(f"{gap:>6}" for gap in gaps))
    for name, by_gap in scores.items():
        print(f"  {name:<36} " + " ".join(f"{score:6.3f}" for score in by_gap.values()))
    print(f"  {'chance':<36} " + " ".join(f"{2 * gap / (len(files) - 1):6.3f}" for gap in gaps))
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    run_main(main)
