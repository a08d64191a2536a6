"""Online kNN monitor: how well the current backbone separates labelled classes, each epoch.

With a labels file, SSL_Train.py embeds the labelled images of the training split (the bank)
and of the validation split after every validation epoch and logs val_knn_accuracy: the share
of labelled validation images whose cosine k-nearest bank images vote for the right class
(Wu et al. 2018; the monitor lightly's benchmarks use). Labels never reach the loss.
"""

import numpy as np
import pytorch_lightning as pl

from .embeddings import embed_images
from .metrics import knn_accuracy


class KNNMonitor(pl.Callback):
    def __init__(self, root, bank: dict, queries: dict, k: int, batch_size: int, num_workers: int):
        """bank, queries: {relative file name: class label}."""
        self.root, self.bank, self.queries, self.k = root, bank, queries, k
        self.batch_size, self.num_workers = batch_size, num_workers

    def embed(self, pl_module, labelled: dict):
        vectors, kept = embed_images(pl_module, self.root, sorted(labelled), self.batch_size,
                                     self.num_workers, pl_module.device)
        return vectors, np.array([labelled[name] for name in kept])

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        bank, bank_labels = self.embed(pl_module, self.bank)
        queries, query_labels = self.embed(pl_module, self.queries)
        accuracy = knn_accuracy(bank, bank_labels, queries, query_labels, self.k)
        pl_module.log("val_knn_accuracy", accuracy, prog_bar=True, rank_zero_only=True)
