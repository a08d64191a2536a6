"""Exact top-k search by cosine distance over L2-normalised embeddings."""

import numpy as np

from config import UserError


def mean_query(vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of one or more unit query vectors (a query made of several images)."""
    mean = np.asarray(vectors, dtype=np.float64).reshape(-1, vectors.shape[-1]).mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-6:
        raise UserError("the query images' embeddings cancel out (their mean is zero); "
                        "query them one at a time")
    return mean / norm


def top_k(embeddings: np.ndarray, query: np.ndarray, k: int, exclude=()):
    """Indices and cosine distances (1 - cosine similarity) of the k rows nearest to `query`.

    `embeddings` rows and `query` must be unit length. Rows in `exclude` (the query images
    themselves) are never returned. Ties are broken by row index, so results are reproducible.
    """
    similarity = np.asarray(embeddings @ query, dtype=np.float64)
    excluded = np.zeros(len(similarity), dtype=bool)
    excluded[list(exclude)] = True
    candidates = np.flatnonzero(~excluded)
    k = min(k, len(candidates))
    if k == 0:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    # np.partition finds the k-th best similarity in O(n); everything at least that similar is
    # then sorted exactly (by similarity, then index), which keeps tied rows in index order.
    kth = np.partition(similarity[candidates], len(candidates) - k)[len(candidates) - k]
    best = candidates[similarity[candidates] >= kth]
    best = best[np.lexsort((best, -similarity[best]))][:k]
    return best, 1.0 - similarity[best]
