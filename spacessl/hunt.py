"""Hunting a rare kind of image: rank the archive from examples marked "yes" and "no" ("more
like these, not like those").

Two scores, each divided by its spread over the archive, summed:
- diffusion: the marks spread over the archive's nearest-neighbour graph (label propagation,
  Zhou et al. 2004, "Learning with local and global consistency"; as diffusion for image
  retrieval, Iscen et al. 2017, "Efficient diffusion on region manifolds", CVPR). Every image
  links to its GRAPH_K nearest (cosine), edges weighted by similarity cubed, and the scores
  solve (I - ALPHA S) f = y, S the symmetrically normalised graph, y +1/|yes| at the yes images
  and -1/|no| at the no ones: a kind that lies along a curved region of the embedding is
  followed from image to image.
- exemplar: a logistic regression of the yes images against the no ones plus BACKGROUND random
  images of the archive (a rare kind is what the bulk is not: the exemplar-SVM idea of
  Malisiewicz et al. 2011), so it has a direction from the first yes on.
Chosen by the simulated hunts of bench/discovery.py (docs/quality.md, "Discovery"): on Galaxy
Zoo it found the most mergers in 100 viewed of every ranking tried, averaged over the trained
networks, random weights and both post-processings (the mean of the yes images; the mean plus a
logistic regression's normal, the ranking until 2026-12-07; a logistic regression or linear SVM
of yes against no; each of the two scores alone), and about as many edge-on discs as the best.

The graph is built once per set of search vectors (exact neighbours up to EXACT_LIMIT images,
else through the run's FAISS index) and cached beside them; a refresh after a mark is a few
sparse products and one small fit (bench/hunt_refresh.py).
"""

import json
import logging
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, diags, identity
from scipy.sparse.linalg import cg
from sklearn.linear_model import LogisticRegression

from .errors import UserError
from .files import atomic_path, fingerprint, write_json
from .progress import progress
from .search import all_nearest, mean_query, top_k

log = logging.getLogger("spacessl")

GRAPH_K = 10        # neighbours each image links to (not tuned; Iscen et al. 2017 use 50 on region descriptors)
WEIGHT_POWER = 3    # edge weight = cosine similarity ** 3 (negative similarities: no edge), Iscen et al.
ALPHA = 0.99        # how far the marks spread (Zhou et al. 2004, Iscen et al. 2017: 0.99)
CG_STEPS = 20       # conjugate-gradient iterations per refresh (Iscen et al. 2017: 20)
GRAPH_CHUNK = 4096  # rows searched at a time when the graph comes from a FAISS index
BACKGROUND = 1000   # random archive images the exemplar classifier takes as negatives (bench/discovery.py's)
BACKGROUND_SEED = 0
CLASSIFIER_C = 1.0  # inverse regularisation strength of the logistic regression (scikit-learn's default)
CLASSIFIER_MAX_ITER = 1000


class Graph:
    """The diffusion operator I - ALPHA S of an archive's nearest-neighbour graph."""

    def __init__(self, rows: np.ndarray, similarities: np.ndarray):
        """rows[i], similarities[i]: the neighbours of image i and their cosine similarities."""
        n, k = rows.shape
        weights = csr_matrix((np.maximum(similarities, 0).ravel() ** WEIGHT_POWER,
                              (np.repeat(np.arange(n), k), rows.ravel())), shape=(n, n))
        weights = weights.maximum(weights.T)  # an edge either way links both images
        degree = np.asarray(weights.sum(axis=1)).ravel()
        scale = diags(1 / np.sqrt(np.maximum(degree, 1e-12)))
        self.operator = (identity(n, format="csr") - ALPHA * (scale @ weights @ scale)).tocsr()

    def diffuse(self, seeds: np.ndarray) -> np.ndarray:
        scores, _ = cg(self.operator, seeds, maxiter=CG_STEPS)
        return scores


def knn_lists(vectors, k: int, index=None):
    """(rows, similarities) of every image's k nearest others: exact, or through a FAISS index
    (its candidates' similarities recomputed from the vectors)."""
    if index is None:
        return all_nearest(vectors, k, desc="hunt graph")
    n = len(vectors)
    rows, sims = np.empty((n, k), dtype=np.int64), np.empty((n, k))
    for start in progress(range(0, n, GRAPH_CHUNK), desc="hunt graph", unit="chunks"):
        block = np.asarray(vectors[start:start + GRAPH_CHUNK], dtype=np.float32)
        _, found = index.search(block, k + 1)
        for i, candidates in enumerate(found):
            own = start + i
            keep = [c for c in candidates if c >= 0 and c != own][:k]
            keep += [own] * (k - len(keep))  # too few found: a self-link adds no edge weight elsewhere
            rows[own] = keep
            sims[own] = np.asarray(vectors[keep], dtype=np.float64) @ block[i]
    return rows, sims


