"""Embedding a whole image folder once, cached in the run folder and kept up to date as the
folder grows: only images added or changed since are embedded again, and a job killed part-way
continues from its finished batches (shards.py).

Cache layout, one folder per checkpoint and data folder:  <run>/embeddings/<checkpoint>__<data>/
    embeddings.npy   float32 (n_images, width), L2-normalised rows; streamed to disk while
                     embedding and memory-mapped when read, never held whole in RAM
    filenames.csv    row i of embeddings.npy <-> image file i (relative to the data folder)
    sources.csv      every image file seen (filename, stamp = size:mtime:ctime in ns, row; row -1
                     for an unreadable one): what an update compares the folder with
    meta.json        what the cache was made from, and each file's size, times and SHA-256;
                     written last, so a cache whose meta.json is missing or different (an
                     interrupted or stale build) is never trusted
    work/            shards of a build in progress (shards.py); gone when the build is finished

A build writes the new files beside the old ones (`<name>.next`, then meta.next.json, which
records them) and only then renames them into place; a build killed during the renames is
finished by the next reader (`roll_forward`), and one killed before leaves the old cache whole.
So a job killed at any moment loses neither the old rows nor the finished batches.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from .errors import UserError
from .files import atomic_path, write_json
from .hardware import autocast
from .images import UNREADABLE_ERRORS, ImageFolder, collate_readable, data_digest, file_stamps, from_stored, read_image
from .progress import progress
from .shards import Work, attempt_name, merge, plan_digest
from .view import model_view

log = logging.getLogger("spacessl")

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a file
VIEW_VERSION = 2      # how SSLModel.embed sees an image (older caches are rebuilt); 2: turns pooled for some presets
CACHE_FORMAT = 2      # the cache's own layout; 2: sources.csv and file contents recorded (older caches are rebuilt)


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def eval_dataset(model, root, files, stored: bool = False) -> ImageFolder:
    """The images as the model sees them at evaluation: its channels, stretch and input size.
    stored=True: as view.EvalTransform(stored=True) gives them, for embedding whole folders."""
    hp = model.hparams
    return ImageFolder(root, files, hp.in_channels, model_view(model, stored), hp.stretch)


def embed_image(model, image, device) -> np.ndarray:
    """The unit embedding of one image: a file path, or an image in memory (a PIL picture or an
    array of H x W or bands x H x W stored numbers), read with the model's channels and stretch.
    Raises UserError for an image that cannot be used."""
    hp = model.hparams
    try:
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, hp.in_channels, hp.stretch)
        else:
            image = from_stored(image, hp.in_channels, hp.stretch)
    except UNREADABLE_ERRORS as err:
        raise UserError(f"query image {image if isinstance(image, (str, os.PathLike)) else 'array'} "
                        f"could not be read ({err})") from None
    batch = model_view(model)(image).unsqueeze(0).to(device)
    return model.to(device).embed(batch)[0].cpu().numpy()


def embed_images(model, root, files, batch_size: int, num_workers: int, device: torch.device):
    """(embeddings, kept file names) in memory: unreadable images are skipped with a warning. For
    small sets (monitors, baselines, benches); whole folders go through `cached_embeddings`."""
    vectors, kept = [], []
    for batch, positions in embedded_batches(model, root, files, batch_size, num_workers, device):
        vectors.append(batch)
        kept.extend(files[i] for i in positions)
    if not kept:
        raise UserError(f"none of the {len(files)} images under {root} could be read")
    return np.concatenate(vectors), kept


def embedded_batches(model, root, files, batch_size: int, num_workers: int, device: torch.device):
    """(unit embeddings, positions in files) of each batch of readable images, in file order."""
    loader = DataLoader(eval_dataset(model, root, files, stored=True), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_readable, pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    with torch.inference_mode(), autocast(device):
        for batch in progress(loader, total=len(loader), desc="embedding", unit="batches"):
            if batch is not None:
                images, indices = batch
                yield model.embed_stored(images.to(device, non_blocking=True)).float().cpu().numpy(), indices.tolist()


def cache_meta(checkpoint, root, files, stamps=None) -> dict:
    """What a cache of embeddings is made from; a cache is reused only if this is unchanged.
    stamps: file_stamps(root, files) when the caller has them."""
    return {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_digest(checkpoint),
            "data_dir": str(Path(root).resolve()), "data_sha256": data_digest(root, files, stamps), "n_files": len(files),
            "view": VIEW_VERSION, "format": CACHE_FORMAT}


CACHE_FILES = ("embeddings.npy", "filenames.csv", "sources.csv")
SAME_MODEL = ("checkpoint_sha256", "view", "data_dir")  # what a cache must share with another to lend it rows


def file_record(path: Path) -> list:
    """[size, mtime ns, ctime ns, SHA-256] of a cache file, recorded when the cache is finished."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, file_digest(path)]


