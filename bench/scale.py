"""Speed and memory benchmark: training and embedding throughput, search latency and recall.

Usage (from the repository root):
    .venv/bin/python bench/scale.py                                  # CPU-sized defaults, ~10 min here
    .venv/bin/python bench/scale.py --INPUT_SIZE=256 --BATCH_SIZE=256 --STEPS=50 --SEARCH_SIZES=100000,1000000,10000000

Prints, side by side:
- training images/s of the same SimCLR step fed (a) synthetic tensors already on the device
  (the ceiling; also with torch.compile where COMPILE says; and, where PIPELINES has device,
  stored pixels on the device augmented by BatchAugment: that pipeline's ceiling without a
  loader, which says whether the loader or the augmentation holds it back), (b) SSL_Train.py's data pipelines
  on real images (PIPELINE=decode, cache, device: spacessl/datamodule.py), each with its share
  of the ceiling and, on a GPU, the share of time the GPU was busy (NVML, sampled),
  (c) a plain loop in the style of the original SpaceSSL script: fp32, batch 64, no workers;
- embedding images/s (evaluation transform, no augmentation);
- for each distribution of search vectors and size: how hard the set is to index (local
  intrinsic dimensionality and relative contrast, below), then for IVF-flat, IVF-sq8, IVF-PCA
  and HNSW, build time, memory, the setting tuned to reach RECALL_TARGET (nprobe, efSearch) with
  its recall@10 against exact search, and ms per single query (IVF: also with FAISS's default
  threading, one thread per query); exact search's ms per query (batched). The vectors are
  written to a memory-mapped .npy first (sizes beyond RAM work):
  "real" is a run's own search vectors (SPECTRUM_RUN; all, or seeded samples of fewer), "fitted"
  imitates them at any size (a Gaussian with their mean and covariance, normalised), "clustered"
  is tight clusters, the easiest case for IVF. Measuring "real" beside "fitted" and "clustered"
  at the run's size says which synthetic set a user's archive resembles, and at a few sizes
  below it how each set's difficulty grows with its size;
- peak resident memory of the process (and peak GPU memory on a GPU).
On a GPU the step runs in bf16 autocast with channels_last (SSL_Train.py's settings).
"""

import contextlib
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.utilities import move_data_to_device

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collate import batch_augment, train_transform  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.embeddings import embed_images  # noqa: E402
from spacessl.hardware import autocast, pick_device  # noqa: E402
from spacessl.datamodule import ArchiveData  # noqa: E402
from spacessl.images import detect_channels, find_images, loader_workers, unit_tensor  # noqa: E402
from spacessl.search import nearest_rows  # noqa: E402
from spacessl.model import SSLModel  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
DATA_DIR = "../shared/data/galaxyzoo1_small/smallGZ1/Imagenes"  # real images: 6,664 SDSS JPEGs, 423 px
BACKBONE = "resnet18"             # torchvision ResNet under test
INPUT_SIZE = 64                   # px crops
CACHE_SIZE = 96                   # px side of the decode-once cache
BATCH_SIZE = 64                   # images per step (pipeline and synthetic)
SPACESSL_BATCH = 64               # the original script's batch size; 0 = that loop not measured
STEPS = 8                         # timed steps per measurement (after WARMUP_STEPS); 0 = no training figures
EMBED_IMAGES = 1000               # images embedded for the embedding figure (the files repeated where it is more);
                                  # 0 = no embedding figure
