"""Embed a whole archive with a trained model on several GPUs (or nodes) at once.

Usage:
    python SSL_Embed.py --RUN=checkpoints/oath_simclr --DEVICES=4
    srun python SSL_Embed.py --RUN=checkpoints/oath_simclr --DEVICES=4 --NUM_NODES=8    # SLURM

Every rank embeds its share of the images (Lightning predict with a distributed sampler) and
streams them into its own memory-mapped shard, so no process holds all embeddings in RAM and
ranks on different nodes never write to the same file. Rank 0 then merges the shards, in file
order, into the run's embedding cache (<run>/embeddings/<checkpoint>__<data folder>/:
embeddings.npy, filenames.csv, meta.json), which SSL_Evaluate.py, SSL_Probe.py, SSL_Map.py and
SSL_Anomalies.py reuse as if they had embedded the images themselves.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from spacessl.config import (atomic_path, format_config, new_memmap, require, resolve_config, run_main, usage,
                             wants_help, write_json)
from spacessl.embeddings import COPY_CHUNK, cache_meta, eval_dataset, finish_cache, read_cache
from spacessl.hardware import lightning_precision
from spacessl.images import collate_readable, find_images, loader_workers
from spacessl.model import load_model
from spacessl.runs import checkpoint_path, embedding_cache_dir, training_data_dir

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results go beside it)
DATA_DIR = ""                   # images; "" = the folder the run was trained on
BATCH_SIZE = 256                # images per batch per device
NUM_WORKERS = -1                # data-loading processes per device: -1 = one per CPU core (capped) | 0 = in-process
ACCELERATOR = "auto"            # auto (GPU if present) | gpu | cpu
DEVICES = 1                     # GPUs (or CPU processes) per node
NUM_NODES = 1                   # machines
# -----------------------------------------------------------------------------------------------


class ShardWriter(BasePredictionWriter):
    """Each rank writes rank<r>.npy (its embeddings, in the order it saw them), rank<r>.rows.npy
    (their indices into the file list) and, last, rank<r>.json (how many rows are valid)."""

    def __init__(self, shard_dir: Path, n_files: int, width: int):
        super().__init__(write_interval="batch")
        self.shard_dir, self.n_files, self.width = shard_dir, n_files, width

    def on_predict_start(self, trainer, pl_module):
        # A distributed sampler hands each rank at most ceil(n / world size) items.
        capacity = math.ceil(self.n_files / trainer.world_size)
        self.rank = trainer.global_rank
        self.vectors = new_memmap(self.shard_dir / f"rank{self.rank}.npy", np.float32, (capacity, self.width))
        self.rows = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if prediction is None:
            return
        vectors, indices = prediction
        size = len(indices)
        self.vectors[self.count:self.count + size] = vectors.float().cpu().numpy()
        self.rows[self.count:self.count + size] = indices.cpu().numpy()
        self.count += size

    def on_predict_end(self, trainer, pl_module):
        self.vectors.flush()
        self.vectors = None  # unmapped
        np.save(self.shard_dir / f"rank{self.rank}.rows.npy", self.rows[:self.count])
        write_json(self.shard_dir / f"rank{self.rank}.json", {"rows": self.count})


def merge_shards(shard_dir: Path, world_size: int, files: list, width: int, out: Path) -> list:
    """Write the shards' rows into one .npy at `out`, in file order, each file once (a distributed
    sampler may hand the same file to two ranks to even out their shares). Returns kept names."""
    rows, ranks, positions = [], [], []
    for rank in range(world_size):
        done = shard_dir / f"rank{rank}.json"
        if not done.is_file():
            raise RuntimeError(f"rank {rank} did not finish its shard in {shard_dir}")
        rank_rows = np.load(shard_dir / f"rank{rank}.rows.npy")[:json.loads(done.read_text())["rows"]]
        rows.append(rank_rows)
        ranks.append(np.full(len(rank_rows), rank))
        positions.append(np.arange(len(rank_rows)))
    rows, ranks, positions = map(np.concatenate, (rows, ranks, positions))
    order, first = np.unique(rows, return_index=True)  # file indices ascending, first copy of each
    ranks, positions = ranks[first], positions[first]
    with atomic_path(out) as tmp:
        merged = new_memmap(tmp, np.float32, (len(order), width))
        for rank in range(world_size):
            shard = np.load(shard_dir / f"rank{rank}.npy", mmap_mode="r")
            targets = np.flatnonzero(ranks == rank)
            for start in range(0, len(targets), COPY_CHUNK):
                chunk = targets[start:start + COPY_CHUNK]
                merged[chunk] = shard[positions[chunk]]
        merged.flush()
        del merged
    return [files[row] for row in order]


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    require(min(cfg["BATCH_SIZE"], cfg["DEVICES"], cfg["NUM_NODES"]) >= 1,
            "--BATCH_SIZE, --DEVICES and --NUM_NODES must be at least 1")
    require(cfg["ACCELERATOR"] in ("auto", "gpu", "cpu"), f"--ACCELERATOR={cfg['ACCELERATOR']}: choose auto, gpu or cpu")
    require(cfg["ACCELERATOR"] != "gpu" or torch.cuda.is_available(),
            "--ACCELERATOR=gpu but PyTorch sees no CUDA GPU; use --ACCELERATOR=auto or cpu")
    ckpt = checkpoint_path(cfg["RUN"], cfg["CHECKPOINT"])
    model = load_model(ckpt)
    data_dir = Path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else training_data_dir(ckpt.parent)
    files = find_images(data_dir)
    cache_dir = embedding_cache_dir(ckpt, data_dir)
    meta = cache_meta(ckpt, data_dir, files)
    gpu = cfg["ACCELERATOR"] == "gpu" or (cfg["ACCELERATOR"] == "auto" and torch.cuda.is_available())
    world = cfg["DEVICES"] * cfg["NUM_NODES"]
    if pl.utilities.rank_zero_only.rank == 0:
        print(f"checkpoint: {ckpt}\ndata: {data_dir} ({len(files)} images)\n{format_config(cfg)}")
        if read_cache(cache_dir, meta) is not None:
            print(f"already embedded: {cache_dir}")
            return
    hp = model.hparams
    with torch.no_grad():
        width = model.backbone(torch.zeros(1, hp.in_channels, hp.input_size, hp.input_size)).shape[1]
    shard_dir = cache_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(eval_dataset(model, data_dir, files, stored=True),
                        batch_size=cfg["BATCH_SIZE"], num_workers=loader_workers(cfg["NUM_WORKERS"]),
                        collate_fn=collate_readable, pin_memory=gpu)
    trainer = pl.Trainer(accelerator="gpu" if gpu else "cpu", devices=cfg["DEVICES"], num_nodes=cfg["NUM_NODES"],
                         strategy="ddp" if world > 1 else "auto", precision=lightning_precision("cuda" if gpu else "cpu"),
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[ShardWriter(shard_dir, len(files), width)])
    trainer.predict(model, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()  # every shard is complete before rank 0 reads them
    if trainer.global_rank != 0:
        return
    kept = merge_shards(shard_dir, trainer.world_size, files, width, cache_dir / "embeddings.npy")
    finish_cache(cache_dir, meta, kept, width)
    shutil.rmtree(shard_dir)
    print(f"embedded {len(kept)} of {len(files)} images on {trainer.world_size} process(es): "
          f"{cache_dir / 'embeddings.npy'}")


if __name__ == "__main__":
    run_main(main)
