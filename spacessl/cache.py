"""Decode once: every image read, resized and stored in a memory-mapped array.

Decoding a PNG or JPEG and resizing it costs more CPU than augmenting it; with the cache each
image is decoded once, and every epoch after reads a few kB from the (page-cached) array.
8-bit pictures are stored as they are (uint8); 16-bit, float and many-band data after their
stretch (images.py) as uint16, so their precision (far finer than 8 bits) reaches the model:

    <cache>/images.npy    uint8 or uint16 (n_images, channels, side, side)
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

from .files import atomic_path, new_memmap, write_json
from .images import (CHANNEL_SAMPLE, DEEP_MAX, PICTURE_EXTENSIONS, UNREADABLE_ERRORS, data_digest, has_extension,
                     picture_bands, read_image, resize_unit, unit_tensor)
from .progress import progress

log = logging.getLogger("spacessl")

DECODE_BATCH = 64  # images decoded per loader batch while building
PICTURE_TO_DEEP = DEEP_MAX // 255   # 8-bit values in a uint16 cache: 255 -> 65535


def cache_dtype(root, files, channels: int, stretch: str):
    """uint8 if the images reach the model as 8-bit pictures, uint16 if they reach it as floats
    (FITS, arrays, frames, 16-bit pictures, a stretch, many bands), judged from every file name
    and a sample of CHANNEL_SAMPLE pictures."""
    if any(not has_extension(name, PICTURE_EXTENSIONS) for name in files):
        return np.uint16
    for name in files[::max(1, len(files) // CHANNEL_SAMPLE)]:
        try:
            if isinstance(read_image(Path(root) / name, channels, stretch), torch.Tensor):
                return np.uint16
        except UNREADABLE_ERRORS:
            continue
    return np.uint8


class Decode(Dataset):
    """(array (channels, side, side) of dtype, index) per file, or (None, index) if unreadable."""

    def __init__(self, root, files, channels: int, side: int, stretch: str, dtype):
        self.root, self.files, self.channels, self.side = Path(root), files, channels, side
        self.stretch, self.dtype = stretch, dtype

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        try:
            img = read_image(self.root / self.files[index], self.channels, self.stretch)
        except UNREADABLE_ERRORS as err:
            log.warning("skipping unreadable image %s (%s)", self.root / self.files[index], err)
            return None, index
        if isinstance(img, torch.Tensor):
            top = DEEP_MAX if self.dtype == np.uint16 else 255
            return resize_unit(img, self.side).mul(top).round().clamp(0, top).numpy().astype(self.dtype), index
        pixels = picture_bands(img.resize((self.side, self.side), Image.Resampling.BILINEAR))
        return (pixels.astype(np.uint16) * PICTURE_TO_DEEP if self.dtype == np.uint16 else pixels), index


def keep_as_list(batch):
    return batch


def decoded_cache(root, files, channels: int, side: int, cache_dir: Path, workers: int,
                  stretch: str = "auto"):
    """(images memmap (n, channels, side, side) uint8 or uint16, readable mask), built on first use."""
    dtype = cache_dtype(root, files, channels, stretch)
    meta = {"data_dir": str(Path(root).resolve()), "data_sha256": data_digest(root, files),
            "n_files": len(files), "channels": channels, "side": side, "stretch": stretch,
            "dtype": np.dtype(dtype).name}
    meta_path = cache_dir / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        log.info("reusing decoded images in %s", cache_dir)
        return np.load(cache_dir / "images.npy", mmap_mode="r"), np.load(cache_dir / "readable.npy")
    if meta_path.is_file():
        meta_path.unlink()
    log.info("decoding %d images once into %s (%d x %d px, %s)", len(files), cache_dir, side, side,
             np.dtype(dtype).name)
    readable = np.zeros(len(files), dtype=bool)
    loader = DataLoader(Decode(root, files, channels, side, stretch, dtype), batch_size=DECODE_BATCH, num_workers=workers,
                        collate_fn=keep_as_list)
    with atomic_path(cache_dir / "images.npy") as tmp:
        images = new_memmap(tmp, dtype, (len(files), channels, side, side))
        for batch in progress(loader, total=len(loader), desc="decoding", unit="batches"):
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
    """Items of the cache for per-image augmentation: (transform(image), index), the image as a
    PIL picture for 8-bit 1- or 3-channel data, else as a float tensor in [0, 1]."""

    def __init__(self, images, rows, transform):
        self.images, self.rows, self.transform = images, rows, transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        pixels = np.array(self.images[self.rows[i]])  # a copy: workers never hand out views of the map
        if pixels.dtype != np.uint8 or len(pixels) not in (1, 3):
            return self.transform(unit_tensor(torch.from_numpy(pixels))), i
        img = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
        return self.transform(img), i


class CachedBatches(Dataset):
    """Whole batches of the cache for augmentation on the training device: item `positions` (a
    list, from a BatchSampler) is (stored pixels (n, channels, side, side), positions, the
    augmentation parameters of two views), the pixels read from the memory map in one sorted
    gather. The parameters are drawn here, in a loader worker, so they reach the device with
    the pixels (pinned, in one transfer)."""

    def __init__(self, images, rows, augment):
        self.images, self.rows, self.augment = images, np.asarray(rows), augment

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions):
        positions = np.sort(np.asarray(positions))
        pixels = torch.from_numpy(self.images[self.rows[positions]])
        views = [self.augment.draw(len(positions), *pixels.shape[-2:]) for _ in range(2)]
        return pixels, torch.from_numpy(positions), views
