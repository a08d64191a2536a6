"""Measure what a trained run's embeddings are worth, using a labels file only for scoring.

Usage:
    python SSL_Probe.py --RUN=checkpoints/oath_simclr --LABELS=data/oath/classifications/classifications.csv
    python SSL_Probe.py --RUN=checkpoints/demo-... --LABELS=data/sample/galaxy_labels.csv --MERGE_CLASSES=1+2

From the frozen embeddings it reports, stratified k-fold cross-validated (mean ± std over folds):
kNN accuracy (cosine), linear-probe accuracy (logistic regression), a few-shot curve (N labelled
images per class), and similarity-search precision@k, for the trained model and for two
baselines computed in the same run: the same network with random weights, and raw pixels (PCA).
Writes <run>/probe/<labels>-<time>/: results.json, summary.csv, few_shot.csv,
confusion_matrix.png (trained model, linear probe, out-of-fold predictions), few_shot.png and
config.json. OATH's classifications.csv works as is (picNum -> 00042.png, class6 or class2).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from spacessl import postprocess
from spacessl.baselines import random_init_embeddings, raw_pixel_embeddings
from spacessl.config import OPEN_RUN, format_config, keywords, parse_value, run_main, settings
from spacessl.errors import require
from spacessl.labels import match_labels, read_labels
from spacessl.probe import score_methods, write_probe
from spacessl.runs import open_run, result_dir

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results still go to RUN)
LABELS = "data/oath/classifications/classifications.csv"  # CSV with an id and a class column
ID_COLUMN = ""                  # column naming the image (path, file name, stem or number); "" = auto
CLASS_COLUMN = ""               # column with the class; "" = auto (class, label, class6, CLASS, class2)
MERGE_CLASSES = ""              # classes scored as one, "a+b" or "a+b;c+d" (e.g. "1+2": both spiral windings)
DATA_DIR = ""                   # images; "" = the folder the run was trained on
OUTPUT_DIR = ""                 # where results go; "" = inside the run folder, or checkpoints/<run name> here
                                # when the run folder cannot be written (a colleague's run, a read-only mount)
POSTPROCESS = "auto"            # embeddings before cosine search, fitted on this folder's set (spacessl/postprocess.py):
                                # auto (whiten if images >= dimensions, else centre; measured, docs/quality.md, "Retrieval
                                # quality") | whiten (PCA-whitened) | centre | none
FOLDS = 5                       # stratified cross-validation folds, >= 2 (fewer if a class is smaller)
KNN_K = 20                      # neighbours voting in the kNN classifier
PRECISION_K = 10                # neighbours looked at for precision@k
SHOTS = "5,10,25,50,100"        # labelled images per class for the few-shot curve ("all" is always added)
BASELINES = True                # also score random weights and raw pixels
RAW_PIXELS = 32                 # raw-pixel baseline: images resized to this many px a side
RAW_PCA_DIM = 128               # raw-pixel baseline: principal components kept
LOGREG_C = 1.0                  # inverse L2 strength of the logistic-regression probe (scikit-learn's C)
LOGREG_MAX_ITER = 2000          # iterations allowed to the probe's solver
BATCH_SIZE = 256                # images per embedding batch
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
SEED = 0                        # seeds folds, few-shot draws and the random-weights baseline
# -----------------------------------------------------------------------------------------------


def parse_shots(text: str) -> list:
    shots = [parse_value("SHOTS", part.strip(), int) for part in text.split(",") if part.strip()]
    require(all(shot >= 1 for shot in shots), f"--SHOTS={text}: give whole numbers >= 1, comma-separated")
    return sorted(set(shots))


def main(argv):
    cfg = settings(globals(), argv)
    shots = parse_shots(cfg["SHOTS"])
    for name in ("FOLDS", "KNN_K", "PRECISION_K", "RAW_PIXELS", "RAW_PCA_DIM", "LOGREG_MAX_ITER"):
        require(cfg[name] >= (2 if name == "FOLDS" else 1), f"--{name}={cfg[name]}: too small")
    require(cfg["LOGREG_C"] > 0, f"--LOGREG_C={cfg['LOGREG_C']}: must be above 0")
    labels_table = read_labels(cfg["LABELS"], cfg["ID_COLUMN"], cfg["CLASS_COLUMN"], cfg["MERGE_CLASSES"])
    print(format_config(cfg))
    run = open_run(**keywords(cfg, *OPEN_RUN))
    model, data_dir, vectors, names, device, workers = (
        run.model, run.data_dir, run.vectors, run.names, run.device, run.workers)
    rows, classes = match_labels(labels_table, names, cfg["LABELS"])
    labelled = [names[i] for i in rows]
    counts = pd.Series(classes).value_counts()
    print(f"labelled images: {len(labelled)} in {len(counts)} classes "
          f"({', '.join(f'{c}: {n}' for c, n in counts.items())})")

    trained = model.hparams.method  # the row of the trained model is named by its method
    methods = {trained: np.asarray(run.embeddings[rows])}
    if cfg["BASELINES"]:
        methods["random_weights"] = random_init_embeddings(
            dict(model.hparams), data_dir, labelled, cfg["SEED"], cfg["BATCH_SIZE"], workers, device)
        methods["raw_pixels"] = raw_pixel_embeddings(
            data_dir, labelled, model.hparams.in_channels, cfg["RAW_PIXELS"], cfg["RAW_PCA_DIM"], cfg["SEED"],
            model.hparams.stretch)

    # Searches (kNN, precision@k) use the search vectors: the trained model's as SSL_Evaluate.py
    # sees them, the baselines post-processed the same way. The linear probe fits the embeddings
    # as they are: a linear classifier needs no whitening, and whitening's lifted noise
    # directions only give it more to overfit (docs/quality.md, "Retrieval quality").
    search = {trained: vectors[rows]}
    for name in list(methods)[1:]:
        search[name] = postprocess.fit(methods[name], cfg["POSTPROCESS"]).apply(methods[name])

    summary, few_shot, scores = score_methods(methods, search, classes, folds=cfg["FOLDS"], knn_k=cfg["KNN_K"],
                                              shots=shots, logreg_c=cfg["LOGREG_C"],
                                              logreg_max_iter=cfg["LOGREG_MAX_ITER"], seed=cfg["SEED"],
                                              precision_k=cfg["PRECISION_K"])
    majority = float(counts.iloc[0] / counts.sum())
    with result_dir(run, "probe", Path(cfg["LABELS"]).stem, cfg) as out:
        write_probe(out.path, trained, summary, few_shot, scores, classes, counts, precision_k=cfg["PRECISION_K"],
                    knn_k=cfg["KNN_K"])

    shown = pd.DataFrame({
        "method": summary["method"],
        f"kNN acc (k={cfg['KNN_K']})": [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary.knn_accuracy, summary.knn_accuracy_std)],
        "linear acc": [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary.linear_accuracy, summary.linear_accuracy_std)],
        f"precision@{cfg['PRECISION_K']}": summary.precision_at_k.map("{:.3f}".format),
        "class mean": summary.precision_at_k_class_mean.map("{:.3f}".format)})
    per_class = summary.set_index("method")[[f"precision_at_k_{c}" for c in counts.index]]
    per_class.columns = [f"{c} ({n})" for c, n in counts.items()]
    curve = few_shot.assign(score=[f"{m:.3f}" for m in few_shot.accuracy]).pivot_table(
        index=["method", "classifier"], columns="shots", values="score", aggfunc="first", sort=False)
    print(f"\n{scores[trained]['folds']}-fold cross-validated, {len(labelled)} labelled images; "
          f"majority class alone: {majority:.3f}\n{shown.to_string(index=False)}\n\n"
          f"precision@{cfg['PRECISION_K']} per class (images):\n{per_class.round(3).to_string()}\n\n"
          f"few-shot accuracy (labelled images per class):\n{curve.to_string()}\n\nresults: {out.path}")


if __name__ == "__main__":
    run_main(main)
