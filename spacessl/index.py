"""Nearest-neighbour search at scale with FAISS (Johnson, Douze & Jégou 2019, arXiv:1702.08734).

Above EXACT_LIMIT images (below it, queries.neighbours searches exactly) one of four indexes,
all on inner products (= cosine similarity on unit vectors):
  hnsw      a navigable small-world graph (IndexHNSWFlat; Malkov & Yashunin 2018,
            arXiv:1603.09320): keeps every vector in float32 plus its links (about 2.3 KB per
            512-d vector); one thread per query, and a long search on hard sets
  ivf-flat  an inverted file that searches only the `nprobe` nearest of `nlist` k-means cells
  ivf-sq8   the same with 8-bit codes: 4x less memory, for archives whose vectors do not fit
  ivf-pca   cells and scan in the first PCA_DIM principal components (8-bit), then the best
            REFINE_FACTOR x k candidates re-ranked on 8-bit codes of the whole vectors: a quarter
            of the bytes scanned per vector (Jégou, Douze & Schmid 2011, "Product quantization
            for nearest neighbor search", re-ranking of a coarse search)
`auto` (the default) is ivf-pca: wherever kinds were compared (a million vectors of three
spectra, ten million of one) it answered fastest at recall@10 0.95, in a quarter of HNSW's
memory and a tenth of its build time; where its first re-ranking depth fell short of the target
even with every cell probed (ten million near-isotropic vectors) it re-ranks more
(REFINE_GROWTH). The timings, with their commands: docs/search.md.
Whichever is built, its recall@10 against exact search is measured on sample queries, and its
search effort (IVF: nprobe; HNSW: efSearch) is tuned there to reach a recall target.
Vectors are read in chunks, so a memory-mapped .npy larger than RAM can be indexed.

An index on disk is trusted only if its index.json (written last) matches the embeddings it was
built from and the settings asked for; anything else (an interrupted build, newer embeddings,
another kind or target) is rebuilt.
"""

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from .files import atomic_path, fingerprint, write_json
from .progress import progress
from .search import nearest_rows

log = logging.getLogger("spacessl")

BUILT_KINDS = ("hnsw", "ivf-flat", "ivf-sq8", "ivf-pca")  # what build_index can build
KINDS = ("auto", *BUILT_KINDS)  # what a user may ask for
ADD_CHUNK = 65536         # vectors read from disk and added at a time
TRAIN_PER_CELL = 39       # k-means training points per IVF cell (FAISS warns below 39)
MAX_TRAIN = 262144        # at most this many training points, whatever the data size
RECALL_QUERIES = 200      # sample queries for the recall@10 measurement
RECALL_K = 10
EXACT_LIMIT = 200_000     # up to this many images searches are exact; beyond, an index (the scripts' EXACT_LIMIT)
CELLS_PER_SQRT_N = 4      # nlist = 4 sqrt(n), the usual FAISS guideline (4..16 sqrt(n))
HNSW_M = 32               # HNSW links per vector and level (FAISS's IndexHNSWFlat M; 32 is its usual choice)
HNSW_EF_CONSTRUCTION = 40  # HNSW candidates kept while linking a new vector (FAISS's default)
HNSW_EF_START = 16        # first efSearch tried when tuning (at least RECALL_K + 1, the recall queries' k)
HNSW_EF_MAX = 4096        # efSearch is not raised beyond this; the recall it gives is then said
HNSW_UPPER_LEVELS = 1.1   # HNSW links: 2M per vector on level 0, about 10 % more on the levels above
PCA_DIM = 128             # ivf-pca: principal components its cells are drawn and scanned in (docs/search.md)
REFINE_FACTOR = 32        # ivf-pca: candidates per neighbour asked that are re-ranked on the whole vectors
REFINE_GROWTH = 4         # ivf-pca: where even every cell probed falls short of the target, the candidates re-ranked
                          # are multiplied by this and the cells tuned again (docs/search.md: 10M near-isotropic)
