"""Quality benchmark: train on two real labelled sets on this CPU, then score the embeddings.

Usage (from the repository root, with ../shared beside it; about 45 minutes of training and scoring on 2 CPU cores):
    .venv/bin/python bench/quality.py
    .venv/bin/python bench/quality.py --SETS=mirabest --MIRABEST_EPOCHS=5    # a quick look
    .venv/bin/python bench/quality.py --SETS=mirabest --METHODS=simclr,simsiam,byol,mae --MIRABEST_EPOCHS=40

For each set it makes a resized copy of the images and a labels CSV, runs SSL_Train.py once per
method (labels only feed the kNN monitor), then SSL_Probe.py (the baselines, random weights of
the first method's network and raw pixels, are scored with the first method), and prints one table. Everything goes to checkpoints/bench_quality-<time>/.

- galaxyzoo: ../shared/data/galaxyzoo1_small, 6,664 SDSS cutouts; central 256 px resized to 64 px,
  48 px crops. The clockwise and anticlockwise spiral classes (1, 2) differ only in handedness,
  which the rotation and flip augmentations erase on purpose, so they are scored as one class.
- mirabest: ../shared/data/mirabest_fr, 792 FIRST radio galaxies (FR I vs FR II, from the file
  name prefix 100_/200_), 150 px resized to 80 px, 64 px crops, single channel.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.methods import RECIPES  # noqa: E402
from spacessl.runs import new_output_dir  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
SHARED = "../shared/data"        # the read-only archive copies
SETS = "galaxyzoo,mirabest"      # which data sets to run, comma-separated
METHODS = "auto"                 # self-supervised methods trained on each set, comma-separated: auto (the preset's,
                                 # as SSL_Train.py's default) | simclr | simsiam | byol | nnclr | dino | mae
MAE_BACKBONE = "vit_tiny"        # ViT for mae (the others train SSL_Train.py's default resnet18)
MAE_PATCH_SIZE = 8               # px patches for mae: 48 or 64 px inputs give 36 or 64 patches
OUT_DIR = "checkpoints"          # the benchmark's run folder goes here
GALAXY_CROP = 256                # px kept from the centre of each 423 px SDSS cutout
GALAXY_STORED = 64               # px side of the resized copies
GALAXY_INPUT = 48                # px crops the network sees
GALAXY_EPOCHS = 7                # the default's (dino) 27 min of training here (bench/ablation.py, 2026-12-02)
MIRABEST_STORED = 80             # px side of the resized copies
MIRABEST_INPUT = 64              # px crops the network sees
MIRABEST_EPOCHS = 25             # the default's (simclr) 11 min of training here (bench/ablation.py, 2026-12-02)
GALAXY_RECIPE = "--AUGMENTATION=astro"                        # SSL_Train.py settings for galaxies
MIRABEST_RECIPE = "--AUGMENTATION=radio"   # for radio sources, with its temperature 0.2 (docs/quality.md, "Retrieval quality")
BATCH_SIZE = 128                 # training batch for both sets
WARMUP_EPOCHS = 3                # learning-rate warm-up for both sets
NUM_WORKERS = 2                  # loader processes (this machine has 2 cores)
# -----------------------------------------------------------------------------------------------

GALAXY_MERGE = "1+2"  # clockwise + anticlockwise spirals
MIRABEST_CLASSES = {"100": "FRI", "200": "FRII"}


def prepare_galaxyzoo(cfg: dict, dest: Path) -> Path:
    source = Path(cfg["SHARED"]) / "galaxyzoo1_small" / "smallGZ1"
    labels = pd.read_csv(source / "smallCSV_class.csv")
    (dest / "images").mkdir(parents=True)
    for objid in labels.OBJID:
        with Image.open(source / "Imagenes" / f"{objid}.jpeg") as img:
            left, top = (img.width - cfg["GALAXY_CROP"]) // 2, (img.height - cfg["GALAXY_CROP"]) // 2
            img = img.convert("RGB").crop((left, top, left + cfg["GALAXY_CROP"], top + cfg["GALAXY_CROP"]))
            img.resize((cfg["GALAXY_STORED"],) * 2, Image.Resampling.LANCZOS).save(dest / "images" / f"{objid}.png")
    labels.rename(columns={"OBJID": "id", "CLASS": "class"}).to_csv(dest / "labels.csv", index=False)
    return dest


def prepare_mirabest(cfg: dict, dest: Path) -> Path:
    source = Path(cfg["SHARED"]) / "mirabest_fr" / "PNGs"
    (dest / "images").mkdir(parents=True)
    rows = []
    for path in sorted(source.glob("*.png")):
        with Image.open(path) as img:
            img.resize((cfg["MIRABEST_STORED"],) * 2, Image.Resampling.LANCZOS).save(dest / "images" / path.name)
        rows.append((path.name, MIRABEST_CLASSES[path.name.split("_")[0]]))
    pd.DataFrame(rows, columns=["filename", "class"]).to_csv(dest / "labels.csv", index=False)
    return dest


def run(script: str, args: list) -> float:
    """Run one of the repository's scripts; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, check=True)
    return time.perf_counter() - start