WARMUP_STEPS = 2                  # untimed steps first (allocations, cuDNN autotuning)
NUM_WORKERS = -1                  # loader processes for the pipeline: -1 = one per core (capped)
DEVICE = "auto"                   # auto | cpu | cuda
PIPELINES = "decode,cache,device"  # SSL_Train.py pipelines measured, comma-separated
COMPILE = "auto"                  # also time the torch.compile'd step: auto (on a GPU; minutes on a CPU) | yes | no
BUSY_SAMPLE_S = 0.05              # s between samples of GPU utilisation (NVML)
SEARCH_SIZES = "100000,1000000"   # vector counts for the search figures; "" = none (real: all of the run's anyway)
DISTRIBUTIONS = "fitted,clustered"  # search vectors: real (SPECTRUM_RUN's own: a seeded sample of each SEARCH_SIZES
                                  # below their count, else all of them)
                                  # | fitted (a Gaussian fitted to SPECTRUM_RUN's search vectors) | clustered (tight
                                  # clusters: IVF's easiest case)
SPECTRUM_RUN = ""                 # real, fitted: run folder whose search vectors to use / imitate (its images must be
                                  # reachable); "" = fitted is a power law, eigenvalue k ~ k^-SPECTRUM_POWER
SPECTRUM_POWER = 0.8              # fitted without SPECTRUM_RUN: the power law's exponent
DIM = 512                         # embedding width (resnet18's) of clustered and power-law vectors
CLUSTERS_PER_MILLION = 2000       # clustered: cluster centres per million vectors
NOISE = 2.0                       # clustered: per-coordinate noise around a centre (centre coords ~N(0,1));
                                  # 2.0: same-cluster pairs at cosine ~0.2, unrelated pairs at 0 +- 0.04 (512-d)
INDEX_KINDS = "ivf-flat,ivf-sq8,ivf-pca,hnsw"  # indexes measured, each built and tuned to RECALL_TARGET as
                                  # SSL_Evaluate.py builds it (spacessl/index.py): ivf-flat | ivf-sq8 | ivf-pca | hnsw
RECALL_TARGET = 0.95              # recall@10 against exact search each index is tuned to (SSL_Evaluate.py's default)
NLIST = 0                         # IVF cells; 0 = 4 sqrt(n)
SEARCH_QUERIES = 200              # queries timed per size
LID_K = 20                        # neighbours of the local intrinsic dimensionality estimate
DIFFICULTY_QUERIES = 500          # sample rows for the LID and relative-contrast figures
CONTRAST_SAMPLE = 10_000          # rows whose mean distance stands for "a random row" in the relative contrast
SEED = 0
# -----------------------------------------------------------------------------------------------

GENERATE_CHUNK = 100_000  # synthetic vectors written at a time


def step_fn(model, optimizer, device):
    """One SimCLR training step on two batches of views, in the number format of spacessl/hardware.py."""
    def step(view0, view1):
        with autocast(device):
            loss, _ = model.objective(model.backbone, view0, view1, 0, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def timed(batches, step, device, warmup: int, steps: int, batch_size: int, monitor=None) -> float:
    """Images per second over `steps` steps after `warmup` untimed ones; `monitor` (a context
    manager) is entered for the timed steps only."""
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    if device.type == "cuda":
        torch.cuda.synchronize()
    with monitor or contextlib.nullcontext():
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(iterator))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - start)


