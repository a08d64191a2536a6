"""Exact top-k search by cosine distance over L2-normalised embeddings."""

import numpy as np

from .config import UserError


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


ALL_PAIRS_CHUNK = 1024  # query rows per block of the similarity matrix (memory: chunk x n floats)


def nearest_rows(bank: np.ndarray, queries: np.ndarray, k: int, self_offset=None):
    """For each query row, the indices and cosine similarities of its k nearest rows of `bank`,
    nearest first (ties by index). With self_offset=s, query i is row s + i of the bank and never
    its own neighbour. Exact, in blocks of queries: O(chunk x n) memory."""
    n = len(bank)
    k = min(k, n - (self_offset is not None))
    indices = np.empty((len(queries), k), dtype=np.int64)
    similarities = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), ALL_PAIRS_CHUNK):
        stop = min(start + ALL_PAIRS_CHUNK, len(queries))
        block = np.asarray(queries[start:stop] @ bank.T, dtype=np.float64)
        if self_offset is not None:
            block[np.arange(stop - start), np.arange(start, stop) + self_offset] = -np.inf
        best = np.argpartition(-block, k - 1, axis=1)[:, :k]
        best_sim = np.take_along_axis(block, best, axis=1)
        order = np.lexsort((best, -best_sim), axis=1)
        indices[start:stop] = np.take_along_axis(best, order, axis=1)
        similarities[start:stop] = np.take_along_axis(best_sim, order, axis=1)
    return indices, similarities


def all_nearest(vectors: np.ndarray, k: int):
    """For every row, the indices and cosine similarities of its k nearest other rows, nearest
    first (ties by index). Exact, in blocks of rows: O(n^2) time, O(chunk x n) memory."""
    return nearest_rows(vectors, vectors, k, self_offset=0)
