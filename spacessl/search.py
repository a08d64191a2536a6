"""Exact top-k search by cosine distance over L2-normalised embeddings."""

import numpy as np
import pandas as pd

from .errors import UserError
from .progress import progress


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
    excluded = sorted(set(exclude))
    rows, similarities = nearest_rows(embeddings, np.asarray(query)[None], k + len(excluded))
    keep = ~np.isin(rows[0], excluded)
    return rows[0][keep][:k], 1.0 - similarities[0][keep][:k]


ALL_PAIRS_CHUNK = 1024  # query rows per block of the similarity matrix (memory: chunk x BANK_CHUNK floats)
BANK_CHUNK = 65536      # bank rows read at a time (a memory-mapped bank larger than RAM is streamed)


def best_of(similarity: np.ndarray, index: np.ndarray, k: int):
    """The k best columns of each row of `similarity` (largest first, ties by smaller `index`),
    exactly: every column tied with a row's k-th best is sorted before the cut."""
    k = min(k, similarity.shape[1])
    if k == 0:
        return index[:, :0], similarity[:, :0]
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1:k]
    rows, sims = np.empty((len(similarity), k), dtype=np.int64), np.empty((len(similarity), k))
    for r in range(len(similarity)):
        candidates = np.flatnonzero(similarity[r] >= kth[r])
        order = np.lexsort((index[r, candidates], -similarity[r, candidates]))[:k]
        rows[r], sims[r] = index[r, candidates[order]], similarity[r, candidates[order]]
    return rows, sims


def nearest_rows(bank: np.ndarray, queries: np.ndarray, k: int, self_offset=None, desc: str = ""):
    """For each query row, the indices and cosine similarities of its k nearest rows of `bank`
    (k capped at what there is), nearest first, ties by index. With self_offset=s, query i is row
    s + i of the bank and never its own neighbour. Exact; the one brute-force search that exact
    top-k, all-pairs neighbours, kNN votes and index recall checks all use. Blocked over queries
    and bank rows, so a memory-mapped bank is streamed: O(ALL_PAIRS_CHUNK x BANK_CHUNK) memory.
    With `desc`, a progress bar of that name on a terminal (progress.py)."""
    n = len(bank)
    k = min(k, n - (self_offset is not None))
    indices = np.empty((len(queries), k), dtype=np.int64)
    similarities = np.empty((len(queries), k), dtype=np.float64)
    blocks = range(0, len(queries), ALL_PAIRS_CHUNK)
    for start in progress(blocks, desc=desc, unit="blocks") if desc else blocks:
        stop = min(start + ALL_PAIRS_CHUNK, len(queries))
        block = np.asarray(queries[start:stop], dtype=np.float32)
        best_idx, best_sim = np.empty((stop - start, 0), dtype=np.int64), np.empty((stop - start, 0))
        for first in range(0, n, BANK_CHUNK):
            chunk = np.asarray(bank[first:first + BANK_CHUNK], dtype=np.float32)
            sims = np.asarray(block @ chunk.T, dtype=np.float64)
            if self_offset is not None:
                own = np.arange(start, stop) + self_offset - first
                inside = (own >= 0) & (own < len(chunk))
                sims[np.flatnonzero(inside), own[inside]] = -np.inf
            index = np.broadcast_to(np.arange(first, first + len(chunk)), sims.shape)
            best_idx, best_sim = best_of(np.concatenate([best_sim, sims], axis=1),
                                         np.concatenate([best_idx, index], axis=1), k)
        indices[start:stop], similarities[start:stop] = best_idx, best_sim
    return indices, similarities


def all_nearest(vectors: np.ndarray, k: int, desc: str = ""):
    """For every row, the indices and cosine similarities of its k nearest other rows, nearest
    first (ties by index). Exact, in blocks of rows: O(n^2) time; `desc` names its progress bar."""
    return nearest_rows(vectors, vectors, k, self_offset=0, desc=desc)


def score_images(vectors, k: int):
    """(score, nearest neighbour index, its distance) per image; score = distance to the k-th."""
    nearest, similarity = all_nearest(vectors, k, desc="nearest neighbours")
    return 1 - similarity[:, -1], nearest[:, 0], 1 - similarity[:, 0]


def anomaly_table(vectors: np.ndarray, names: list, k: int) -> pd.DataFrame:
    """Every image ranked by how unusual it is: score = cosine distance to its k-th nearest other
    image (SSL_Anomalies.py), with its nearest image and that distance; ties by file name."""
    score, nearest, distance = score_images(vectors, k)
    table = pd.DataFrame({"filename": names, "score": score.round(6), "nearest": [names[i] for i in nearest],
                          "nearest_distance": distance.round(6)})
    table = table.sort_values(["score", "filename"], ascending=[False, True], ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table
