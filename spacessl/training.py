"""Training a run: the train/validation split, resuming, the Lightning Trainer and its checkpoints,
and the collapse check at the end. SSL_Train.py turns its settings into these calls."""

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from .errors import UserError, require
from .knn_monitor import KNNMonitor
from .labels import match_labels, read_labels
from .methods import NN_BANK_SHARE, RECIPES, peak_lr
from .model import AtomicCheckpointIO, read_checkpoint

COLLAPSE_SHARE = 0.25  # the collapse monitor warns below this share of the healthy output std
# What a resumed run must share with its checkpoint for the weights to fit.
SHAPE_KEYS = ("method", "backbone", "in_channels", "proj_hidden_dim", "proj_out_dim", "pred_hidden_dim",
              "patch_size", "decoder_dim", "decoder_layers")


def recipe_values(method: str, *, lr: float, weight_decay: float, temperature: float, preset_temperature: float,
                  nn_bank_size: int, n_train: int, warmup_epochs: int, max_epochs: int, batch_size: int) -> dict:
    """What a run trains with: each setting as given, or where it asks for the default (0; a
    negative weight decay) the method's recipe (methods.RECIPES), the preset's temperature and an
    eighth of the training images as NNCLR's support set; the warm-up shortened to fit a short run."""
    recipe = RECIPES[method]
    lr = lr or recipe.base_lr
    return {"optimizer": recipe.optimizer, "base_lr": lr, "peak_lr": peak_lr(recipe, lr, batch_size),
            "weight_decay": weight_decay if weight_decay >= 0 else recipe.weight_decay,
            "temperature": temperature or preset_temperature,
            "nn_bank_size": nn_bank_size or max(1, n_train // NN_BANK_SHARE),
            "warmup_epochs": min(warmup_epochs, max(0, max_epochs - 1))}


def split_files(files: list, val_fraction: float, seed: int):
    """A seeded random train/validation split (the same on every resume)."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = math.ceil(val_fraction * len(files)) if val_fraction > 0 else 0
    n_val = min(n_val, len(files) - 1)
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def check_resume_matches(checkpoint: Path, model) -> None:
    """Refuse to resume into a differently shaped network (the weights would not fit)."""
    saved = read_checkpoint(checkpoint)["hyper_parameters"]
    for key in SHAPE_KEYS:
        if saved.get(key) != model.hparams[key]:
            raise UserError(f"cannot resume {checkpoint.parent}: it was trained with {key}={saved.get(key)!r}, "
                            f"now {key}={model.hparams[key]!r}; use the run's config.json settings")


def save_untrained(model, run_dir: Path) -> None:
    """No training (MAX_EPOCHS=0): the start weights as the run's best.ckpt and last.ckpt, to search
    with as they are."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": 0,
                  "global_step": 0, "pytorch-lightning_version": pl.__version__}
    for name in ("best.ckpt", "last.ckpt"):
        AtomicCheckpointIO().save_checkpoint(checkpoint, run_dir / name)
    print(f"MAX_EPOCHS=0: saved the start weights untrained as {run_dir / 'best.ckpt'} and last.ckpt\n"
          f"next: python SSL_Evaluate.py --RUN={run_dir} --QUERY=<image file name>")


def knn_monitor(data_dir, train_files: list, val_files: list, *, labels: str, id_column: str, class_column: str,
                merge_classes: str, k: int, batch_size: int, workers: int) -> KNNMonitor:
    """The kNN monitor over the labelled images of each split (labels: a CSV, labels.py)."""
    table = read_labels(labels, id_column, class_column, merge_classes)
    splits = []
    for files in (train_files, val_files):
        indices, classes = match_labels(table, files, labels) if files else ([], [])
        splits.append({files[i]: c for i, c in zip(indices, classes)})
    require(len(splits[1]) > 0, f"--LABELS={labels}: no labelled image in the validation split "
                                f"to monitor; raise --VAL_FRACTION or drop --LABELS")
    return KNNMonitor(data_dir, splits[0], splits[1], k, batch_size, workers)


def fit(model, data, run_dir: Path, *, max_epochs: int, accelerator: str, precision: str, devices: int,
        num_nodes: int, log_every_n_steps: int, validate: bool, resume_from=None, callbacks=()) -> None:
    """Train with Lightning into run_dir: best.ckpt (lowest validation loss, or training loss
    without a validation split), last.ckpt after every epoch, logs/version_N/metrics.csv; then
    report the collapse monitor and the next step."""
    if resume_from:
        check_resume_matches(resume_from, model)
    monitor = "val_loss" if validate else "train_loss_epoch"
    best = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                           auto_insert_metric_name=False)
    # A saver of its own for last.ckpt (no monitor: each epoch's replaces the one before): Lightning
    # 2.6's save_last writes it only in epochs that also write best.ckpt, so once the validation
    # loss stops falling a crash would lose every epoch since, and --RESUME would repeat them.
    last = ModelCheckpoint(dirpath=run_dir, filename="last", save_top_k=1, enable_version_counter=False)
    distributed = devices * num_nodes > 1
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        # Batch-norm statistics over the global batch, as in SimCLR's "global BN" (section B.9);
        # PyTorch's SyncBatchNorm runs on GPUs only, so CPU processes (tests) keep their own.
        strategy="ddp" if distributed else "auto", sync_batchnorm=distributed and accelerator == "gpu",
        callbacks=[best, last, LearningRateMonitor(logging_interval="epoch"), *callbacks],
        logger=CSVLogger(run_dir, name="logs"), plugins=[AtomicCheckpointIO()],
        log_every_n_steps=log_every_n_steps, enable_model_summary=False)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1) after its clean-up
            raise KeyboardInterrupt from None
        raise
    if trainer.global_rank != 0:
        return
    std = trainer.callback_metrics.get("val_output_std" if validate else "train_output_std")
    healthy = 1 / math.sqrt(model.objective.output_dim)
    if std is not None:
        print(f"collapse monitor: output std {float(std):.4f} (healthy ~{healthy:.4f}, collapsed 0)")
        if float(std) < COLLAPSE_SHARE * healthy:
            print("warning: the outputs are nearly collapsed (all images map close to one point): train "
                  "longer (--MAX_EPOCHS), or lower --LR, or try --METHOD=simclr, whose negatives keep "
                  "images apart (SimSiam paper, Chen & He 2021, sec. 4.1)")
    print(f"best checkpoint: {best.best_model_path}\nlast checkpoint: {last.best_model_path}")
    print(f"next: python SSL_Evaluate.py --RUN={run_dir} --QUERY=<image file name>")
