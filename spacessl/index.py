"""Nearest-neighbour search at scale with FAISS (Johnson, Douze & Jégou 2019, arXiv:1702.08734).

Above EXACT_LIMIT images (below it, queries.neighbours searches exactly): an inverted-file index
(IndexIVFFlat, or IndexIVFScalarQuantizer with 8-bit codes when memory matters) that searches
only the `nprobe` nearest of `nlist` k-means cells, on inner products (= cosine similarity on unit
vectors). Its recall@10 against exact search is measured on sample queries whenever it is built,
and nprobe is tuned there to reach a recall target.
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

from .config import atomic_path, fingerprint, write_json
from .search import nearest_rows

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


def recall_at_k(index, vectors, k: int, n_queries: int, seed: int) -> float:
    """Mean share of the exact k nearest other rows that the index returns, over a seeded sample
    of rows as queries (each query's own row left out of both lists, as if it were held out)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False))
    queries = np.asarray(vectors[rows], dtype=np.float32)
    _, approx = index.search(queries, k + 1)
    exact, _ = nearest_rows(vectors, queries, k + 1)
    shares = [len(set([a for a in got if a != row][:k]) & set([e for e in want if e != row][:k])) / k
              for row, got, want in zip(rows, approx, exact)]
    return float(np.mean(shares))


def tune_nprobe(index, vectors, nlist: int, target: float, seed: int):
    """(nprobe, recall@10): the fewest cells to probe whose measured recall reaches `target`
    (doubling, then bisecting between the last two); all nlist cells and the recall they give
    when even that falls short (8-bit codes round distances)."""
    def recall(nprobe):
        index.nprobe = nprobe
        return recall_at_k(index, vectors, RECALL_K, RECALL_QUERIES, seed)
    low, high = 0, 1
    measured = {1: recall(1)}
    while measured[high] < target and high < nlist:
        low, high = high, min(2 * high, nlist)
        measured[high] = recall(high)
    while high - low > 1 and measured[high] >= target:
        middle = (low + high) // 2
        measured[middle] = recall(middle)
        low, high = (middle, high) if measured[middle] < target else (low, middle)
    index.nprobe = high
    return high, measured[high]


def build_index(vectors, nlist: int, nprobe: int, encoding: str, seed: int, recall_target: float = 0.95):
    """(FAISS IVF index, description). `vectors`: (n, d) float32 unit rows, e.g. a np.load memmap.
    nprobe 0: tuned to the fewest cells that reach recall_target on the vectors' own rows.
    (Whether to search exactly or with an index is decided once, in queries.neighbours.)"""
    n, dim = vectors.shape
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
    for start in range(0, n, ADD_CHUNK):
        index.add(np.asarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))
    info = {"type": f"ivf-{encoding}", "nlist": nlist, "recall_target": recall_target}
    tuned = not nprobe
    if nprobe:
        index.nprobe = nprobe
        info["recall_at_10"] = recall_at_k(index, vectors, RECALL_K, RECALL_QUERIES, seed)
    else:
        nprobe, info["recall_at_10"] = tune_nprobe(index, vectors, nlist, recall_target, seed)
    info["nprobe"] = nprobe
    log.info("IVF index over %d vectors: recall@%d %.3f against exact search (nprobe %d of %d cells%s)",
             n, RECALL_K, info["recall_at_10"], nprobe, nlist, ", tuned" if tuned else "")
    if info["recall_at_10"] < recall_target:
        log.warning("the index's recall@%d is %.3f, below the target %.2f: %s", RECALL_K, info["recall_at_10"],
                    recall_target, "raise --NPROBE or set --NPROBE=0 to tune it" if nprobe != nlist else
                    "even every cell probed falls short (8-bit codes?); use --INDEX_ENCODING=flat "
                    "or a larger --EXACT_LIMIT")
    return index, {**info, "n": n, "dim": dim}


def cached_index(vectors, cache_dir: Path, source: dict, nlist: int, nprobe: int, encoding: str, seed: int,
                 recall_target: float = 0.95):
    """The index for the embeddings in cache_dir (described by `source`, their meta.json), loaded
    if it was completely built from them with these settings, else built and saved."""
    settings = {"source": source, "nlist": nlist, "nprobe": nprobe, "encoding": encoding, "seed": seed,
                "recall_target": recall_target}
    meta_path, index_path = cache_dir / "index.json", cache_dir / "index.faiss"
    try:
        meta = json.loads(meta_path.read_text())
        if meta["settings"] == settings and meta["file"] == fingerprint(index_path):
            index = faiss.read_index(str(index_path))
            if hasattr(index, "nprobe"):
                index.nprobe = meta["info"]["nprobe"]
            log.info("reusing %s index in %s (recall@10 %.3f when built)", meta["info"]["type"], index_path,
                     meta["info"]["recall_at_10"])
            return index, meta["info"]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # faiss raises RuntimeError
        log.warning("search index in %s is damaged (%s): building it again", cache_dir, str(err).splitlines()[0])
    meta_path.unlink(missing_ok=True)  # whatever follows, the old index no longer describes these embeddings
    index, info = build_index(vectors, nlist, nprobe, encoding, seed, recall_target)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(meta_path, {"settings": settings, "info": info, "file": fingerprint(index_path)})
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
