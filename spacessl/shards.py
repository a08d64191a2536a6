"""Embedding that survives being killed: every process streams its rows into its own shard, and
a shard says after each batch how many of its rows are finished.

Layout, inside a cache folder:  <cache>/work/
    plan.json               what is being embedded: the checkpoint, the view and the list of images
                            still to embed (their names and file stamps), as a digest
    <attempt>.r<rank>.npy   float32 (capacity, width): the rows one process embedded, in its order
    <attempt>.r<rank>.idx.npy  int64 (capacity,): each row's position in the plan's list
    <attempt>.r<rank>.json  {"rows": k}: the first k rows of both are complete, written after
                            both arrays were flushed to disk

A job killed at any moment (SIGKILL, power cut, a lost node) leaves every batch it finished
counted; the next job with the same plan embeds only what no earlier attempt's shard holds (with
any number of processes), and the merge takes each image's row from whichever shard has it. A
different plan (other images, another checkpoint) clears the folder first (rank 0 only; the
other ranks of a job then find nothing to take over, as rank 0 does).

All ranks of one job must name the same attempt: rank 0 picks it and Lightning's ranks inherit it
through the environment (ATTEMPT_VARIABLE); under SLURM, whose ranks start together, the job id
and restart count name it.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
from pytorch_lightning.callbacks import BasePredictionWriter

from .files import atomic_path, new_memmap, write_json

log = logging.getLogger("spacessl")

SHARD = re.compile(r"(.+)\.r(\d+)\.json")
ATTEMPT_VARIABLE = "SPACESSL_EMBED_ATTEMPT"
COPY_ROWS = 65536  # rows copied at a time when merging


def attempt_name(rank: int) -> str:
    """This job's attempt: the same on every rank of one job, new for each job."""
    if "SLURM_JOB_ID" in os.environ:
        return f"slurm{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    if rank != 0 and ATTEMPT_VARIABLE in os.environ:
        return os.environ[ATTEMPT_VARIABLE]
    name = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    os.environ[ATTEMPT_VARIABLE] = name  # inherited by the ranks Lightning starts
    return name


def plan_digest(meta: dict, todo: list, stamps) -> str:
    """A digest of what a job embeds: the cache's meta (checkpoint, view) and each image to embed
    with its file stamp (size, mtime, ctime): a changed file is a different plan."""
    digest = hashlib.sha256(json.dumps({k: meta[k] for k in ("checkpoint_sha256", "view")}).encode())
    for name, stamp in zip(todo, stamps):
        digest.update(f"{name}\t{stamp}\n".encode())
    return digest.hexdigest()


