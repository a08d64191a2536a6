"""Retrieval-quality ablation: which training recipe and which post-processing of the embeddings
give the best neighbours, each against the same network with random weights and raw pixels,
all scored the same way.

Usage (from the repository root, with ../shared beside it):
    .venv/bin/python bench/ablation.py --SET=mirabest --ROWS=before,noblur --SEEDS=1,2 --EPOCHS=30
    .venv/bin/python bench/ablation.py --SET=demo --ROWS=tuned --SEEDS=1,2,3 --EPOCHS=30

Each row of ROWS below is a set of SSL_Train.py settings; each (row, seed) trains once, embeds
the labelled images with best.ckpt, and each vector it could search with (`pool`: the backbone's
output, today's search vector; `l3+l4`: layer3 and layer4 pooled side by side; `proj`: the
projection head's output; `teacher`: BYOL's and DINO's momentum backbone's output) is scored
after each post-processing in POSTPROCESS (`none`, `centre`: subtract the set's mean vector,
`whiten`: PCA-whiten; both renormalised). The
same network with random weights and raw pixels are scored with the same seeds and
post-processings. Scores: precision@10 (share of the 10 cosine neighbours in the query's class,
over all labelled images), 5-fold kNN (k = 20) and linear-probe accuracy, and kNN accuracy with
5 labels per class. A line per result is appended to <run folder>/results.csv as it comes, so a
stopped run keeps what it measured; the table of means ± std over seeds is printed at the end.

Sets: mirabest and galaxyzoo as bench/quality.py prepares them; demo = data/sample/galaxies with
data/sample/galaxy_labels.csv (300 images), which also counts edge-on neighbours of the demo query.
"""

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from spacessl.baselines import raw_pixel_embeddings  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.files import atomic_path  # noqa: E402
from spacessl.embeddings import eval_dataset  # noqa: E402
from spacessl.images import collate_readable  # noqa: E402
from spacessl.labels import match_labels, read_labels  # noqa: E402
from spacessl.metrics import cross_validate, precision_at_k  # noqa: E402
from spacessl.model import SSLModel, load_model  # noqa: E402
from quality import GALAXY_MERGE, prepare_galaxyzoo, prepare_mirabest  # noqa: E402
from spacessl import postprocess  # noqa: E402
from spacessl.runs import new_output_dir  # noqa: E402
from spacessl.search import top_k  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
SET = "mirabest"                 # mirabest | galaxyzoo | demo
ROWS = "before,tuned"            # rows of the ROW_SETTINGS table below, comma-separated
SEEDS = "1,2"                    # training seeds, comma-separated; each row trains once per seed
EPOCHS = 30                      # training epochs per row
BATCH_SIZE = 128                 # training batch
WARMUP_EPOCHS = 3                # learning-rate warm-up (fewer when EPOCHS is smaller)
POSTPROCESS = "none,centre,whiten"  # post-processings scored, comma-separated
FEATURES = "pool,l3+l4,proj"     # search vectors scored, comma-separated (see above)
RANDOM_BASELINE = True           # also score random weights and raw pixels
KNN_MONITOR = False              # also pass the labels to SSL_Train.py's kNN monitor: validation kNN accuracy
                                 # after every epoch, printed per row (what training does to the classes over time)
REUSE = ""                       # an earlier ablation folder: rows trained there are scored again, not retrained
SHARED = "../shared/data"        # the read-only archive copies
OUT_DIR = "checkpoints"          # the benchmark's run folder goes here
NUM_WORKERS = 2                  # loader processes (this machine has 2 cores)
GALAXY_CROP = 256                # galaxyzoo copies: px kept from the centre (as bench/quality.py)
GALAXY_STORED = 64               # galaxyzoo copies: px side
MIRABEST_STORED = 80             # mirabest copies: px side
PRECISION_K = 10                 # neighbours scored for precision@k
KNN_K = 20                       # kNN classifier's voters
FEW_SHOT = 5                     # labels per class for the few-shot kNN score
INPUT_SIZE = 0                   # px the network sees; 0 = the set's (SETS below), at most the stored side
# -----------------------------------------------------------------------------------------------

