"""Nearest-neighbour search at scale with FAISS (Johnson, Douze & Jégou 2019, arXiv:1702.08734).

Up to `exact_limit` vectors: an exact inner-product index (IndexFlatIP; on unit vectors, inner
product = cosine similarity). Beyond: an inverted-file index (IndexIVFFlat, or IndexIVFScalarQuantizer
with 8-bit codes when memory matters) that searches only the `nprobe` nearest of `nlist` k-means
cells. Its recall@10 against exact search is measured on sample queries whenever it is built.
Vectors are read in chunks, so a memory-mapped .npy larger than RAM can be indexed.

An index on disk is trusted only if its index.json (written last) matches the embeddings it was
built from; anything else (an interrupted build, newer embeddings) is rebuilt.
"""

import json
import logging
import math
from pathlib import Path

import faiss
import numpy as np

from .config import atomic_path, write_json

log = logging.getLogger("spacessl")

ADD_CHUNK = 65536         # vectors read from disk and added at a time
TRAIN_PER_CELL = 39       # k-means training points per IVF cell (FAISS warns below 39)
MAX_TRAIN = 262144        # at most this many training points, whatever the data size
RECALL_QUERIES = 200      # sample queries for the recall@10 measurement
RECALL_K = 10
CELLS_PER_SQRT_N = 4      # nlist = 4 sqrt(n), the usual FAISS guideline (4..16 sqrt(n))
ENCODINGS = ("flat", "sq8")


def auto_nlist(n: int) -> int:
    return max(1, int(CELLS_PER_SQRT_N * math.sqrt(n)))


def exact_knn(vectors, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k largest inner products for each query, by brute force in chunks."""
    best_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_idx = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.asarray(vectors[start:start + ADD_CHUNK], dtype=np.float32)
        sims = queries @ chunk.T
        merged_sim = np.concatenate([best_sim, sims], axis=1)
        merged_idx = np.concatenate([best_idx, np.arange(start, start + len(chunk))[None].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-merged_sim, k - 1, axis=1)[:, :k]
        best_sim = np.take_along_axis(merged_sim, top, axis=1)
        best_idx = np.take_along_axis(merged_idx, top, axis=1)
    return best_idx


def recall_at_k(index, vectors, k: int, n_queries: int, seed: int) -> float:
    """Mean share of the exact top-k that the index returns, over sample rows as queries."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False))
    queries = np.asarray(vectors[rows], dtype=np.float32)
    _, approx = index.search(queries, k)
    exact = exact_knn(vectors, queries, k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def build_index(vectors, exact_limit: int, nlist: int, nprobe: int, encoding: str, seed: int):
    """(FAISS index, description). `vectors`: (n, d) float32 unit rows, e.g. a np.load memmap."""
    n, dim = vectors.shape
    if n <= exact_limit:
        index, info = faiss.IndexFlatIP(dim), {"type": "exact", "recall_at_10": 1.0}
    else:
        nlist = nlist or auto_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        if encoding == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, max(nlist * TRAIN_PER_CELL, 1), MAX_TRAIN), replace=False))
        log.info("training IVF index: %d cells on %d of %d vectors", nlist, len(sample), n)
        index.train(np.asarray(vectors[sample], dtype=np.float32))
        index.nprobe = nprobe
        info = {"type": f"ivf-{encoding}", "nlist": nlist, "nprobe": nprobe}
    for start in range(0, n, ADD_CHUNK):
        index.add(np.asarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))
    if info["type"] != "exact":
        info["recall_at_10"] = recall_at_k(index, vectors, RECALL_K, RECALL_QUERIES, seed)
        log.info("IVF index over %d vectors: recall@%d %.3f against exact search (nprobe %d of %d cells)",
                 n, RECALL_K, info["recall_at_10"], nprobe, nlist)
    return index, {**info, "n": n, "dim": dim}


def cached_index(vectors, cache_dir: Path, source: dict, exact_limit: int, nlist: int, nprobe: int,
                 encoding: str, seed: int):
    """The index for the embeddings in cache_dir (described by `source`, their meta.json), loaded
    if it was completely built from them with these settings, else built and saved."""
    settings = {"source": source, "exact_limit": exact_limit, "nlist": nlist, "encoding": encoding, "seed": seed}
    meta_path, index_path = cache_dir / "index.json", cache_dir / "index.faiss"
    if meta_path.is_file() and index_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            index = faiss.read_index(str(index_path))
            if hasattr(index, "nprobe"):
                index.nprobe = nprobe
            log.info("reusing %s index in %s (recall@10 %.3f when built)", meta["info"]["type"], index_path,
                     meta["info"]["recall_at_10"])
            return index, meta["info"]
    if meta_path.is_file():
        meta_path.unlink()  # whatever follows, the old index no longer describes these embeddings
    index, info = build_index(vectors, exact_limit, nlist, nprobe, encoding, seed)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(meta_path, {"settings": settings, "info": info})
    return index, info


def on_gpus_if_available(index):
    """The index copied to all GPUs when FAISS was installed with GPU support (faiss-gpu)."""
    if hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def search(index, query: np.ndarray, k: int, exclude=()):
    """(indices, cosine distances) of the k best rows for one unit query, `exclude` left out."""
    excluded = set(exclude)
    similarity, rows = index.search(np.asarray(query, dtype=np.float32)[None], k + len(excluded))
    keep = [(r, s) for r, s in zip(rows[0], similarity[0]) if r >= 0 and r not in excluded][:k]
    return np.array([r for r, _ in keep], dtype=np.int64), np.array([1.0 - s for _, s in keep])