REFINE_FACTOR_MAX = 1024  # ivf-pca: at most this many candidates per neighbour re-ranked
IVF_PARALLEL_MODE = 1     # FAISS threads share one query's probed cells (its default, 0, gives each thread whole
                          # queries: one query, as SSL_Evaluate.py asks, then runs on one core; docs/search.md)


@dataclass(frozen=True)
class IndexSettings:
    """What a user asks of the index (SSL_Evaluate.py's INDEX_KIND, NLIST, NPROBE, RECALL_TARGET).
    nlist, nprobe: IVF only, 0 = chosen (4 sqrt(n) cells; the fewest probed cells reaching the
    target)."""
    kind: str = "auto"
    nlist: int = 0
    nprobe: int = 0
    recall_target: float = 0.95

    def __post_init__(self):
        """Raises ValueError naming the setting (SSL_Evaluate.py's name) and what to give."""
        if self.kind not in KINDS:
            raise ValueError(f"--INDEX_KIND={self.kind}: choose {', '.join(KINDS)}")
        if self.nlist < 0 or self.nprobe < 0:
            raise ValueError("--NLIST and --NPROBE must be >= 0")
        if self.kind == "hnsw" and (self.nlist or self.nprobe):
            raise ValueError("--NLIST and --NPROBE shape an IVF index: leave them 0 with --INDEX_KIND=hnsw "
                             "(its efSearch is tuned to --RECALL_TARGET) or pick --INDEX_KIND=ivf-flat")
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"--RECALL_TARGET={self.recall_target}: must be in (0, 1]")


def auto_nlist(n: int) -> int:
    return max(1, int(CELLS_PER_SQRT_N * math.sqrt(n)))


def index_bytes(kind: str, n: int, dim: int) -> int:
    """Memory of an index's vectors, ids and links (FAISS's layout; the IVF quantizer is small)."""
    if kind == "hnsw":
        return int(4 * n * dim + 4 * n * 2 * HNSW_M * HNSW_UPPER_LEVELS)
    if kind == "ivf-pca":
        return n * (min(PCA_DIM, dim) + dim) + 8 * n
    return n * dim * (4 if kind == "ivf-flat" else 1) + 8 * n


def choose_kind(settings: IndexSettings) -> tuple:
    """(kind, why): `auto` is ivf-pca (the module's docstring says why); another kind as asked."""
    if settings.kind != "auto":
        return settings.kind, "as asked"
    return "ivf-pca", "auto: the fastest at recall 0.95 wherever kinds were compared"


def held_out_truth(vectors, k: int, n_queries: int, seed: int) -> tuple:
    """(rows, queries, exact): a seeded sample of rows as queries and their exact k + 1 nearest
    rows (their own among them). Computed once per build: the exact pass reads every vector, 20 GB
    from disk for 10 million, and tuning measures recall at a dozen or more search efforts."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False))
    queries = np.asarray(vectors[rows], dtype=np.float32)
    return rows, queries, nearest_rows(vectors, queries, k + 1)[0]


def recall_against(index, truth: tuple, k: int) -> float:
    """Mean share of the exact k nearest other rows (from held_out_truth) that the index returns
    (each query's own row left out of both lists, as if it were held out)."""
    rows, queries, exact = truth
    _, approx = index.search(queries, k + 1)
    shares = [len(set([a for a in got if a != row][:k]) & set([e for e in want if e != row][:k])) / k
              for row, got, want in zip(rows, approx, exact)]
    return float(np.mean(shares))


def tune(measure, first: int, last: int, target: float) -> tuple:
    """(effort, recall): the least search effort in [first, last] whose measured recall reaches
    `target` (recall grows with effort: doubled from `first`, then bisected between the last two
    tried); `last` and its recall when even that falls short."""
    low, high = first - 1, first
    measured = {first: measure(first)}
    while measured[high] < target and high < last:
        low, high = high, min(2 * high, last)
        measured[high] = measure(high)
    while high - low > 1 and measured[high] >= target:
        middle = (low + high) // 2
        measured[middle] = measure(middle)
        low, high = (middle, high) if measured[middle] < target else (low, middle)
    return high, measured[high]


def set_effort(index, kind: str, effort: int) -> None:
    """The tuned search effort and, for IVF, how threads share a query; after a build and after loading."""
    if kind == "hnsw":
        index.hnsw.efSearch = effort
    else:
        ivf = faiss.extract_index_ivf(index)  # ivf-pca: the IVF inside the transform and the re-ranking
        ivf.nprobe = effort
        ivf.parallel_mode = IVF_PARALLEL_MODE


def describe(info: dict) -> str:
    """The tuned search effort in words, e.g. "efSearch 64" or "12 of 4000 cells probed"."""
    if info["type"] == "hnsw":
        return f"efSearch {info['ef_search']}"
    refine = f", {info['refine_factor']} candidates per neighbour re-ranked" if "refine_factor" in info else ""
    return f"{info['nprobe']} of {info['nlist']} cells probed{refine}"


def add_in_chunks(index, vectors) -> None:
    for start in progress(range(0, len(vectors), ADD_CHUNK), desc="adding to the index", unit="chunks"):
        index.add(np.asarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))