def make_model(cfg, channels, device, channels_last: bool):
    model = SSLModel(backbone=cfg["BACKBONE"], in_channels=channels, input_size=cfg["INPUT_SIZE"]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def pipeline_batches(data: ArchiveData, device):
    """Endless (view0, view1) batches on the device, through SSL_Train.py's data module."""
    while True:
        for batch in data.train_dataloader():
            if batch is None:
                continue
            views, _ = data.on_after_batch_transfer(move_data_to_device(batch, device), 0)
            yield views


def augmented_synthetic(cfg, channels, device):
    """Endless (view0, view1) batches as PIPELINE=device makes them from stored pixels already on
    the device: the ceiling with the augmentation's own cost and no loader. Parameters are drawn
    on the CPU each step and travel pinned, as the loader workers send them."""
    augment = batch_augment("astro", cfg["INPUT_SIZE"], channels)
    side, gpu = cfg["CACHE_SIZE"], device.type == "cuda"
    stored = torch.randint(0, 256, (cfg["BATCH_SIZE"], channels, side, side), dtype=torch.uint8, device=device)
    while True:
        params = [augment.draw(cfg["BATCH_SIZE"], side, side) for _ in range(2)]
        if gpu:
            params = [{key: [v.pin_memory() for v in value] if isinstance(value, list) else value.pin_memory()
                       for key, value in view.items()} for view in params]
        images = unit_tensor(stored)
        views = (augment.apply(images, move_data_to_device(view, device)) for view in params)
        yield tuple(v.contiguous(memory_format=torch.channels_last) if gpu else v for v in views)


def data_module(cfg, files, channels, device, batch_size, workers, pipeline="decode", cache_dir=None):
    gpu = device.type == "cuda"
    return ArchiveData(cfg["DATA_DIR"], files, [], channels, train_transform("astro", cfg["INPUT_SIZE"], channels),
                       batch_augment("astro", cfg["INPUT_SIZE"], channels), batch_size, workers,
                       pin_memory=gpu, channels_last=gpu, pipeline=pipeline, cache_dir=cache_dir,
                       cache_side=cfg["CACHE_SIZE"])


class BusyShare:
    """Mean GPU utilisation (NVML's share of time a kernel ran) while the block runs, sampled
    in a thread; share is None on a CPU or where NVML (nvidia-ml-py) is missing."""

    def __init__(self, device, every_s: float):
        self.device, self.every_s, self.share, self.samples = device, every_s, None, []
        self.stop = threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception as err:  # ModuleNotFoundError or an NVML error: measure without it
                print(f"  (GPU busy share not measured: {err})")
                return self
            self.thread = threading.Thread(target=self.sample, daemon=True)
            self.thread.start()
        return self

    def sample(self):
        while not self.stop.wait(self.every_s):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc):
        self.stop.set()
        if self.samples:
            self.share = float(np.mean(self.samples))


