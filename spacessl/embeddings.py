"""Embedding a whole image folder once, cached in the run folder until the data or model changes.

Cache layout, one folder per checkpoint:  <run>/embeddings/<checkpoint name>/
    embeddings.npy   float32 (n_images, width), L2-normalised rows; streamed to disk while
                     embedding and memory-mapped when read, never held whole in RAM
    filenames.csv    row i of embeddings.npy <-> image file i (relative to the data folder)
    meta.json        what the cache was made from; written last, so a cache whose meta.json is
                     missing or different (an interrupted or stale build) is rebuilt
"""

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from collate import eval_transform
from .config import UserError, atomic_path, fingerprint, new_memmap, write_json
from .hardware import autocast
from .images import UNREADABLE_ERRORS, ImageFolder, collate_readable, data_digest, from_stored, read_image
from .progress import progress

log = logging.getLogger("spacessl")

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a checkpoint
COPY_CHUNK = 65536    # embedding rows copied at a time when compacting
VIEW_VERSION = 2      # how SSLModel.embed sees an image; 2: turns pooled for some presets (older caches are rebuilt)


def checkpoint_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_view(model, stored: bool = False):
    """How a model sees an image at evaluation: the one transform (collate.eval_transform at its
    input size and channels) that the data set, query files, notebook arrays and Grad-CAM all use.
    stored=True leaves the normalisation to collate.normalize_stored on the device."""
    return eval_transform(model.hparams.input_size, model.hparams.in_channels, stored)


def eval_dataset(model, root, files, stored: bool = False) -> ImageFolder:
    """The images as the model sees them at evaluation: its channels, stretch and input size.
    stored=True: as collate.EvalTransform(stored=True) gives them, for embedding whole folders."""
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


def embed_images(model, root, files, batch_size: int, num_workers: int, device: torch.device, out_path=None):
    """(embeddings, kept file names): unreadable images are skipped with a warning.

    With out_path, rows are streamed into a .npy file there (written atomically) and the array
    returned is that file memory-mapped read-only, so an archive larger than RAM can be embedded.
    """
    loader = DataLoader(eval_dataset(model, root, files, stored=True), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_readable, pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    chunks, kept = [], []
    with contextlib.ExitStack() as stack:
        rows = None  # the output memmap, opened once the first batch gives the width
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast(device))
        tmp = stack.enter_context(atomic_path(out_path)) if out_path is not None else None
        for batch in progress(loader, total=len(loader), desc="embedding", unit="batches"):
            if batch is None:
                continue
            images, indices = batch
            vectors = model.embed_stored(images.to(device, non_blocking=True)).cpu().numpy()
            if tmp is None:
                chunks.append(vectors)
            else:
                if rows is None:
                    rows = new_memmap(tmp, np.float32, (len(files), vectors.shape[1]))
                rows[len(kept):len(kept) + len(vectors)] = vectors
            kept.extend(files[i] for i in indices.tolist())
        if not kept:
            raise UserError(f"none of the {len(files)} images under {root} could be read")
        if tmp is not None:
            rows.flush()
            rows = None  # unmap before the file is moved (Windows cannot rename a mapped file)
            if len(kept) < len(files):  # unreadable images left unused rows at the end
                compact(tmp, len(kept))
    if out_path is None:
        return np.concatenate(chunks), kept
    return np.load(out_path, mmap_mode="r"), kept


def compact(path, n_rows: int) -> None:
    """Keep only the first n_rows of the .npy at path, copying in chunks."""
    full = np.load(path, mmap_mode="r")
    short = path.with_name(path.name + ".compact.npy")
    out = new_memmap(short, full.dtype, (n_rows, full.shape[1]))
    for start in range(0, n_rows, COPY_CHUNK):
        out[start:start + COPY_CHUNK] = full[start:min(start + COPY_CHUNK, n_rows)]
    out.flush()
    del full, out
    os.replace(short, path)


def cache_meta(checkpoint, root, files) -> dict:
    """What a cache of embeddings is made from; a cache is reused only if this is unchanged."""
    return {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": checkpoint_digest(checkpoint),
            "data_dir": str(Path(root).resolve()), "data_sha256": data_digest(root, files), "n_files": len(files),
            "view": VIEW_VERSION}


CACHE_FILES = ("embeddings.npy", "filenames.csv")


def read_cache(cache_dir: Path, meta: dict):
    """(embeddings memmap, file names) if cache_dir holds a complete, untouched cache made from
    `meta`, else None. Trusted only when meta.json (written last) parses, matches `meta`, and the
    files' sizes and times are those it recorded when the cache was finished, and the table's
    shape agrees with the name list: anything damaged, truncated, swapped or half-written since
    is embedded again, never half-trusted."""
    meta_path = cache_dir / "meta.json"
    try:
        old = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("embedding cache %s is damaged (meta.json: %s): embedding again", cache_dir, err)
        old = None
    try:
        same = isinstance(old, dict) and all(old.get(key) == value for key, value in meta.items())
        untouched = same and all(old.get("files", {}).get(name) == fingerprint(cache_dir / name) for name in CACHE_FILES)
        if untouched:
            names = pd.read_csv(cache_dir / "filenames.csv", keep_default_na=False)["filename"].tolist()
            vectors = np.load(cache_dir / "embeddings.npy", mmap_mode="r")
            if vectors.shape == (len(names), old["width"]) and len(names) == old["n_embedded"]:
                log.info("reusing embeddings in %s (same checkpoint and data)", cache_dir)
                return vectors, names
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        log.warning("embedding cache %s is damaged (%s): embedding again", cache_dir, err)
        untouched = False
    if same and not untouched:
        log.warning("embedding cache %s was changed or damaged after it was written: embedding again", cache_dir)
    else:
        log.info("data or checkpoint changed since %s was built: embedding again", cache_dir)
    try:
        meta_path.unlink(missing_ok=True)  # another process may have removed it first
    except OSError:
        pass  # a read-only run folder: the caller builds a cache elsewhere
    return None


def finish_cache(cache_dir: Path, meta: dict, kept: list, width: int) -> None:
    """Write filenames.csv, then meta.json last (with both files' fingerprints): only now is the
    cache complete."""
    with atomic_path(cache_dir / "filenames.csv") as tmp:
        pd.DataFrame({"filename": kept}).to_csv(tmp, index=False)
    write_json(cache_dir / "meta.json", {**meta, "n_embedded": len(kept), "width": width,
                                         "files": {name: fingerprint(cache_dir / name) for name in CACHE_FILES}})


def cached_embeddings(model, checkpoint, root, files, cache_dir, batch_size, num_workers, device):
    """Embeddings of `files`, from the cache when it was made from this checkpoint and data."""
    cache_dir = Path(cache_dir)
    meta = cache_meta(checkpoint, root, files)
    cached = read_cache(cache_dir, meta)
    if cached is not None:
        return cached
    log.info("embedding %d images into %s", len(files), cache_dir)
    vectors, kept = embed_images(model, root, files, batch_size, num_workers, device,
                                 out_path=cache_dir / "embeddings.npy")
    finish_cache(cache_dir, meta, kept, int(vectors.shape[1]))
    return vectors, kept