def unchanged(path: Path, record) -> bool:
    """Whether a cache file is the one recorded: the same size, and either the same modification
    and inode change times or, where a time moved (the run folder was copied, or the file was
    rewritten with its old time put back), the same content (SHA-256, read only then)."""
    stat = path.stat()
    if not isinstance(record, list) or len(record) != 4 or stat.st_size != record[0]:
        return False
    return [stat.st_mtime_ns, stat.st_ctime_ns] == record[1:3] or file_digest(path) == record[3]


def next_name(name: str) -> str:
    """The name a build writes a cache file under before renaming it into place."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}.next{dot}{suffix}"


def roll_forward(cache_dir: Path, just_written: bool = False) -> None:
    """Rename a build's new files into place. meta.next.json is written only after every new
    file, so once it exists the renames can all be completed, also by the next reader when the
    build was killed among them. A rename moves a file's inode change time: the records are
    updated to it where the file is the one recorded (known when just written, else checked by
    its content once), so later reads need not hash the files."""
    journal = cache_dir / next_name("meta.json")
    if not journal.is_file():
        return
    for name in CACHE_FILES:
        if (cache_dir / next_name(name)).is_file():
            os.replace(cache_dir / next_name(name), cache_dir / name)
    meta = json.loads(journal.read_text())
    for name in CACHE_FILES:
        record, stat = meta["files"][name], (cache_dir / name).stat()
        if [stat.st_size, stat.st_mtime_ns] == record[:2] and (just_written or file_digest(cache_dir / name) == record[3]):
            record[2] = stat.st_ctime_ns
    write_json(cache_dir / "meta.json", meta)
    journal.unlink()
    if not just_written:
        log.info("finished the interrupted update of %s", cache_dir)


def trusted_cache(cache_dir: Path):
    """(meta, embeddings memmap, names) of a finished cache whose files are the ones its meta.json
    recorded, else None (a missing cache silently, a damaged or changed one with a warning)."""
    try:
        roll_forward(cache_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("embedding cache %s: an interrupted update could not be finished (%s)", cache_dir, err)
    try:
        old = json.loads((cache_dir / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("embedding cache %s is damaged (meta.json: %s): embedding again", cache_dir, err)
        return None
    if not isinstance(old, dict) or old.get("format") != CACHE_FORMAT:
        log.info("embedding cache %s was made by an older version: embedding again", cache_dir)
        return None
    try:
        if not all(unchanged(cache_dir / name, old["files"][name]) for name in CACHE_FILES):
            log.warning("embedding cache %s was changed or damaged after it was written: embedding again", cache_dir)
            return None
        names = pd.read_csv(cache_dir / "filenames.csv", keep_default_na=False)["filename"].tolist()
        vectors = np.load(cache_dir / "embeddings.npy", mmap_mode="r")
        if vectors.shape == (len(names), old["width"]) and len(names) == old["n_embedded"]:
            return old, vectors, names
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        log.warning("embedding cache %s is damaged (%s): embedding again", cache_dir, err)
        return None
    log.warning("embedding cache %s does not match its meta.json: embedding again", cache_dir)
    return None


def read_cache(cache_dir: Path, meta: dict):
    """(embeddings memmap, file names) if cache_dir holds a complete, untouched cache made from
    `meta`, else None: anything damaged, truncated, swapped or half-written since is embedded
    again, never half-trusted."""
    return current(cache_dir, trusted_cache(Path(cache_dir)), meta)


def current(cache_dir: Path, found, meta: dict):
    """(embeddings, names) of a trusted cache (trusted_cache's answer) when it was made from
    `meta`, else None."""
    if found is None:
        return None
    old, vectors, names = found
    # The checkpoint by its content: a run folder copied or moved keeps its cache.
    if all(old.get(key) == value for key, value in meta.items() if key != "checkpoint"):
        log.info("reusing embeddings in %s (same checkpoint and data)", cache_dir)
        return vectors, names
    log.info("data or checkpoint changed since %s was built: updating it", cache_dir)
    return None


class Build:
    """One build of a cache: which images an older cache of the same model lends its rows to
    (unchanged files), which must be embedded, and which an interrupted job already finished.
    counts: images reused from the cache, resumed from an interrupted job, and left to embed."""

    def __init__(self, cache_dir: Path, meta: dict, files: list, stamps: list, found=None, rank: int = 0):
        """found: trusted_cache(cache_dir)'s answer, an older cache that may lend rows."""
        self.cache_dir, self.meta, self.files, self.stamps = Path(cache_dir), meta, files, stamps
        self.old_vectors, self.reused, self.unreadable = None, {}, set()
        if found is not None and all(found[0].get(key) == meta[key] for key in SAME_MODEL):
            self.old_vectors = found[1]
            sources = pd.read_csv(self.cache_dir / "sources.csv", keep_default_na=False)
            before = dict(zip(sources["filename"], zip(sources["stamp"], sources["row"])))
            for name, stamp in zip(files, stamps):
                if name in before and before[name][0] == stamp:
                    if before[name][1] >= 0:
                        self.reused[name] = ("old", int(before[name][1]))
                    else:
                        self.unreadable.add(name)  # unreadable then, unchanged since: still unreadable
        for name in CACHE_FILES:  # new files of a build killed before it recorded them: the old cache is whole
            (self.cache_dir / next_name(name)).unlink(missing_ok=True)
        self.todo = [i for i, name in enumerate(files) if name not in self.reused and name not in self.unreadable]
        digest = plan_digest(meta, [files[i] for i in self.todo], [stamps[i] for i in self.todo])
        self.work = Work(self.cache_dir / "work", digest, attempt_name(rank), rank)
        done = self.work.finished()
        self.remaining = [position for position in range(len(self.todo)) if position not in done]
        self.counts = {"reused": len(self.reused), "resumed": len(done), "embedded": len(self.remaining)}

    def remaining_files(self) -> list:
        return [self.files[self.todo[position]] for position in self.remaining]

    def finish(self, width: int):
        """Merge the reused rows and every shard's into the new cache, in file order; write
        filenames.csv, sources.csv and meta.json last; clear the work folder. Returns (embeddings
        memmap, kept names)."""
        written = self.work.written()
        sources = dict(self.reused)
        sources.update((self.files[self.todo[position]], where) for position, where in written.items())
        kept = [name for name in self.files if name in sources]
        if not kept:
            raise UserError(f"none of the {len(self.files)} images under {self.meta['data_dir']} could be read")
        folder = self.cache_dir
        merge(folder / next_name("embeddings.npy"), kept, sources, self.old_vectors, self.work, width)
        self.old_vectors = None
        row = {name: i for i, name in enumerate(kept)}
        with atomic_path(folder / next_name("sources.csv")) as tmp:
            pd.DataFrame({"filename": self.files, "stamp": self.stamps,
                          "row": [row.get(name, -1) for name in self.files]}).to_csv(tmp, index=False)
        with atomic_path(folder / next_name("filenames.csv")) as tmp:
            pd.DataFrame({"filename": kept}).to_csv(tmp, index=False)
        write_json(folder / next_name("meta.json"), {
            **self.meta, "n_embedded": len(kept), "width": width, "last_build": self.counts,
            "files": {name: file_record(folder / next_name(name)) for name in CACHE_FILES}})
        roll_forward(folder, just_written=True)
        self.work.clear()
        log.info("embeddings of %d images in %s (%d embedded now, %d kept from the cache, %d from an "
                 "interrupted job)", len(kept), self.cache_dir, self.counts["embedded"], self.counts["reused"],
                 self.counts["resumed"])
        return np.load(self.cache_dir / "embeddings.npy", mmap_mode="r"), kept


def embedding_width(model) -> int:
    """The width of a model's embeddings (one blank image through its backbone)."""
    hp = model.hparams
    device = next(model.parameters()).device
    with torch.no_grad():
        blank = torch.zeros(1, hp.in_channels, hp.input_size, hp.input_size, device=device)
        return int(model.backbone(blank).shape[1])


def cached_embeddings(model, checkpoint, root, files, cache_dir, batch_size, num_workers, device, stamps=None):
    """Embeddings of `files`, from the cache when it was made from this checkpoint and data; else
    the cache is brought up to date, embedding only the images it lacks (new, changed, or left by
    an interrupted job), streamed to disk batch by batch."""
    cache_dir = Path(cache_dir)
    stamps = file_stamps(root, files) if stamps is None else stamps
    meta = cache_meta(checkpoint, root, files, stamps)
    found = trusted_cache(cache_dir)
    cached = current(cache_dir, found, meta)
    if cached is not None:
        return cached
    build = Build(cache_dir, meta, files, stamps, found)
    log.info("%s %d of %d images into %s (%d kept from the cache, %d from an interrupted job)",
             "embedding" if found is None else "embedding again", build.counts["embedded"], len(files), cache_dir,
             build.counts["reused"], build.counts["resumed"])
    width = embedding_width(model)
    todo = build.remaining_files()
    if todo:
        writer = build.work.writer(0, len(todo), width)
        for vectors, positions in embedded_batches(model, root, todo, batch_size, num_workers, device):
            writer.add(vectors, [build.remaining[p] for p in positions])
        writer.close()
    return build.finish(width)