# SSL_Train.py settings of each row; every row also gets the set's INPUT_SIZE, the seed, EPOCHS
# and BATCH_SIZE. Each row names all it changes (its method too: METHOD=auto follows the preset), so
# it means the same whatever the defaults are:
# "before" is the galaxy recipe before this ablation (the astro preset until 2026-11-28), "tuned"
# the one it chose for radio sources (the radio preset with temperature 0.2).
BEFORE_AUGMENTATION = "astro:min_scale=0.6,gaussian_blur=0.5,rr_degrees=180,rr_prob=1"
NOCROP_AUGMENTATION = f"{BEFORE_AUGMENTATION},min_scale=1.0,gaussian_blur=0,rr_degrees=none,rr_prob=0.5"
ROW_SETTINGS = {
    "before": ["--METHOD=simclr", "--TEMPERATURE=0.5", f"--AUGMENTATION={BEFORE_AUGMENTATION}"],
    "noblur": ["--METHOD=simclr", "--TEMPERATURE=0.5", f"--AUGMENTATION={BEFORE_AUGMENTATION},gaussian_blur=0"],
    "crop02": ["--METHOD=simclr", "--TEMPERATURE=0.5", f"--AUGMENTATION={BEFORE_AUGMENTATION},min_scale=0.2"],
    "jitter08": ["--METHOD=simclr", "--TEMPERATURE=0.5", f"--AUGMENTATION={BEFORE_AUGMENTATION},cj_bright=0.8,cj_contrast=0.8"],
    "temp02": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={BEFORE_AUGMENTATION}"],
    "temp01": ["--METHOD=simclr", "--TEMPERATURE=0.1", f"--AUGMENTATION={BEFORE_AUGMENTATION}"],
    # The three single changes that each raised precision@10 on MiraBest, together.
    "tuned": ["--METHOD=simclr", "--TEMPERATURE=0.2", "--AUGMENTATION=radio"],
    # The same without the smaller crops, the one change that also cost MiraBest linear and few-shot accuracy.
    "softer": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={BEFORE_AUGMENTATION},gaussian_blur=0"],
    # Quarter turns and mirrorings instead of any angle: lightly rotates after cropping, so an
    # arbitrary angle brings black corners into a view of a galaxy on a noisy sky, which no search
    # image has (radio cutouts are black around the source anyway).
    "d4": ["--METHOD=simclr", "--TEMPERATURE=0.5", f"--AUGMENTATION={BEFORE_AUGMENTATION},rr_degrees=none,rr_prob=0.5"],
    "d4soft": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={BEFORE_AUGMENTATION},gaussian_blur=0,rr_degrees=none,rr_prob=0.5"],
    # No crop at all (min_scale 1: RandomResizedCrop then keeps the whole square image): every
    # crop is also stretched by up to 4/3 in one direction, which changes the axis ratio that tells
    # an edge-on disc or an elongated elliptical from a round one; galaxies are centred anyway.
    # Best on Galaxy Zoo and the demo: the astro preset since 2026-11-28.
    "nocrop": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={NOCROP_AUGMENTATION}"],
    # `nocrop` with Gaussian noise (up to 5 % of the pixel range per view): whole views of one
    # cutout otherwise share its exact sky noise, an identity cue that is not morphology.
    "noise05": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={NOCROP_AUGMENTATION},noise=0.05"],
    # `nocrop` with square crops of at least half the area: a view zooms into the centred galaxy
    # without stretching it, and field stars near the edge leave some views (an identity cue
    # that whole views share exactly).
    "zoom05": ["--METHOD=simclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={NOCROP_AUGMENTATION},min_scale=0.5,max_ratio=1"],
    # `nocrop` trained by NNCLR: each view's positive is its nearest neighbour among recent
    # training embeddings, so similar galaxies are pulled together, not only views of one image.
    "nnclr": ["--METHOD=nnclr", "--TEMPERATURE=0.2", f"--AUGMENTATION={NOCROP_AUGMENTATION}"],
    # `nocrop` trained by BYOL (a momentum target, no negatives).
    "byol": ["--METHOD=byol", f"--AUGMENTATION={NOCROP_AUGMENTATION}"],
    # `nocrop` trained by DINO (self-distillation from a momentum teacher; two whole views, no multi-crop).
    "dino": ["--METHOD=dino", f"--AUGMENTATION={NOCROP_AUGMENTATION}"],
    # `tuned` (the radio recipe) trained by NNCLR.
    "nnclr_radio": ["--METHOD=nnclr", "--TEMPERATURE=0.2", "--AUGMENTATION=radio"],
    # `tuned`'s views (the radio preset) trained by DINO, the best galaxy method.
    "dino_radio": ["--METHOD=dino", "--AUGMENTATION=radio"],
}
SETS = {  # input size the network sees, the setting giving the images' side (cached as it is on a GPU), merged classes
    "mirabest": {"input": 64, "side": "MIRABEST_STORED", "merge": ""},
    "galaxyzoo": {"input": 48, "side": "GALAXY_STORED", "merge": GALAXY_MERGE},
    "demo": {"input": 64, "side": "DEMO_SIDE", "merge": GALAXY_MERGE},
}
DEMO_SIDE = 80  # px side of data/sample/galaxies
DEMO_QUERY = "587722983360102542.jpg"  # the Makefile's demo query, an edge-on galaxy (class 3)
EDGE_ON = "3"


