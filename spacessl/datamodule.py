"""Training and validation batches for SSL_Train.py, three ways:

- default: each image decoded from its file and augmented on the CPU in loader workers (PIL,
  lightly.transforms);
- cache: decoded once into a uint8 memory-mapped array (cache.py), augmented as above;
- cache + batch_augment: uint8 batches go to the device as they are and are augmented there as
  whole batches (kornia), which keeps a GPU fed when CPU cores are few.

Batches reach the model as ((view0, view1), indices), in channels_last layout when asked.
"""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .cache import CachedImages, decoded_cache
from collate import batch_train_transform, train_transform
from .images import ImageFolder, collate_readable


class ArchiveData(pl.LightningDataModule):
    def __init__(self, root, train_files: list, val_files: list, channels: int, preset: str, input_size: int,
                 batch_size: int, workers: int, pin_memory: bool, channels_last: bool,
                 cache_dir=None, cache_side: int = 0, batch_augment: bool = False, stretch: str = "auto"):
        super().__init__()
        self.batch_size, self.workers, self.pin_memory = batch_size, workers, pin_memory
        self.channels_last, self.batch_augment = channels_last, batch_augment
        per_image = None if batch_augment else train_transform(preset, input_size, channels)
        self.augment = batch_train_transform(preset, input_size, channels) if batch_augment else None
        if cache_dir is None:
            self.train_set = ImageFolder(root, train_files, channels, per_image, stretch)
            self.val_set = ImageFolder(root, val_files, channels, per_image, stretch) if val_files else None
        else:
            files = sorted(train_files + val_files)
            images, readable = decoded_cache(root, files, channels, cache_side, cache_dir, workers, stretch)
            row = {name: i for i, name in enumerate(files)}

            def rows(names):
                return [row[name] for name in names if readable[row[name]]]
            self.train_set = CachedImages(images, rows(train_files), per_image)
            self.val_set = CachedImages(images, rows(val_files), per_image) if val_files else None

    def loader(self, dataset, shuffle: bool):
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                          # NT-Xent needs negatives: drop a ragged last batch unless it is the only one
                          drop_last=shuffle and len(dataset) > self.batch_size,
                          num_workers=self.workers, persistent_workers=self.workers > 0,
                          pin_memory=self.pin_memory, collate_fn=collate_readable)

    def train_dataloader(self):
        return self.loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self.loader(self.val_set, shuffle=False) if self.val_set is not None else []

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if batch is None:  # every image of the batch was unreadable
            return None
        if self.batch_augment:
            images, indices = batch
            images = images.float().div_(255)
            self.augment = self.augment.to(images.device)  # kornia keeps e.g. normalisation tensors
            views = (self.augment(images), self.augment(images))
        else:
            views, indices = batch
        if self.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        return tuple(views), indices