def sq8(dim: int):
    return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)


def ivf_of(kind: str, dim: int, nlist: int):
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf-flat":
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                         faiss.METRIC_INNER_PRODUCT)


def projection(sample: np.ndarray, reduced: int):
    """The sample's first `reduced` principal axes as a projection that does not subtract the
    mean: a query's inner product with a vector then differs from the projected one by the query's
    product with the mean's discarded part, the same for every vector, so the ranking keeps; FAISS's
    PCAMatrix subtracts it, which adds a term that differs from vector to vector."""
    pca = faiss.PCAMatrix(sample.shape[1], reduced)
    pca.train(sample)
    faiss.copy_array_to_vector(np.zeros(reduced, dtype=np.float32), pca.b)
    return pca


def empty_ivf(vectors, kind: str, nlist: int, seed: int):
    """An IVF index whose cells (ivf-pca: also its projection and codes) are trained on a seeded
    sample of the vectors."""
    n, dim = vectors.shape
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max(nlist * TRAIN_PER_CELL, 1), MAX_TRAIN),
                                                        replace=False))
    sample = np.asarray(vectors[sample], dtype=np.float32)
    log.info("training IVF index: %d cells on %d of %d vectors", nlist, len(sample), n)
    if kind != "ivf-pca":
        index = ivf_of(kind, dim, nlist)
    else:
        reduced = min(PCA_DIM, dim, len(sample))  # FAISS finds no more axes than training vectors
        index = faiss.IndexRefine(faiss.IndexPreTransform(projection(sample, reduced), ivf_of(kind, reduced, nlist)),
                                  sq8(dim))
        index.k_factor = REFINE_FACTOR
    index.train(sample)
    return index


