"""The probe of SSL_Probe.py: how well a run's embeddings (and the baselines beside them) separate
labelled classes, cross-validated, and its tables and figures.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no GUI backend
from sklearn.metrics import ConfusionMatrixDisplay

from .files import atomic_path, write_json
from .metrics import cross_validate, mean_std, precision_at_k, precision_per_class

PANEL_INCHES = 5  # size of each saved figure
DPI = 100

log = logging.getLogger("spacessl")


def score_methods(methods: dict, search: dict, classes, *, folds: int, knn_k: int, shots: list, logreg_c: float,
                  logreg_max_iter: int, seed: int, precision_k: int):
    """(summary table, few-shot table, scores per method) for each method's embeddings: kNN and
    few-shot on its search vectors (search[name]), the linear probe on methods[name] as they are."""
    summary, few_shot, scores = [], [], {}
    for name, features in methods.items():
        log.info("scoring %s (%d x %d)", name, *features.shape)
        scores[name] = cross_validate(search[name], classes, folds, knn_k, shots, logreg_c, logreg_max_iter, seed,
                                      linear_vectors=features)
        summary.append(summarise(name, scores[name], precision_at_k(search[name], classes, precision_k),
                                 precision_per_class(search[name], classes, precision_k)))
        few_shot += few_shot_rows(name, scores[name])
    return pd.DataFrame(summary), pd.DataFrame(few_shot), scores


def write_probe(out_dir: Path, trained: str, summary, few_shot, scores: dict, classes, counts, *, precision_k: int,
                knn_k: int) -> None:
    """results.json, summary.csv, few_shot.csv, confusion_matrix.png (the trained model's linear
    probe) and few_shot.png."""
    write_json(out_dir / "results.json", {
        "n_labelled": len(classes), "class_counts": {str(c): int(n) for c, n in counts.items()},
        "folds": scores[trained]["folds"], "majority_class_accuracy": float(counts.iloc[0] / counts.sum()),
        "precision_k": precision_k, "knn_k": knn_k,
        "summary": summary.to_dict("records"), "few_shot": few_shot.to_dict("records")})
    for table, name in ((summary, "summary.csv"), (few_shot, "few_shot.csv")):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    plot_confusion(classes, scores[trained]["linear_predictions"],
                   f"{trained} linear probe, {scores[trained]['folds']}-fold out-of-fold predictions",
                   out_dir / "confusion_matrix.png")
    plot_few_shot(few_shot, out_dir / "few_shot.png")


def summarise(name: str, scores: dict, precision: float, per_class: dict) -> dict:
    knn, linear = mean_std(scores["knn_accuracy"]), mean_std(scores["linear_accuracy"])
    return {"method": name, "knn_accuracy": knn[0], "knn_accuracy_std": knn[1],
            "linear_accuracy": linear[0], "linear_accuracy_std": linear[1],
            "precision_at_k": precision, "precision_at_k_class_mean": float(np.mean(list(per_class.values()))),
            **{f"precision_at_k_{c}": v for c, v in per_class.items()}}


def few_shot_rows(name: str, scores: dict) -> list:
    rows = []
    for shot, accuracies in scores["few_shot"].items():
        for classifier in ("knn", "linear"):
            mean, std = mean_std(accuracies[classifier])
            rows.append({"method": name, "classifier": classifier,
                         "shots": "all" if shot is None else shot, "accuracy": mean, "accuracy_std": std})
    return rows


def save_figure(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def plot_few_shot(table: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(PANEL_INCHES * 1.4, PANEL_INCHES))
    ax = fig.subplots()
    colours = {method: f"C{i}" for i, method in enumerate(table["method"].unique())}
    for (method, classifier), rows in table.groupby(["method", "classifier"], sort=False):
        ax.errorbar(range(len(rows)), rows["accuracy"], yerr=rows["accuracy_std"], capsize=3,
                    marker="o", linestyle="-" if classifier == "linear" else "--",
                    color=colours[method], label=f"{method} ({classifier})")
        ax.set_xticks(range(len(rows)), rows["shots"].astype(str))
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("accuracy (cross-validated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_confusion(labels, predictions, title: str, path: Path) -> None:
    fig = Figure(figsize=(PANEL_INCHES, PANEL_INCHES))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(labels, predictions, ax=ax, colorbar=False,
                                            xticks_rotation=45)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


