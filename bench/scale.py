"""Speed and memory benchmark: training and embedding throughput, search latency and recall.

Usage (from the repository root):
    .venv/bin/python bench/scale.py                                  # CPU-sized defaults, ~10 min here
    .venv/bin/python bench/scale.py --INPUT_SIZE=256 --BATCH_SIZE=256 --STEPS=50 --SEARCH_SIZES=100000,1000000,10000000

Prints, side by side:
- training images/s of the same SimCLR step fed (a) synthetic tensors already on the device
  (the ceiling; also with torch.compile where COMPILE says), (b) SSL_Train.py's data pipelines
  on real images (PIPELINE=decode, cache, device: spacessl/datamodule.py), each with its share
  of the ceiling and, on a GPU, the share of time the GPU was busy (NVML, sampled),
  (c) a plain loop in the style of the original SpaceSSL script: fp32, batch 64, no workers;
- embedding images/s (evaluation transform, no augmentation);
- for each search size: IVF index build time, then for each NPROBES value recall@10 against
  exact search and ms per single query, and ms per query of exact search (batched), on
  synthetic clustered unit vectors written to a memory-mapped .npy first (so sizes beyond RAM
  work);
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

from spacessl.config import resolve_config, run_main, usage, wants_help  # noqa: E402
from spacessl.embeddings import embed_images  # noqa: E402
from spacessl.hardware import autocast, pick_device  # noqa: E402
from spacessl.datamodule import ArchiveData  # noqa: E402
from spacessl.images import detect_channels, find_images, loader_workers  # noqa: E402
from spacessl.search import nearest_rows  # noqa: E402
from spacessl.model import SSLModel  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
DATA_DIR = "../shared/data/galaxyzoo1_small/smallGZ1/Imagenes"  # real images: 6,664 SDSS JPEGs, 423 px
BACKBONE = "resnet18"             # torchvision ResNet under test
INPUT_SIZE = 64                   # px crops
CACHE_SIZE = 96                   # px side of the decode-once cache
BATCH_SIZE = 64                   # images per step (pipeline and synthetic)
SPACESSL_BATCH = 64               # the original script's batch size; 0 = that loop not measured
STEPS = 8                         # timed steps per measurement (after WARMUP_STEPS)
EMBED_IMAGES = 1000               # images embedded for the embedding figure; 0 = no embedding figure
WARMUP_STEPS = 2                  # untimed steps first (allocations, cuDNN autotuning)
NUM_WORKERS = -1                  # loader processes for the pipeline: -1 = one per core (capped)
DEVICE = "auto"                   # auto | cpu | cuda
PIPELINES = "decode,cache,device"  # SSL_Train.py pipelines measured, comma-separated
COMPILE = "auto"                  # also time the torch.compile'd step: auto (on a GPU; minutes on a CPU) | yes | no
BUSY_SAMPLE_S = 0.05              # s between samples of GPU utilisation (NVML)
SEARCH_SIZES = "100000,1000000"   # synthetic vector counts for the search figures
DIM = 512                         # embedding width (resnet18's)
CLUSTERS_PER_MILLION = 2000       # synthetic data: cluster centres per million vectors
NOISE = 2.0                       # synthetic data: per-coordinate noise around a centre (centre coords ~N(0,1));
                                  # 2.0: same-cluster pairs at cosine ~0.2, unrelated pairs at 0 +- 0.04 (512-d)
NPROBES = "16,64,256"             # IVF cells searched per query: each value measured on the same index
NLIST = 0                         # IVF cells; 0 = 4 sqrt(n). Far fewer cells than clusters costs recall
INDEX_ENCODING = "flat"           # flat (float32) | sq8 (8-bit codes: 4x less memory, for 10M+ vectors)
SEARCH_QUERIES = 200              # queries timed per size
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


def data_module(cfg, files, channels, device, batch_size, workers, pipeline="decode", cache_dir=None):
    gpu = device.type == "cuda"
    return ArchiveData(cfg["DATA_DIR"], files, [], channels, "astro", cfg["INPUT_SIZE"], batch_size, workers,
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
    workers = loader_workers(cfg["NUM_WORKERS"])
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_cache-") as cache_dir:
        for pipeline in [p.strip() for p in cfg["PIPELINES"].split(",") if p.strip()]:
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
    start = time.perf_counter()
    sample = files[:cfg["EMBED_IMAGES"]]
    vectors, kept = embed_images(model, cfg["DATA_DIR"], sample, cfg["BATCH_SIZE"], loader_workers(cfg["NUM_WORKERS"]),
                                 device)
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


def synthetic_vectors(path: Path, n: int, cfg) -> np.ndarray:
    """n clustered unit vectors, written in chunks to a .npy and returned memory-mapped."""
    rng = np.random.default_rng(cfg["SEED"])
    clusters = max(1, n * cfg["CLUSTERS_PER_MILLION"] // 1_000_000)
    centres = rng.normal(size=(clusters, cfg["DIM"])).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, cfg["DIM"]))
    for start in range(0, n, GENERATE_CHUNK):
        size = min(GENERATE_CHUNK, n - start)
        chunk = centres[rng.integers(0, clusters, size)] + cfg["NOISE"] * rng.normal(size=(size, cfg["DIM"]))
        out[start:start + size] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def search_figures(cfg, n: int, workdir: Path) -> list:
    """One row per NPROBES value: recall@10 and ms per single query on the same index."""
    from spacessl.index import build_index  # faiss only where search is measured
    vectors = synthetic_vectors(workdir / f"vectors_{n}.npy", n, cfg)
    nprobes = [int(p) for p in cfg["NPROBES"].split(",")]
    start = time.perf_counter()
    index, info = build_index(vectors, nlist=cfg["NLIST"], nprobe=nprobes[0],
                              encoding=cfg["INDEX_ENCODING"], seed=cfg["SEED"])
    build = time.perf_counter() - start
    rng = np.random.default_rng(cfg["SEED"] + 1)
    queries = np.asarray(vectors[np.sort(rng.choice(n, cfg["SEARCH_QUERIES"], replace=False))])
    start = time.perf_counter()
    exact, _ = nearest_rows(vectors, queries, 10)  # one pass over all vectors for all queries
    exact_ms = 1000 * (time.perf_counter() - start) / len(queries)
    rows = []
    for nprobe in nprobes:
        index.nprobe = nprobe
        _, approx = index.search(queries, 10)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
        start = time.perf_counter()
        for query in queries:  # one at a time, as a user asks
            index.search(query[None], 10)
        ivf_ms = 1000 * (time.perf_counter() - start) / len(queries)
        rows.append({"vectors": n, "index": info["type"], "IVF cells": info["nlist"], "build (s)": round(build, 1),
                     "nprobe": nprobe, "recall@10": round(float(recall), 3), "IVF ms/query": round(ivf_ms, 2),
                     "exact ms/query (batched)": round(exact_ms, 1)})
    return rows


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    device = pick_device(cfg["DEVICE"])
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name, value in training_figures(cfg, device).items():
        print(f"  {name:<50} {value:8.1f}")
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_scale-") as workdir:
        for n in [int(s) for s in cfg["SEARCH_SIZES"].split(",") if s.strip()]:
            for row in search_figures(cfg, n, Path(workdir)):
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            (Path(workdir) / f"vectors_{n}.npy").unlink()  # 2 GB per million 512-d vectors
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"  peak resident memory: {peak_rss:.0f} MiB" +
          (f", peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    run_main(main)