def build_index(vectors, settings: IndexSettings, seed: int):
    """(FAISS index, description). `vectors`: (n, d) float32 unit rows, e.g. a np.load memmap.
    (Whether to search exactly or with an index is decided once, in queries.neighbours.)"""
    n, dim = vectors.shape
    kind, why = choose_kind(settings)
    log.info("building a %s index over %d vectors (%s)", kind, n, why)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        first, last, fixed, shape = HNSW_EF_START, HNSW_EF_MAX, 0, {}
    else:
        nlist = settings.nlist or auto_nlist(n)
        index = empty_ivf(vectors, kind, nlist, seed)
        first, last, fixed, shape = 1, nlist, settings.nprobe, {"nlist": nlist}
    add_in_chunks(index, vectors)
    truth = held_out_truth(vectors, RECALL_K, RECALL_QUERIES, seed)

    def measure(effort):
        set_effort(index, kind, effort)
        return recall_against(index, truth, RECALL_K)
    effort, recall = (fixed, measure(fixed)) if fixed else tune(measure, first, last, settings.recall_target)
    while kind == "ivf-pca" and not fixed and recall < settings.recall_target and index.k_factor < REFINE_FACTOR_MAX:
        # Every cell was scanned, so the true neighbours were among the candidates scored on the
        # leading components, but ranked below those re-ranked: a flat spectrum leaves those
        # components little of each distance. Re-rank more of them, then tune the cells again.
        index.k_factor = min(REFINE_GROWTH * index.k_factor, REFINE_FACTOR_MAX)
        log.info("ivf-pca: recall@%d %.3f with every cell probed; re-ranking %d candidates per neighbour",
                 RECALL_K, recall, index.k_factor)
        effort, recall = tune(measure, first, last, settings.recall_target)
    set_effort(index, kind, effort)
    refine = {"refine_factor": int(index.k_factor)} if kind == "ivf-pca" else {}
    info = {"type": kind, "chosen": why, **shape, ("ef_search" if kind == "hnsw" else "nprobe"): effort, **refine,
            "recall_target": settings.recall_target, "recall_at_10": recall, "n": n, "dim": dim}
    log.info("%s index over %d vectors: recall@%d %.3f against exact search (%s%s)", kind, n, RECALL_K, recall,
             describe(info), "" if fixed else ", tuned")
    if recall < settings.recall_target:
        log.warning("the index's recall@%d is %.3f, below the target %.2f: %s", RECALL_K, recall,
                    settings.recall_target, short_recall_hint(kind, effort, last, fixed))
    return index, info


def short_recall_hint(kind: str, effort: int, last: int, fixed: int) -> str:
    if fixed and effort != last:
        return "raise --NPROBE or set --NPROBE=0 to tune it"
    if kind == "hnsw":
        return f"even efSearch {last} falls short; use --INDEX_KIND=ivf-flat or a larger --EXACT_LIMIT"
    return "even every cell probed falls short (8-bit codes?); use --INDEX_KIND=ivf-flat or a larger --EXACT_LIMIT"


def cached_index(vectors, cache_dir: Path, source: dict, settings: IndexSettings, seed: int):
    """The index for the embeddings in cache_dir (described by `source`, their meta.json), loaded
    if it was completely built from them with these settings, else built and saved."""
    wanted = {"source": source, **asdict(settings), "seed": seed}
    meta_path, index_path = cache_dir / "index.json", cache_dir / "index.faiss"
    try:
        meta = json.loads(meta_path.read_text())
        if meta["settings"] == wanted and meta["file"] == fingerprint(index_path):
            index, info = faiss.read_index(str(index_path)), meta["info"]
            set_effort(index, info["type"], info["ef_search" if info["type"] == "hnsw" else "nprobe"])
            log.info("reusing %s index in %s (recall@10 %.3f when built, %s)", info["type"], index_path,
                     info["recall_at_10"], describe(info))
            return index, info
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # faiss raises RuntimeError
        log.warning("search index in %s is damaged (%s): building it again", cache_dir, str(err).splitlines()[0])
    meta_path.unlink(missing_ok=True)  # whatever follows, the old index no longer describes these embeddings
    index, info = build_index(vectors, settings, seed)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(meta_path, {"settings": wanted, "info": info, "file": fingerprint(index_path)})
    return index, info


def on_gpus_if_available(index):
    """An ivf-flat or ivf-sq8 index copied to all GPUs when FAISS was installed with GPU support
    (faiss-gpu; HNSW and ivf-pca's re-ranking stay on the CPU)."""
    if hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0 and isinstance(index, faiss.IndexIVF):
        return faiss.index_cpu_to_all_gpus(index)
    return index


def search(index, query: np.ndarray, k: int, exclude=()) -> np.ndarray:
    """Rows of the k best vectors for one unit query, `exclude` left out, in the index's order.
    No distances: the index may score on 8-bit codes, so its caller recomputes them exactly."""
    excluded = set(exclude)
    _, rows = index.search(np.asarray(query, dtype=np.float32)[None], k + len(excluded))
    return np.array([r for r in rows[0] if r >= 0 and r not in excluded][:k], dtype=np.int64)