DEMO_IMAGES = ROOT / "data" / "sample" / "galaxies"
DEMO_LABELS = ROOT / "data" / "sample" / "galaxy_labels.csv"


def set_settings(cfg: dict) -> dict:
    """SETS' entry for --SET; a UserError naming the choices for any other."""
    if cfg["SET"] not in SETS:
        raise UserError(f"--SET={cfg['SET']}: choose one of {', '.join(SETS)}")
    return SETS[cfg["SET"]]


def prepare(cfg: dict, out: Path):
    """(image folder, labels CSV) of the chosen set."""
    if cfg["SET"] == "demo":
        return DEMO_IMAGES, DEMO_LABELS
    prep = prepare_mirabest if cfg["SET"] == "mirabest" else prepare_galaxyzoo
    data = prep(cfg, out / "data")
    return data / "images", data / "labels.csv"


def labelled(images: Path, labels_csv: Path, merge: str):
    """(file names of the labelled images, their classes as strings), in file-name order."""
    files = sorted(p.name for p in images.iterdir())
    rows, classes = match_labels(read_labels(labels_csv, merge=merge), files, str(labels_csv))
    return [files[i] for i in rows], np.asarray([str(c) for c in classes])


@torch.no_grad()
def feature_sets(model, images: Path, names: list, workers: int, teacher: bool = False) -> dict:
    """The vectors a search could use, for every image: "pool" (the backbone's pooled output,
    what model.embed gives), "l3+l4" (layer3 and layer4 each average-pooled and L2-normalised,
    side by side) and, for models with one, "proj" (the projection head's output) and, when
    `teacher` is asked for, "teacher" (the momentum target's backbone, pooled: what DINO's authors
    evaluate, sec. 5.1 and fig. 6; a second forward pass, so only on request)."""
    loader = DataLoader(eval_dataset(model, images, names), batch_size=256, num_workers=workers,
                        collate_fn=collate_readable)
    net, out = model.backbone, {"pool": [], "l3+l4": [], "proj": [], "teacher": []}
    head = getattr(model.objective, "projection_head", None)
    target = getattr(model.objective, "backbone_momentum", None) if teacher else None
    model.eval()
    for batch, _ in loader:
        x = net.maxpool(net.relu(net.bn1(net.conv1(batch))))
        l3 = net.layer3(net.layer2(net.layer1(x)))
        l4 = net.layer4(l3)
        pooled = l4.mean(dim=(2, 3))
        out["pool"].append(pooled)
        out["l3+l4"].append(torch.cat([F.normalize(l3.mean(dim=(2, 3)), dim=1), F.normalize(pooled, dim=1)], dim=1))
        if head is not None:
            out["proj"].append(head(pooled))
        if target is not None:
            out["teacher"].append(target(batch))
    return {kind: F.normalize(torch.cat(parts), dim=1).numpy() for kind, parts in out.items() if parts}


def score(name: str, seed: int, features: dict, classes, names, cfg) -> list:
    rows = []
    chosen = {name: v for name, v in features.items() if name in cfg["FEATURES"].split(",") + ["pixels"]}
    for (feature, vectors), kind in itertools.product(chosen.items(), cfg["POSTPROCESS"].split(",")):
        v = postprocess.fit(vectors, kind).apply(vectors)
        # As SSL_Probe.py: searches on the post-processed vectors, the linear probe on the vectors as they are.
        cv = cross_validate(v, classes, 5, cfg["KNN_K"], [cfg["FEW_SHOT"]], 1.0, 2000, seed, linear_vectors=vectors)
        row = {"row": name, "seed": seed, "feature": feature, "post": kind,
               "precision@10": precision_at_k(v, classes, cfg["PRECISION_K"]),
               "knn": float(np.mean(cv["knn_accuracy"])), "linear": float(np.mean(cv["linear_accuracy"])),
               "knn_5shot": float(np.mean(cv["few_shot"][cfg["FEW_SHOT"]]["knn"]))}
        if cfg["SET"] == "demo":
            query = names.index(DEMO_QUERY)
            best, _ = top_k(v, v[query], 10, exclude=[query])
            row["demo_edge_on"] = int(sum(classes[i] == EDGE_ON for i in best))
        rows.append(row)
    return rows


