"""What the labels allow at the resolution the self-supervised runs see: the same network trained
*with* the labels, scored on held-out images by its accuracy and by kNN on its features. The upper
reference for bench/ablation.py's scores: if a supervised network at 48 px cannot tell the classes
apart, no self-supervised recipe at 48 px will.

Usage (from the repository root, with ../shared beside it):
    .venv/bin/python bench/supervised_ceiling.py --SET=galaxyzoo --SEEDS=1,2
    .venv/bin/python bench/supervised_ceiling.py --SET=galaxyzoo --FOLDER=checkpoints/bench_ablation_galaxyzoo-<time>

Each seed draws its own stratified split (TEST_FRACTION held out) and initialisation, trains a
randomly initialised BACKBONE with cross-entropy on the rest (quarter turns and mirrorings, the
`astro` preset's geometry), and reports on the held-out images: accuracy, and kNN accuracy
(k = KNN_K, cosine) of the pooled features against the training images' (what a search on
label-trained features would give). Images are the set's copies as bench/ablation.py prepares
them (or those in FOLDER), each resized once to the set's input size (bilinear, antialiased:
images.resize_unit; the search's EvalTransform resizes the picture with PIL, nearly the same).
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ablation import labelled, prepare, set_settings  # noqa: E402
from spacessl.view import normalize_stored  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.images import as_tensor, read_image, resize_unit  # noqa: E402
from spacessl.model import build_backbone  # noqa: E402
from spacessl.runs import new_output_dir  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
SET = "galaxyzoo"                # galaxyzoo | mirabest | demo (as bench/ablation.py)
FOLDER = ""                      # an earlier bench/ablation.py folder whose data/ to use; "" = prepare the set anew
SEEDS = "1,2"                    # one split and initialisation per seed, comma-separated
TEST_FRACTION = 0.2              # share of the labelled images held out, stratified by class
BACKBONE = "resnet18"            # as the self-supervised runs
INPUT_SIZE = 0                   # px the network sees; 0 = the set's in bench/ablation.py (galaxyzoo 48)
EPOCHS = 15                      # passes over the training images
BATCH_SIZE = 128                 # images per step
LR = 1e-3                        # AdamW peak rate, cosine decay to 0
WEIGHT_DECAY = 0.05              # AdamW decay
KNN_K = 20                       # voters for the kNN score, as bench/ablation.py
NUM_THREADS = 2                  # torch CPU threads (this machine has 2 cores)
SHARED = "../shared/data"        # the read-only archive copies
OUT_DIR = "checkpoints"          # the benchmark's run folder goes here (when preparing the set anew)
GALAXY_CROP = 256                # galaxyzoo copies: px kept from the centre (as bench/ablation.py)
GALAXY_STORED = 64               # galaxyzoo copies: px side
MIRABEST_STORED = 80             # mirabest copies: px side
# -----------------------------------------------------------------------------------------------


def load(images: Path, names: list, size: int) -> torch.Tensor:
    """All images as one normalised float tensor at size x size px (the network's input)."""
    resized = torch.stack([resize_unit(as_tensor(read_image(images / n, 3)), size) for n in names])
    return normalize_stored(resized.clamp(0, 1), 3)


def quarter_turns(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image turned by a random multiple of 90 degrees and mirrored with probability 1/2."""
    turns = torch.randint(0, 4, (len(batch),), generator=generator)
    flips = torch.rand(len(batch), generator=generator) < 0.5
    out = torch.stack([torch.rot90(x, int(t), dims=(1, 2)) for x, t in zip(batch, turns)])
    out[flips] = out[flips].flip(-1)
    return out


@torch.no_grad()
def pooled(net, x: torch.Tensor, batch: int) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])


def one_seed(x, y, n_classes: int, seed: int, cfg) -> dict:
    train, test = train_test_split(np.arange(len(y)), test_size=cfg["TEST_FRACTION"], stratify=y, random_state=seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    backbone, width = build_backbone(cfg["BACKBONE"], 3, x.shape[-1], 1)
    head = torch.nn.Linear(width, n_classes)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg["LR"], weight_decay=cfg["WEIGHT_DECAY"])
    steps = cfg["EPOCHS"] * -(-len(train) // cfg["BATCH_SIZE"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    labels = torch.as_tensor(y)
    start = time.perf_counter()
    for epoch in range(cfg["EPOCHS"]):
        backbone.train()
        order = torch.as_tensor(train)[torch.randperm(len(train), generator=generator)]
        for i in range(0, len(order), cfg["BATCH_SIZE"]):
            rows = order[i:i + cfg["BATCH_SIZE"]]
            loss = F.cross_entropy(head(backbone(quarter_turns(x[rows], generator))), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"  seed {seed} epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    raw = pooled(backbone, x, cfg["BATCH_SIZE"])
    with torch.no_grad():
        predicted = head(raw[test]).argmax(1)
    features = F.normalize(raw, dim=1)
    votes = (features[test] @ features[train].T).topk(cfg["KNN_K"], dim=1).indices
    knn = torch.mode(labels[train][votes], dim=1).values
    return {"seed": seed, "accuracy": float((predicted == labels[test]).float().mean()),
            "knn": float((knn == labels[test]).float().mean()),
            "majority": float(np.mean(y[test] == np.bincount(y[train]).argmax())),
            "train_min": round((time.perf_counter() - start) / 60, 1)}


def main(argv):
    cfg = settings(globals(), argv)
    chosen = set_settings(cfg)
    torch.set_num_threads(cfg["NUM_THREADS"])
    if cfg["FOLDER"]:
        data = Path(cfg["FOLDER"]) / "data"
        if not (data / "labels.csv").is_file():
            raise UserError(f"--FOLDER={cfg['FOLDER']}: no data/labels.csv there; give a bench/ablation.py folder "
                            f"of --SET={cfg['SET']}, or leave FOLDER empty to prepare the set")
        images, labels_csv = data / "images", data / "labels.csv"
    else:
        out = None if cfg["SET"] == "demo" else new_output_dir(Path(cfg["OUT_DIR"]), f"bench_ceiling_{cfg['SET']}")
        images, labels_csv = prepare(cfg, out)  # the demo sample is used where it is
    names, classes = labelled(images, labels_csv, chosen["merge"])
    class_names, y = np.unique(classes, return_inverse=True)
    size = cfg["INPUT_SIZE"] or chosen["input"]
    x = load(images, names, size)
    print(f"{cfg['SET']}: {len(names)} labelled images, classes {', '.join(class_names)}, {size} px", flush=True)
    rows = []
    for seed in cfg["SEEDS"].split(","):
        rows.append(one_seed(x, y, len(class_names), int(seed), cfg))
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print(table[["accuracy", "knn", "majority"]].agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    run_main(main)
