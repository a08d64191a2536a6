"""How good are frozen embeddings? Measures that use labels only for scoring.

- kNN accuracy: cosine k-nearest-neighbour vote (the monitor of Wu et al. 2018, used by lightly's
  benchmarks) and linear-probe accuracy (logistic regression on standardised features, the
  SimCLR paper's linear evaluation), both stratified k-fold cross-validated;
- a few-shot curve: the same two classifiers trained on N labelled images per class;
- similarity-search precision@k: the share of each image's k nearest neighbours (cosine) that
  share its class, averaged over all labelled images, which is what a user of the search sees;
- without labels, for a time series of frames: the share of frames whose nearest neighbour was
  taken within a few frames of it (consecutive all-sky frames show the same aurora).
"""

import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .errors import UserError
from .search import all_nearest, nearest_rows

log = logging.getLogger("spacessl")

def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean over rows of the fraction of the row's k nearest other rows with the same label.

    Rows must be L2-normalised (inner product = cosine similarity); a row never counts as its
    own neighbour.
    """
    if len(vectors) < 2 or k < 1:
        raise UserError("precision@k needs at least two labelled images and k >= 1")
    nearest, _ = all_nearest(vectors, k)
    return float((labels[nearest] == labels[:, None]).mean())


def precision_per_class(vectors: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """precision@k over the rows of each class alone, class -> score: a rare class is seen on its
    own, where the mean over all rows is ruled by the common ones. Rows must be L2-normalised."""
    if len(vectors) < 2 or k < 1:
        raise UserError("precision@k needs at least two labelled images and k >= 1")
    nearest, _ = all_nearest(vectors, k)
    hits = (labels[nearest] == labels[:, None]).mean(axis=1)
    return {c: float(hits[labels == c].mean()) for c in np.unique(labels)}


def temporal_neighbour_fraction(vectors: np.ndarray, max_gap: int = 1) -> float:
    """Rows are frames in time order: the fraction whose nearest other row (cosine) lies within
    max_gap rows of it, e.g. within +-1 frame. Rows must be L2-normalised."""
    if len(vectors) < 2:
        raise UserError("the temporal neighbour check needs at least two frames")
    nearest, _ = all_nearest(vectors, 1)
    return float((np.abs(nearest[:, 0] - np.arange(len(vectors))) <= max_gap).mean())


def knn_predict(bank, bank_labels, queries, k: int) -> np.ndarray:
    """Cosine kNN vote of the bank's labels (k capped at the bank's size). A tie goes to the tied
    class whose member is nearest, so the answer never depends on how the classes are named or
    numbered (scikit-learn's vote picks the first class in sorted order)."""
    bank_labels = np.asarray(bank_labels)
    nearest, _ = nearest_rows(unit_rows(bank), unit_rows(queries), min(k, len(bank)))
    votes = bank_labels[nearest]
    predicted = []
    for row in votes:
        _, first, counts = np.unique(row, return_index=True, return_counts=True)
        predicted.append(row[first[counts == counts.max()].min()])
    return np.array(predicted, dtype=bank_labels.dtype)


def unit_rows(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.finfo(np.float64).tiny)


def linear_probe(c: float, max_iter: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def knn_accuracy(bank, bank_labels, queries, query_labels, k: int) -> float:
    """Accuracy of a cosine kNN vote of the bank's labels (k capped at the bank's size)."""
    return float(np.mean(knn_predict(bank, bank_labels, queries, k) == query_labels))


def usable_folds(labels: np.ndarray, folds: int) -> int:
    """The requested number of folds, or fewer (with a warning) when a class is too small."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise UserError(f"only one class ({str(classes[0])!r}) among the labelled images: nothing to tell apart")
    smallest = counts.min()
    if smallest < 2:
        raise UserError(f"class {str(classes[counts.argmin()])!r} has only one labelled image; cross-validation "
                        f"needs at least 2 per class: merge it (--MERGE_CLASSES) or remove its rows")
    if smallest < folds:
        log.warning("class %r has only %d labelled images: using %d folds instead of %d",
                    str(classes[counts.argmin()]), smallest, smallest, folds)
    return int(min(folds, smallest))


def per_class_sample(indices: np.ndarray, labels: np.ndarray, shots: int, rng) -> np.ndarray:
    """Up to `shots` random indices of each class (all of a class that has fewer)."""
    chosen = [rng.permutation(indices[labels[indices] == c])[:shots] for c in np.unique(labels[indices])]
    return np.sort(np.concatenate(chosen))


def cross_validate(vectors, labels, folds: int, knn_k: int, shots: list, c: float, max_iter: int,
                   seed: int, linear_vectors=None) -> dict:
    """Per-fold kNN and linear-probe accuracies, out-of-fold linear predictions, and per-fold
    few-shot accuracies for each N in `shots` (None = all training labels of the fold; the kNN
    vote then uses min(knn_k, N) neighbours). kNN votes on `vectors` (the search vectors); the
    linear probe fits `linear_vectors` when given (the embeddings before post-processing)."""
    linear_vectors = vectors if linear_vectors is None else linear_vectors
    shots = [shot for shot in shots if shot is not None] + [None]
    folds = usable_folds(labels, folds)
    rng = np.random.default_rng(seed)
    result = {"folds": folds, "knn_accuracy": [], "linear_accuracy": [],
              "linear_predictions": np.empty_like(labels),
              "few_shot": {shot: {"knn": [], "linear": []} for shot in shots}}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(vectors, labels):
        for shot in shots:
            subset = train if shot is None else per_class_sample(train, labels, shot, rng)
            # With N images per class, more than N voters would outvote every class by the rest.
            k = knn_k if shot is None else min(knn_k, shot)
            knn = knn_accuracy(vectors[subset], labels[subset], vectors[test], labels[test], k)
            probe = linear_probe(c, max_iter).fit(linear_vectors[subset], labels[subset])
            predicted = probe.predict(linear_vectors[test])
            result["few_shot"][shot]["knn"].append(knn)
            result["few_shot"][shot]["linear"].append(float(np.mean(predicted == labels[test])))
            if shot is None:
                result["knn_accuracy"].append(knn)
                result["linear_accuracy"].append(result["few_shot"][shot]["linear"][-1])
                result["linear_predictions"][test] = predicted
    return result


def mean_std(values) -> tuple:
    return float(np.mean(values)), float(np.std(values))
