"""Could a different whitening give better neighbours? Variants of the search post-processing,
scored on a bench/ablation.py folder's trained runs, their random-weights twins and raw pixels.

Usage (from the repository root; FOLDER is what bench/ablation.py wrote):
    .venv/bin/python bench/whiten_variants.py --FOLDER=checkpoints/bench_ablation_mirabest-... --RUNS=tuned_s1

For each run in RUNS (named <row>_s<seed>, as bench/ablation.py names them), its best.ckpt, the
same network with random weights (that seed) and raw pixels embed the folder's labelled images;
each variant below post-processes the vectors and precision@10 (share of the 10 cosine
neighbours in the query's class) is printed, a column per network, a row per variant:
  none, centre, whiten        spacessl/postprocess.py's kinds (whiten = today's default)
  floor F                     whitening with the variance floor F (today's: postprocess.WHITEN_FLOOR)
  dims D                      only the D leading principal axes kept, then whitened (Jégou & Chum
                              2012 reduce dimensions as they whiten)
  dims D, no floor            the same without the variance floor
  power P                     each axis divided by its standard deviation to the power P (P = 1 is
                              full whitening, 0 is none; a softer whitening)
Labels are only read to score; the variants are fitted on the images' vectors without them.
"""

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ablation import DEMO_IMAGES, DEMO_LABELS, feature_sets, labelled, set_settings  # noqa: E402
from spacessl import postprocess  # noqa: E402
from spacessl.baselines import raw_pixel_embeddings  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.metrics import precision_at_k  # noqa: E402
from spacessl.model import SSLModel, load_model  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
FOLDER = ""                      # a bench/ablation.py output folder (with runs/ and, but for the demo, data/)
RUNS = "tuned_s1"                # its runs to score, comma-separated (<row>_s<seed>)
SET = "mirabest"                 # which set the folder holds: mirabest | galaxyzoo | demo (class merging)
FLOORS = "0.001,0.03,0.1"        # variance floors tried, relative to the largest variance
DIMS = "32,64,128,256"           # leading principal axes kept, tried with today's floor
DIMS_NO_FLOOR = "64,128"         # ... and without a floor
POWERS = "0.5"                   # softer whitening powers tried
PRECISION_K = 10                 # neighbours scored
PIXEL_SIDE = 32                  # raw pixels: px side before PCA (as bench/ablation.py)
PIXEL_PCA = 128                  # raw pixels: principal components kept
NUM_WORKERS = 2                  # loader processes
# -----------------------------------------------------------------------------------------------


def whiten(vectors, floor: float, dims: int = 0, power: float = 1.0) -> np.ndarray:
    """Unit rows of PCA-whitened vectors: centred, projected on the `dims` leading axes (0 = all),
    each axis divided by (variance + floor * largest variance) ** (power / 2)."""
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variance = s ** 2 / len(x)
    if dims:
        variance, vt = variance[:dims], vt[:dims]
    out = centred @ (vt / ((variance + floor * variance.max()) ** (power / 2))[:, None]).T
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def postprocessed(vectors, kind: str) -> np.ndarray:
    """The vectors as spacessl/postprocess.py's `kind` leaves them (what the search uses)."""
    return postprocess.fit(vectors, kind).apply(vectors)


def variants(cfg) -> dict:
    """Name -> function of the vectors giving their post-processed unit rows."""
    def numbers(key, kind):
        return [kind(v) for v in cfg[key].split(",") if v.strip()]
    floor = postprocess.WHITEN_FLOOR
    out = {kind: partial(postprocessed, kind=kind) for kind in ("none", "centre", "whiten")}
    out.update({f"floor {f:g}": partial(whiten, floor=f) for f in numbers("FLOORS", float)})
    out.update({f"dims {d}": partial(whiten, floor=floor, dims=d) for d in numbers("DIMS", int)})
    out.update({f"dims {d}, no floor": partial(whiten, floor=0.0, dims=d) for d in numbers("DIMS_NO_FLOOR", int)})
    out.update({f"power {p:g}": partial(whiten, floor=floor, power=p) for p in numbers("POWERS", float)})
    return out


def main(argv):
    cfg = settings(globals(), argv)
    folder = Path(cfg["FOLDER"])
    chosen = set_settings(cfg)
    if cfg["SET"] == "demo":
        images, labels = DEMO_IMAGES, DEMO_LABELS
    else:
        images, labels = folder / "data" / "images", folder / "data" / "labels.csv"
    if not images.is_dir():
        raise UserError(f"--FOLDER={folder}: no {images}; give a folder bench/ablation.py wrote")
    names, classes = labelled(images, labels, chosen["merge"])
    vectors = {}
    for run in [r.strip() for r in cfg["RUNS"].split(",") if r.strip()]:
        checkpoint = folder / "runs" / run / "best.ckpt"
        if not checkpoint.is_file():
            raise UserError(f"--RUNS: no {checkpoint}")
        seed = int(run.rsplit("_s", 1)[-1])
        model = load_model(checkpoint)
        vectors[run] = feature_sets(model, images, names, cfg["NUM_WORKERS"])["pool"]
        torch.manual_seed(seed)  # the random twin bench/ablation.py scores for this seed
        vectors[f"random weights s{seed}"] = feature_sets(SSLModel(**dict(model.hparams)), images, names,
                                                          cfg["NUM_WORKERS"])["pool"]
        vectors[f"raw pixels s{seed}"] = raw_pixel_embeddings(images, names, model.hparams["in_channels"],
                                                              cfg["PIXEL_SIDE"], cfg["PIXEL_PCA"], seed)
    table = pd.DataFrame({name: {network: precision_at_k(transform(x), classes, cfg["PRECISION_K"])
                                 for network, x in vectors.items()}
                          for name, transform in variants(cfg).items()}).T
    print(f"{cfg['SET']}: {len(names)} labelled images; precision@{cfg['PRECISION_K']} after each post-processing")
    print(table.round(3).to_string())


if __name__ == "__main__":
    run_main(main)
