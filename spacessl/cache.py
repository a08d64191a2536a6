"""Decode once: every image read, resized and stored as uint8 in a memory-mapped array.

Decoding a PNG or JPEG and resizing it costs more CPU than augmenting it; with the cache each
image is decoded once, and every epoch after reads a few kB from the (page-cached) array.
16-bit and float data are stored after their stretch (images.py), quantised to 8 bits:

    <cache>/images.npy    uint8 (n_images, channels, side, side)
    <cache>/readable.npy  bool (n_images,): False where the file could not be read (skipped)
    <cache>/meta.json     what it was built from; written last, so an interrupted build is
                          detected (no or different meta.json) and built again
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .config import atomic_path, new_memmap, write_json
from .images import UNREADABLE_ERRORS, data_digest, picture_bands, read_image, resize_unit

log = logging.getLogger("spacessl")

DECODE_BATCH = 64  # images decoded per loader batch while building


class Decode(Dataset):
    """(uint8 array (channels, side, side), index) per file, or (None, index) if unreadable."""

    def __init__(self, root, files, channels: int, side: int, stretch: str):
        self.root, self.files, self.channels, self.side = Path(root), files, channels, side
        self.stretch = stretch

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        try:
            img = read_image(self.root / self.files[index], self.channels, self.stretch)
        except UNREADABLE_ERRORS as err:
            log.warning("skipping unreadable image %s (%s)", self.root / self.files[index], err)
            return None, index
        if isinstance(img, torch.Tensor):
            unit = resize_unit(img, self.side)
            return unit.mul(255).round().clamp(0, 255).to(torch.uint8).numpy(), index
        return picture_bands(img.resize((self.side, self.side), Image.Resampling.BILINEAR)), index


def keep_as_list(batch):
    return batch


def decoded_cache(root, files, channels: int, side: int, cache_dir: Path, workers: int,
                  stretch: str = "auto"):
    """(images memmap (n, channels, side, side) uint8, readable mask), built on first use."""
    meta = {"data_dir": str(Path(root).resolve()), "data_sha256": data_digest(root, files),
            "n_files": len(files), "channels": channels, "side": side, "stretch": stretch}
    meta_path = cache_dir / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        log.info("reusing decoded images in %s", cache_dir)
        return np.load(cache_dir / "images.npy", mmap_mode="r"), np.load(cache_dir / "readable.npy")
    if meta_path.is_file():
        meta_path.unlink()
    log.info("decoding %d images once into %s (%d x %d px)", len(files), cache_dir, side, side)
    readable = np.zeros(len(files), dtype=bool)
    loader = DataLoader(Decode(root, files, channels, side, stretch), batch_size=DECODE_BATCH, num_workers=workers,
                        collate_fn=keep_as_list)
    with atomic_path(cache_dir / "images.npy") as tmp:
        images = new_memmap(tmp, np.uint8, (len(files), channels, side, side))
        for batch in loader:
            for pixels, index in batch:
                if pixels is not None:
                    images[index] = pixels
                    readable[index] = True
        images.flush()
        del images  # unmapped before the file is moved
    with atomic_path(cache_dir / "readable.npy") as tmp:
        np.save(tmp, readable)
    write_json(meta_path, meta)
    return np.load(cache_dir / "images.npy", mmap_mode="r"), readable


class CachedImages(Dataset):
    """Items of the cache: (transform(image), index) with a per-image transform (a PIL image for
    1 or 3 channels, a float tensor in [0, 1] for other band counts), else (uint8 tensor
    (channels, side, side), index) for augmentation of whole batches later."""

    def __init__(self, images, rows, transform=None):
        self.images, self.rows, self.transform = images, rows, transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        pixels = np.array(self.images[self.rows[i]])  # a copy: workers never hand out views of the map
        if self.transform is None:
            return torch.from_numpy(pixels), i
        if len(pixels) not in (1, 3):
            return self.transform(torch.from_numpy(pixels).float().div_(255)), i
        img = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
        return self.transform(img), i
