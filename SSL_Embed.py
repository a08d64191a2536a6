"""Embed a whole archive with a trained model on several GPUs (or nodes) at once.

Usage:
    python SSL_Embed.py --RUN=checkpoints/oath_simclr --DEVICES=4
    srun python SSL_Embed.py --RUN=checkpoints/oath_simclr --DEVICES=4 --NUM_NODES=8    # SLURM

Every rank embeds its share of the images (Lightning predict with a distributed sampler) and
streams them into its own memory-mapped shard (spacessl/shards.py), so no process holds all
embeddings in RAM and ranks on different nodes never write to the same file. Only images the
cache lacks are embedded (new or changed files, or those a killed job did not finish: run the
same command again to continue). Rank 0 then merges the shards, in file order, into the run's
embedding cache (<run>/embeddings/<checkpoint>__<data folder>/:
embeddings.npy, filenames.csv, meta.json), which SSL_Evaluate.py, SSL_Probe.py, SSL_Map.py and
SSL_Anomalies.py reuse as if they had embedded the images themselves.
"""

from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from spacessl.config import format_config, run_main, settings
from spacessl.errors import require
from spacessl.embeddings import Build, cache_meta, current, embedding_width, eval_dataset, trusted_cache
from spacessl.hardware import lightning_accelerator, lightning_precision, pick_device
from spacessl.images import collate_readable, file_stamps, find_images, loader_workers
from spacessl.model import load_model
from spacessl.runs import checkpoint_path, embedding_cache_dir, run_folder, training_data_dir
from spacessl.shards import PredictionShards

# ---- hyperparameters --------------------------------------------------------------------------
RUN = "checkpoints/oath_simclr"  # run folder written by SSL_Train.py
CHECKPOINT = "best"             # best | last | path to a .ckpt file (results still go to RUN)
DATA_DIR = ""                   # images; "" = the folder the run was trained on
BATCH_SIZE = 256                # images per batch per device
NUM_WORKERS = -1                # data-loading processes per device: -1 = one per CPU core (capped) | 0 = in-process
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
DEVICES = 1                     # GPUs (or CPU processes) per node
NUM_NODES = 1                   # machines
# -----------------------------------------------------------------------------------------------


def main(argv):
    cfg = settings(globals(), argv)
    require(min(cfg["BATCH_SIZE"], cfg["DEVICES"], cfg["NUM_NODES"]) >= 1,
            "--BATCH_SIZE, --DEVICES and --NUM_NODES must be at least 1")
    device = pick_device(cfg["DEVICE"])
    ckpt = checkpoint_path(cfg["RUN"], cfg["CHECKPOINT"])
    model = load_model(ckpt)
    data_dir = Path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else training_data_dir(ckpt.parent)
    files = find_images(data_dir)
    cache_dir = embedding_cache_dir(ckpt, data_dir, run_folder(cfg["RUN"], ckpt))
    stamps = file_stamps(data_dir, files)
    meta = cache_meta(ckpt, data_dir, files, stamps)
    rank = pl.utilities.rank_zero_only.rank
    found = trusted_cache(cache_dir)
    if rank == 0:
        print(f"checkpoint: {ckpt}\ndata: {data_dir} ({len(files)} images)\n{format_config(cfg)}")
        if current(cache_dir, found, meta) is not None:
            print(f"already embedded: {cache_dir}")
            return
    build = Build(cache_dir, meta, files, stamps, found, rank)
    if rank == 0:
        print(f"embedding {build.counts['embedded']} images ({build.counts['reused']} kept from the cache, "
              f"{build.counts['resumed']} from an interrupted job)")
    width = embedding_width(model)
    world = cfg["DEVICES"] * cfg["NUM_NODES"]
    if build.remaining:
        loader = DataLoader(eval_dataset(model, data_dir, build.remaining_files(), stored=True),
                            batch_size=cfg["BATCH_SIZE"], num_workers=loader_workers(cfg["NUM_WORKERS"]),
                            collate_fn=collate_readable, pin_memory=device.type == "cuda")
        trainer = pl.Trainer(accelerator=lightning_accelerator(device), devices=cfg["DEVICES"],
                             num_nodes=cfg["NUM_NODES"], strategy="ddp" if world > 1 else "auto",
                             precision=lightning_precision(device.type), logger=False, enable_checkpointing=False,
                             enable_model_summary=False, callbacks=[PredictionShards(build.work, build.remaining, width)])
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()  # every shard is complete before rank 0 reads them
        rank = trainer.global_rank
    if rank != 0:
        return
    vectors, kept = build.finish(width)
    counts = build.counts
    print(f"embedded {len(kept)} of {len(files)} images on {world} process(es) ({counts['embedded']} now, "
          f"{counts['reused']} kept from the cache, {counts['resumed']} from an interrupted job): "
          f"{cache_dir / 'embeddings.npy'}")


if __name__ == "__main__":
    run_main(main)