def bench_set(cfg: dict, name: str, method: str, data: Path, out: Path, baselines: bool) -> dict:
    labels = data / "labels.csv"
    galaxy = name == "galaxyzoo"
    run_name = f"{name}_{method}"
    train_args = [f"--DATA_DIR={data / 'images'}", f"--CHECKPOINT_DIR={out / 'runs'}", f"--RUN_NAME={run_name}",
                  f"--METHOD={method}", *cfg["GALAXY_RECIPE" if galaxy else "MIRABEST_RECIPE"].split(),
                  f"--BATCH_SIZE={cfg['BATCH_SIZE']}",
                  f"--WARMUP_EPOCHS={cfg['WARMUP_EPOCHS']}", f"--NUM_WORKERS={cfg['NUM_WORKERS']}",
                  f"--INPUT_SIZE={cfg['GALAXY_INPUT'] if galaxy else cfg['MIRABEST_INPUT']}",
                  f"--MAX_EPOCHS={cfg['GALAXY_EPOCHS'] if galaxy else cfg['MIRABEST_EPOCHS']}"]
    if not galaxy:  # 792 images: the kNN monitor costs little here (on Galaxy Zoo, ~20 s an epoch)
        train_args.append(f"--LABELS={labels}")
    if method == "mae":
        train_args += [f"--BACKBONE={cfg['MAE_BACKBONE']}", f"--PATCH_SIZE={cfg['MAE_PATCH_SIZE']}"]
    train_seconds = run("SSL_Train.py", train_args)
    probe_args = [f"--RUN={out / 'runs' / run_name}", f"--LABELS={labels}", f"--NUM_WORKERS={cfg['NUM_WORKERS']}",
                  f"--BASELINES={baselines}"]
    if galaxy:
        probe_args.append(f"--MERGE_CLASSES={GALAXY_MERGE}")
    probe_seconds = run("SSL_Probe.py", probe_args)
    result_dir = sorted((out / "runs" / run_name / "probe").iterdir())[-1]
    results = json.loads((result_dir / "results.json").read_text())
    config = json.loads((out / "runs" / run_name / "config.json").read_text())
    epochs = config["hyperparameters"]["MAX_EPOCHS"]
    return {"set": name, "method": config["resolved"]["method"], "results": results, "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / epochs, "probe_seconds": probe_seconds,
            "epochs": epochs, "input_size": config["hyperparameters"]["INPUT_SIZE"],
            "n_train": config["resolved"]["n_train"], "probe_dir": str(result_dir)}


def main(argv):
    cfg = settings(globals(), argv)
    out = new_output_dir(Path(cfg["OUT_DIR"]), "bench_quality")
    rows, report = [], []
    methods = [m.strip() for m in cfg["METHODS"].split(",") if m.strip()]
    for method in methods:
        if method not in ("auto", *RECIPES):
            raise UserError(f"--METHODS: unknown method {method!r} (auto, {', '.join(RECIPES)})")
    for name in [s.strip() for s in cfg["SETS"].split(",") if s.strip()]:
        if name not in ("galaxyzoo", "mirabest"):
            raise UserError(f"--SETS: unknown set {name!r} (galaxyzoo, mirabest)")
        data = (prepare_galaxyzoo if name == "galaxyzoo" else prepare_mirabest)(cfg, out / "data" / name)
        for method in methods:
            report.append(bench_set(cfg, name, method, data, out, baselines=method == methods[0]))
            res = report[-1]["results"]
            for row in res["summary"]:
                rows.append({"set": name, "method": row["method"],
                             "kNN acc": f"{row['knn_accuracy']:.3f} ± {row['knn_accuracy_std']:.3f}",
                             "linear acc": f"{row['linear_accuracy']:.3f} ± {row['linear_accuracy_std']:.3f}",
                             f"precision@{res['precision_k']}": f"{row['precision_at_k']:.3f}",
                             "majority class": f"{res['majority_class_accuracy']:.3f}"})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    for bench in report:
        print(f"{bench['set']} {bench['method']}: {bench['n_train']} training images at {bench['input_size']} px, "
              f"{bench['epochs']} epochs, training {bench['train_seconds'] / 60:.1f} min "
              f"({bench['seconds_per_epoch']:.1f} s/epoch), probe {bench['probe_seconds']:.0f} s; "
              f"details: {bench['probe_dir']}")
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    run_main(main)