class Work:
    """The work folder of one cache for one plan (see the module docstring)."""

    def __init__(self, folder: Path, digest: str, attempt: str, rank: int = 0):
        """Rank 0 makes the folder ready (clears another plan's shards); the other ranks only read it."""
        self.folder, self.attempt = Path(folder), attempt
        self.same_plan = self._plan() == digest
        if rank == 0 and not self.same_plan:
            if self.folder.exists():
                log.info("clearing unfinished embeddings of another plan in %s", self.folder)
                shutil.rmtree(self.folder)
            write_json(self.folder / "plan.json", {"digest": digest})

    def _plan(self):
        try:
            return json.loads((self.folder / "plan.json").read_text()).get("digest")
        except (OSError, ValueError, AttributeError):
            return None

    def finished(self) -> dict:
        """{plan position: (shard name, row)} of every row earlier attempts of this plan finished
        (the first shard's where two hold it); {} for another plan's folder."""
        return self._rows(skip=self.attempt) if self.same_plan else {}

    def writer(self, rank: int, capacity: int, width: int) -> "ShardWriter":
        return ShardWriter(self.folder, f"{self.attempt}.r{rank}", capacity, width)

    def written(self) -> dict:
        """finished() plus the rows of this attempt's shards (for the merge, after every rank ended)."""
        return self._rows()

    def _rows(self, skip: str = "") -> dict:
        """{plan position: (shard name, row)} of the counted rows of every shard but attempt `skip`'s."""
        done = {}
        for shard, attempt in self._shards():
            if attempt != skip:
                positions = np.load(self.folder / f"{shard}.idx.npy", mmap_mode="r")[:self._count(shard)]
                for row, position in enumerate(positions.tolist()):
                    done.setdefault(position, (shard, row))
        return done

    def vectors(self, shard: str):
        return np.load(self.folder / f"{shard}.npy", mmap_mode="r")

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _shards(self):
        """(shard name, attempt) of every shard in the folder, oldest attempt first."""
        for path in sorted(self.folder.glob("*.r*.json")):
            match = SHARD.fullmatch(path.name)
            if match:
                yield path.name[:-len(".json")], match.group(1)

    def _count(self, shard: str) -> int:
        try:
            return int(json.loads((self.folder / f"{shard}.json").read_text())["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0


class ShardWriter:
    """One process's shard: `add` a batch of rows and their plan positions; the count on disk
    moves only after both arrays are flushed, so it never counts a row that is not there."""

    def __init__(self, folder: Path, name: str, capacity: int, width: int):
        self.folder, self.name, self.count = folder, name, 0
        capacity = max(1, capacity)
        self.vectors = new_memmap(folder / f"{name}.npy", np.float32, (capacity, width), "embeddings.npy")
        self.positions = new_memmap(folder / f"{name}.idx.npy", np.int64, (capacity,), "embeddings.npy")
        write_json(folder / f"{name}.json", {"rows": 0})

    def add(self, vectors: np.ndarray, positions) -> None:
        size = len(positions)
        self.vectors[self.count:self.count + size] = vectors
        self.positions[self.count:self.count + size] = positions
        self.vectors.flush()
        self.positions.flush()
        self.count += size
        write_json(self.folder / f"{self.name}.json", {"rows": self.count})

    def close(self) -> None:
        self.vectors = self.positions = None  # unmapped


def merge(out: Path, order: list, sources: dict, old_vectors, work: Work, width: int) -> None:
    """Write the rows of `order` (plan keys in output order) into a new .npy at out, atomically:
    sources[key] = ("old", row) for a row of the previous cache (old_vectors), or (shard, row)."""
    shards = {}
    with atomic_path(out) as tmp:
        merged = new_memmap(tmp, np.float32, (len(order), width))
        by_source = {}
        for i, key in enumerate(order):
            source, row = sources[key]
            by_source.setdefault(source, ([], []))
            by_source[source][0].append(i)
            by_source[source][1].append(row)
        for source, (targets, rows) in by_source.items():
            if source == "old":
                array = old_vectors
            else:
                array = shards.setdefault(source, work.vectors(source))
            targets, rows = np.asarray(targets), np.asarray(rows)
            for start in range(0, len(targets), COPY_ROWS):
                merged[targets[start:start + COPY_ROWS]] = array[rows[start:start + COPY_ROWS]]
        merged.flush()
        del merged


class PredictionShards(BasePredictionWriter):
    """Lightning's prediction writer for a multi-process job (SSL_Embed.py): each rank streams the
    rows of its share of the images into its own shard. positions[i] is the plan position of the
    predicted data set's item i."""

    def __init__(self, work: Work, positions: list, width: int):
        super().__init__(write_interval="batch")
        self.work, self.positions, self.width = work, positions, width

    def on_predict_start(self, trainer, pl_module):
        # A distributed sampler hands each rank at most ceil(n / world size) items.
        capacity = -(-len(self.positions) // trainer.world_size)
        self.writer = self.work.writer(trainer.global_rank, capacity, self.width)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if prediction is not None:
            vectors, indices = prediction
            self.writer.add(vectors.float().cpu().numpy(), [self.positions[i] for i in indices.tolist()])

    def on_predict_end(self, trainer, pl_module):
        self.writer.close()