def cached_graph(vectors, cache_dir: Path, source: dict, index=None) -> Graph:
    """The graph of these search vectors (described by `source`), read from cache_dir when it was
    built from them, else built and saved there (graph_k<K>.npz and its .json)."""
    path, meta_path = cache_dir / f"graph_k{GRAPH_K}.npz", cache_dir / f"graph_k{GRAPH_K}.json"
    wanted = {"source": source, "k": GRAPH_K}
    try:
        meta = json.loads(meta_path.read_text())
        if meta["settings"] == wanted and meta["file"] == fingerprint(path):
            with np.load(path) as saved:
                return Graph(saved["rows"], saved["similarities"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("hunt graph in %s is damaged (%s): building it again", cache_dir, err)
    meta_path.unlink(missing_ok=True)
    k = min(GRAPH_K, len(vectors) - 1)
    if k < 1:
        raise UserError("a hunt needs at least two embedded images")
    log.info("hunt graph: linking each of %d images to its %d nearest (once; cached in %s)", len(vectors), k, cache_dir)
    rows, similarities = knn_lists(vectors, k, index)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, rows=rows.astype(np.int64), similarities=similarities.astype(np.float32))
    write_json(meta_path, {"settings": wanted, "file": fingerprint(path)})
    return Graph(rows, similarities)


def seeds(vectors, marks: list) -> np.ndarray:
    """The diffusion's start, one value per archive image, summing to 1: each mark is a row of the
    archive, or the search vector of an image outside it, which starts from its GRAPH_K nearest
    rows weighted by similarity cubed (the query of Iscen et al. 2017)."""
    y = np.zeros(len(vectors))
    for mark in marks:
        if isinstance(mark, (int, np.integer)):
            y[mark] += 1
            continue
        rows, distances = top_k(vectors, np.asarray(mark, dtype=np.float64), min(GRAPH_K, len(vectors)))
        weights = np.maximum(1 - distances, 0) ** WEIGHT_POWER
        y[rows] += weights / max(weights.sum(), 1e-12)
    return y / max(len(marks), 1)


def exemplar_scores(vectors, yes: list, no: list, background: int = BACKGROUND, seed: int = BACKGROUND_SEED) -> np.ndarray:
    """A score per archive image from a logistic regression (balanced classes) of the yes images
    against the no ones plus `background` random archive images (drawn with `seed`) not marked yes."""
    n = len(vectors)
    background = np.random.default_rng(seed).choice(n, min(background, n), replace=False)
    yes_rows = {m for m in yes if isinstance(m, (int, np.integer))}
    negatives = sorted(set(background.tolist()) - yes_rows)
    x = np.concatenate([marked_vectors(vectors, yes), marked_vectors(vectors, no),
                        np.asarray(vectors[negatives], dtype=np.float64)])
    labels = np.r_[np.ones(len(yes)), np.zeros(len(x) - len(yes))]
    model = LogisticRegression(C=CLASSIFIER_C, class_weight="balanced", max_iter=CLASSIFIER_MAX_ITER).fit(x, labels)
    return np.asarray(vectors @ model.coef_[0].astype(vectors.dtype), dtype=np.float64)


def marked_vectors(vectors, marks: list) -> np.ndarray:
    """The search vectors of marks (rows of the archive, or vectors of images outside it)."""
    rows = [np.asarray(vectors[m] if isinstance(m, (int, np.integer)) else m, dtype=np.float64) for m in marks]
    return np.stack(rows) if rows else np.empty((0, vectors.shape[1]))


def spread(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their standard deviation over the archive, so two can be summed."""
    return scores / max(float(np.std(scores)), 1e-12)


def hunt_scores(vectors, graph: Graph, yes: list, no: list):
    """(a score per archive image, higher first; how it was made) from the images marked yes and
    no, each a row of the archive or the search vector of an image outside it. The marked rows'
    own scores mean nothing: leave them out of what is shown."""
    if not len(yes):
        raise UserError("mark at least one image as 'yes' (like the event you hunt) before ranking")
    diffusion = graph.diffuse(seeds(vectors, list(yes)) - seeds(vectors, list(no)))
    scores = spread(diffusion) + spread(exemplar_scores(vectors, list(yes), list(no)))
    how = f"diffusion + exemplar classifier from {len(yes)} yes" + (f" / {len(no)} no" if len(no) else "")
    return scores, how


def top_scored(scores: np.ndarray, k: int, exclude=()) -> np.ndarray:
    """Rows of the k highest scores, `exclude` left out, ties by row."""
    candidates = np.setdiff1d(np.arange(len(scores)), np.asarray(list(exclude), dtype=np.int64))
    k = min(k, len(candidates))
    if k == 0:
        return candidates[:0]
    best = candidates[np.argpartition(-scores[candidates], k - 1)[:k]] if k < len(candidates) else candidates
    kth = scores[best].min()
    tied = candidates[scores[candidates] >= kth]  # every row tied with the k-th is sorted before the cut
    return tied[np.lexsort((tied, -scores[tied]))][:k]


def query_vector(vectors) -> np.ndarray:
    """The search direction of one or more query images (the normalised mean of their vectors):
    a plain query, no marks."""
    return mean_query(np.asarray(vectors))