def knn_by_epoch(run: Path) -> str:
    """The kNN monitor's accuracies in a run's training log, epoch by epoch."""
    metrics = pd.concat(pd.read_csv(f) for f in sorted(run.glob("logs/version_*/metrics.csv")))
    return " ".join(f"{a:.3f}" for a in metrics["val_knn_accuracy"].dropna())


def append(path: Path, rows: list) -> None:
    table = pd.concat([pd.read_csv(path), pd.DataFrame(rows)]) if path.is_file() else pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    print(pd.DataFrame(rows).to_string(index=False), flush=True)


def main(argv):
    cfg = settings(globals(), argv)
    chosen = set_settings(cfg)
    rows = [r.strip() for r in cfg["ROWS"].split(",") if r.strip()]
    for r in rows:
        if r not in ROW_SETTINGS:
            raise UserError(f"--ROWS: unknown row {r!r} ({', '.join(ROW_SETTINGS)})")
    seeds = [int(s) for s in cfg["SEEDS"].split(",")]
    wants_teacher = "teacher" in cfg["FEATURES"].split(",")
    side = cfg.get(chosen["side"], DEMO_SIDE)
    input_size = cfg["INPUT_SIZE"] or chosen["input"]
    if not 0 < input_size <= side:
        raise UserError(f"--INPUT_SIZE={cfg['INPUT_SIZE']}: give 1 to {side} (the stored side), or 0 for the set's")
    out = new_output_dir(Path(cfg["OUT_DIR"]), f"bench_ablation_{cfg['SET']}")
    images, labels_csv = prepare(cfg, out)
    names, classes = labelled(images, labels_csv, chosen["merge"])
    results = out / "results.csv"
    torch.set_num_threads(cfg["NUM_WORKERS"])
    print(f"{cfg['SET']}: {len(names)} labelled images; results: {results}", flush=True)
    architecture = None  # hyperparameters of a trained model, for its random-weights twin
    for name in rows:
        for seed in seeds:
            run_name = f"{name}_s{seed}"
            args = [f"--DATA_DIR={images}", f"--CHECKPOINT_DIR={out / 'runs'}", f"--RUN_NAME={run_name}",
                    "--AUGMENTATION=astro", f"--INPUT_SIZE={input_size}", f"--CACHE_SIZE={side}",
                    f"--SEED={seed}",
                    f"--MAX_EPOCHS={cfg['EPOCHS']}", f"--WARMUP_EPOCHS={min(cfg['WARMUP_EPOCHS'], cfg['EPOCHS'] - 1)}", f"--BATCH_SIZE={cfg['BATCH_SIZE']}",
                    f"--NUM_WORKERS={cfg['NUM_WORKERS']}", *ROW_SETTINGS[name]]
            if cfg["KNN_MONITOR"]:
                args += [f"--LABELS={labels_csv}", f"--MERGE_CLASSES={chosen['merge']}", f"--KNN_K={cfg['KNN_K']}"]
            earlier = Path(cfg["REUSE"]) / "runs" / run_name / "best.ckpt"
            start = time.perf_counter()
            if cfg["REUSE"] and earlier.is_file():
                checkpoint = earlier
            else:
                subprocess.run([sys.executable, str(ROOT / "SSL_Train.py"), *args], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL)
                checkpoint = out / "runs" / run_name / "best.ckpt"
            minutes = (time.perf_counter() - start) / 60
            if cfg["KNN_MONITOR"]:
                print(f"{run_name}: validation kNN accuracy after each epoch: {knn_by_epoch(checkpoint.parent)}", flush=True)
            model = load_model(checkpoint)
            architecture = dict(model.hparams)
            features = feature_sets(model, images, names, cfg["NUM_WORKERS"], teacher=wants_teacher)
            append(results, [{**r, "train_min": round(minutes, 1)}
                             for r in score(name, seed, features, classes, names, cfg)])
    if cfg["RANDOM_BASELINE"]:
        for seed in seeds:
            torch.manual_seed(seed)
            features = feature_sets(SSLModel(**architecture), images, names, cfg["NUM_WORKERS"], teacher=wants_teacher)
            append(results, score("random_weights", seed, features, classes, names, cfg))
            pixels = raw_pixel_embeddings(images, names, architecture["in_channels"], 32, 128, seed)
            append(results, score("raw_pixels", seed, {"pixels": pixels}, classes, names, cfg))
    table = pd.read_csv(results)
    metrics = [c for c in ("precision@10", "knn", "linear", "knn_5shot", "demo_edge_on") if c in table]
    summary = table.groupby(["row", "feature", "post"], sort=False)[metrics].agg(["mean", "std"])
    print("\n" + summary.round(3).to_string())


if __name__ == "__main__":
    run_main(main)