def training_figures(cfg, device) -> dict:
    files = find_images(cfg["DATA_DIR"])
    channels = detect_channels(cfg["DATA_DIR"], files)
    gpu = device.type == "cuda"
    figures = {}
    torch.manual_seed(cfg["SEED"])
    model = make_model(cfg, channels, device, channels_last=gpu)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = step_fn(model, optimizer, device)
    shape = (cfg["BATCH_SIZE"], channels, cfg["INPUT_SIZE"], cfg["INPUT_SIZE"])
    synthetic = [(torch.randn(shape, device=device), torch.randn(shape, device=device))] * 2

    def cycle(items):
        while True:
            yield from items

    ceiling = timed(cycle(synthetic), step, device, cfg["WARMUP_STEPS"], cfg["STEPS"], cfg["BATCH_SIZE"])
    figures["train synthetic, the ceiling (img/s)"] = ceiling
    if cfg["COMPILE"] == "yes" or (cfg["COMPILE"] == "auto" and gpu):
        compiled = make_model(cfg, channels, device, channels_last=gpu)
        compiled.backbone.compile()
        compiled_step = step_fn(compiled, torch.optim.SGD(compiled.parameters(), lr=0.01, momentum=0.9), device)
        timed(cycle(synthetic), compiled_step, device, 1, 1, cfg["BATCH_SIZE"])  # compiles
        figures["train synthetic, torch.compile (img/s)"] = timed(cycle(synthetic), compiled_step, device,
                                                                  cfg["WARMUP_STEPS"], cfg["STEPS"], cfg["BATCH_SIZE"])
    pipelines = [p.strip() for p in cfg["PIPELINES"].split(",") if p.strip()]
    if "device" in pipelines:
        figures["train synthetic + BatchAugment (img/s)"] = timed(
            augmented_synthetic(cfg, channels, device), step, device, cfg["WARMUP_STEPS"], cfg["STEPS"], cfg["BATCH_SIZE"])
    workers = loader_workers(cfg["NUM_WORKERS"])
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_cache-") as cache_dir:
        for pipeline in pipelines:
            start = time.perf_counter()
            data = data_module(cfg, files, channels, device, cfg["BATCH_SIZE"], workers, pipeline, Path(cache_dir))
            if pipeline != "decode" and "cache build (s, once)" not in figures:
                figures["cache build (s, once)"] = time.perf_counter() - start
            busy = BusyShare(device, cfg["BUSY_SAMPLE_S"])
            rate = timed(pipeline_batches(data, device), step, device, cfg["WARMUP_STEPS"], cfg["STEPS"],
                         cfg["BATCH_SIZE"], monitor=busy)
            figures[f"train PIPELINE={pipeline} (img/s)"] = rate
            figures[f"train PIPELINE={pipeline}, share of the ceiling (%)"] = 100 * rate / ceiling
            if busy.share is not None:
                figures[f"train PIPELINE={pipeline}, GPU busy (%)"] = busy.share
    if cfg["SPACESSL_BATCH"]:
        figures["train SpaceSSL-style loop (img/s)"] = spacessl_style(cfg, files, channels, device)
    if not cfg["EMBED_IMAGES"]:
        return figures
    model.eval()
    embed_images(model, cfg["DATA_DIR"], files[:cfg["BATCH_SIZE"]], cfg["BATCH_SIZE"], 0, device)  # warm-up
    # Repeating the list stands in for an archive larger than the sample, so the loader's start
    # is shared by as many images as asked for.
    sample = (files * -(-cfg["EMBED_IMAGES"] // len(files)))[:cfg["EMBED_IMAGES"]]
    start = time.perf_counter()
    _, kept = embed_images(model, cfg["DATA_DIR"], sample, cfg["BATCH_SIZE"], loader_workers(cfg["NUM_WORKERS"]), device)
    figures["embed (img/s)"] = len(kept) / (time.perf_counter() - start)
    return figures


def spacessl_style(cfg, files, channels, device) -> float:
    """Images/s of a loop in the original SpaceSSL style: fp32 (no autocast), batch 64,
    augmentations in the main process."""
    plain = make_model(cfg, channels, device, channels_last=False)
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def plain_step(view0, view1):
        loss, _ = plain.objective(plain.backbone, view0, view1, 0, 1)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    plain_data = data_module(cfg, files, channels, torch.device("cpu"), cfg["SPACESSL_BATCH"], 0)
    return timed(pipeline_batches(plain_data, device), plain_step, device, cfg["WARMUP_STEPS"], cfg["STEPS"],
                 cfg["SPACESSL_BATCH"])


def clustered_vectors(rng, size: int, n: int, cfg) -> np.ndarray:
    """`size` of n clustered unit vectors: CLUSTERS_PER_MILLION centres, NOISE around each."""
    clusters = max(1, n * cfg["CLUSTERS_PER_MILLION"] // 1_000_000)
    centres = np.random.default_rng(cfg["SEED"]).normal(size=(clusters, cfg["DIM"])).astype(np.float32)
    return centres[rng.integers(0, clusters, size)] + cfg["NOISE"] * rng.normal(size=(size, cfg["DIM"]))


def fitted_gaussian(cfg, real=None):
    """(mean, covariance factor) of the search vectors to imitate: `real`, those of the run
    SPECTRUM_RUN (run_vectors), else (None) a power law (eigenvalue k ~ k^-SPECTRUM_POWER) in a
    random rotation."""
    if real is not None:
        vectors = real.astype(np.float64)
        mean = vectors.mean(axis=0)
        variance, axes = np.linalg.eigh(np.cov(vectors, rowvar=False))
        return mean, axes * np.sqrt(np.clip(variance, 0, None))
    rng = np.random.default_rng(cfg["SEED"])
    axes, _ = np.linalg.qr(rng.normal(size=(cfg["DIM"], cfg["DIM"])))
    return np.zeros(cfg["DIM"]), axes * np.arange(1, cfg["DIM"] + 1) ** (-cfg["SPECTRUM_POWER"] / 2)


def run_vectors(cfg) -> np.ndarray:
    """SPECTRUM_RUN's search vectors: its embeddings after its default post-processing, as
    SSL_Evaluate.py searches them."""
    from spacessl.api import open_run

    if not cfg["SPECTRUM_RUN"]:
        raise UserError("--DISTRIBUTIONS=real needs --SPECTRUM_RUN=<a run folder with embeddings>")
    return np.asarray(open_run(cfg["SPECTRUM_RUN"], num_workers=0).vectors, dtype=np.float32)


def search_vectors_file(path: Path, n: int, distribution: str, cfg, real=None) -> np.ndarray:
    """n unit vectors of the named distribution ("real": a seeded sample of n of the run's vectors
    `real`, all of them where n is their count; "fitted": imitating `real`, a power law where it is
    None), written in chunks to a .npy and returned memory-mapped (sizes beyond RAM work)."""
    rng = np.random.default_rng(cfg["SEED"])
    if distribution == "real":
        np.save(path, real if n == len(real) else real[np.sort(rng.choice(len(real), n, replace=False))])
        return np.load(path, mmap_mode="r")
    dim = cfg["DIM"]
    if distribution == "fitted":
        mean, factor = fitted_gaussian(cfg, real)
        dim = len(mean)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, GENERATE_CHUNK):
        size = min(GENERATE_CHUNK, n - start)
        chunk = clustered_vectors(rng, size, n, cfg) if distribution == "clustered" else \
            mean + rng.normal(size=(size, dim)) @ factor.T
        out[start:start + size] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def difficulty(vectors, cfg) -> dict:
    """How hard the set is for any approximate index, on a seeded sample of rows as queries
    (medians): the local intrinsic dimensionality, Levina & Bickel's maximum-likelihood estimate
    from the LID_K nearest distances (Amsaleg et al. 2015, "Estimating local intrinsic
    dimensionality", KDD), and the relative contrast, a random row's mean distance over the 10th
    nearest one's (He, Kumar & Chang 2012, "On the difficulty of nearest neighbor search", ICML):
    the higher the LID and the closer the contrast to 1, the more of the set an index must visit."""
    rng = np.random.default_rng(cfg["SEED"] + 2)
    n = len(vectors)
    queries = np.asarray(vectors[np.sort(rng.choice(n, min(cfg["DIFFICULTY_QUERIES"], n), replace=False))])
    _, similarity = nearest_rows(vectors, queries, cfg["LID_K"] + 1)
    distance = np.sqrt(np.clip(2 - 2 * similarity[:, 1:], 1e-12, None))  # unit rows; column 0 is the row itself
    lid = -1 / np.mean(np.log(distance / distance[:, -1:]), axis=1)
    sample = np.asarray(vectors[np.sort(rng.choice(n, min(cfg["CONTRAST_SAMPLE"], n), replace=False))])
    mean_distance = np.sqrt(np.clip(2 - 2 * queries @ sample.T, 0, None)).mean(axis=1)
    return {"LID": round(float(np.median(lid)), 1),
            "relative contrast": round(float(np.median(mean_distance / distance[:, 9])), 3)}


def one_at_a_time_ms(index, queries) -> float:
    """ms per query, the queries searched one at a time, as a user asks."""
    start = time.perf_counter()
    for query in queries:
        index.search(query[None], 10)
    return round(1000 * (time.perf_counter() - start) / len(queries), 2)


def search_figures(cfg, n: int, distribution: str, workdir: Path, real=None) -> list:
    """One row per index kind: build time, memory, the tuned setting with its recall@10 against
    exact search, and ms per single query; exact search's ms per query (batched) beside it.
    `real`: the run's search vectors (None without SPECTRUM_RUN), for "real" and "fitted"."""
    import faiss

    from spacessl.index import IndexSettings, build_index, describe, index_bytes

    vectors = search_vectors_file(workdir / f"vectors_{distribution}_{n}.npy", n, distribution, cfg, real)
    hardness = difficulty(vectors, cfg)
    rng = np.random.default_rng(cfg["SEED"] + 1)
    queries = np.asarray(vectors[np.sort(rng.choice(n, min(cfg["SEARCH_QUERIES"], n), replace=False))])
    start = time.perf_counter()
    nearest_rows(vectors, queries, 10)  # one pass over all vectors for all queries
    exact_ms = 1000 * (time.perf_counter() - start) / len(queries)
    rows = []
    for kind in [k.strip() for k in cfg["INDEX_KINDS"].split(",") if k.strip()]:
        start = time.perf_counter()
        index, info = build_index(vectors, IndexSettings(kind, 0 if kind == "hnsw" else cfg["NLIST"],
                                                         recall_target=cfg["RECALL_TARGET"]), cfg["SEED"])
        build = time.perf_counter() - start
        single_ms = one_at_a_time_ms(index, queries)
        # IVF: also with FAISS's default threading (whole queries per thread), which the product
        # replaced (spacessl/index.py, IVF_PARALLEL_MODE): the gain of sharing one query's cells.
        default_threads = {}
        if kind != "hnsw":
            faiss.extract_index_ivf(index).parallel_mode = 0
            default_threads = {"ms/query, FAISS default threads": one_at_a_time_ms(index, queries)}
        rows.append({"vectors": n, "distribution": distribution, **hardness, "index": kind,
                     "build (s)": round(build, 1),
                     "memory (MiB)": round(index_bytes(kind, n, vectors.shape[1]) / 2 ** 20),
                     "tuned": describe(info), "recall@10": round(float(info["recall_at_10"]), 3),
                     "ms/query": single_ms, **default_threads, "exact ms/query (batched)": round(exact_ms, 1)})
        del index
    return rows


def main(argv):
    cfg = settings(globals(), argv)
    device = pick_device(cfg["DEVICE"])
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    distributions = [d.strip() for d in cfg["DISTRIBUTIONS"].split(",") if d.strip()]
    for distribution in distributions:
        if distribution not in ("real", "fitted", "clustered"):
            raise UserError(f"--DISTRIBUTIONS: unknown {distribution!r} (real, fitted, clustered)")
    sizes = {d: [int(s) for s in cfg["SEARCH_SIZES"].split(",") if s.strip()] for d in distributions}
    # The run's vectors are read once, for every size of "real" and "fitted" (run_vectors opens
    # the run and its embeddings; without SPECTRUM_RUN "real" is an error and "fitted" a power law).
    wants_run = "real" in distributions or (cfg["SPECTRUM_RUN"] and "fitted" in distributions)
    real = run_vectors(cfg) if wants_run else None
    if "real" in distributions:
        sizes["real"] = sorted({n for n in sizes["real"] if 0 < n < len(real)} | {len(real)})
    if any(sizes.values()):
        from spacessl.index import BUILT_KINDS  # faiss, needed for the search figures only

        for kind in [k.strip() for k in cfg["INDEX_KINDS"].split(",") if k.strip()]:
            if kind not in BUILT_KINDS:
                raise UserError(f"--INDEX_KINDS: unknown {kind!r} ({', '.join(BUILT_KINDS)})")
    if cfg["STEPS"]:
        for name, value in training_figures(cfg, device).items():
            print(f"  {name:<50} {value:8.1f}")
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_scale-") as workdir:
        for distribution in distributions:
            for n in sizes[distribution]:
                for row in search_figures(cfg, n, distribution, Path(workdir), real):
                    print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
                (Path(workdir) / f"vectors_{distribution}_{n}.npy").unlink()  # 2 GB per million 512-d vectors
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"  peak resident memory: {peak_rss:.0f} MiB" +
          (f", peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    run_main(main)
