"""Training and validation batches for SSL_Train.py, by one of three pipelines (PIPELINES):

- decode: each image decoded from its file and augmented on the CPU in loader workers (PIL,
  lightly.transforms), every epoch;
- cache: decoded once into a memory-mapped array (cache.py), augmented per image as above;
- device: decoded once as in `cache`; whole batches of stored pixels go to the training device
  as they are, with augmentation parameters drawn in the loader workers (pinned, one
  transfer), and are augmented there (augment.BatchAugment), so the CPU only gathers rows of
  the array and never waits for the GPU. Measured on an H100 (docs/performance.md): the per-image
  pipelines feed a resnet18 a fraction of what it can take; this one is the default on a GPU.

Batches reach the model as ((view0, view1), indices), in channels_last layout when asked.
"""

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from .cache import CachedBatches, CachedImages, decoded_cache
from .images import ImageFolder, collate_readable, unit_tensor

PIPELINES = ("decode", "cache", "device")


class ArchiveData(pl.LightningDataModule):
    """per_image: an image -> [view0, view1] transform (collate.train_transform), used by the
    decode and cache pipelines; augment: a BatchAugment, used by the device pipeline. The script
    builds both from the user's preset, so the package never reads the presets itself."""

    def __init__(self, root, train_files: list, val_files: list, channels: int, per_image, augment,
                 batch_size: int, workers: int, pin_memory: bool, channels_last: bool, pipeline: str = "decode",
                 cache_dir=None, cache_side: int = 0, stretch: str = "auto"):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
        self.batch_size, self.workers, self.pin_memory = batch_size, workers, pin_memory
        self.channels_last, self.pipeline = channels_last, pipeline
        self.augment = augment if pipeline == "device" else None
        per_image = per_image if pipeline != "device" else None
        if pipeline == "decode":
            self.train_set = ImageFolder(root, train_files, channels, per_image, stretch)
            self.val_set = ImageFolder(root, val_files, channels, per_image, stretch) if val_files else None
            return
        files = sorted(train_files + val_files)
        images, readable = decoded_cache(root, files, channels, cache_side, cache_dir, workers, stretch)
        row = {name: i for i, name in enumerate(files)}

        def rows(names):
            return [row[name] for name in names if readable[row[name]]]

        def dataset(names):
            if not names:
                return None
            return CachedImages(images, rows(names), per_image) if per_image else \
                CachedBatches(images, rows(names), self.augment)
        self.train_set, self.val_set = dataset(train_files), dataset(val_files)

    def loader(self, dataset, shuffle: bool):
        # NT-Xent needs negatives: drop a ragged last batch unless it is the only one
        drop_last = shuffle and len(dataset) > self.batch_size
        common = dict(num_workers=self.workers, persistent_workers=self.workers > 0, pin_memory=self.pin_memory)
        if isinstance(dataset, CachedBatches):
            order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
            return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, self.batch_size, drop_last),
                              **common)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last,
                          collate_fn=collate_readable, **common)

    def train_dataloader(self):
        return self.loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self.loader(self.val_set, shuffle=False) if self.val_set is not None else []

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if batch is None:  # every image of the batch was unreadable
            return None
        if self.pipeline == "device":
            pixels, indices, params = batch
            images = unit_tensor(pixels)
            views = tuple(self.augment.apply(images, view) for view in params)
        else:
            views, indices = batch
        if self.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        return tuple(views), indices
