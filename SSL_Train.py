"""Train a self-supervised model (SimCLR, SimSiam, BYOL, NNCLR, DINO or MAE) on a folder of images, without labels.

Usage:
    python SSL_Train.py                                   # the settings below (OATH on a GPU)
    python SSL_Train.py --DATA_DIR=data/sample/galaxies --AUGMENTATION=astro --INPUT_SIZE=64
    python SSL_Train.py --RUN_NAME=try1 --RESUME=True     # continue from checkpoints/try1/last.ckpt
    python SSL_Train.py --METHOD=mae --BACKBONE=vit_small --PATCH_SIZE=16

Edit the hyperparameters below or override any of them as --NAME=value (see --help).
Everything the run writes goes to checkpoints/<RUN_NAME>/ (by default <data folder>_<method>): config.json, best.ckpt (lowest
validation loss), last.ckpt, and logs/version_N/metrics.csv.
"""

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from collate import preset_kwargs, preset_method, preset_name, preset_temperature
from spacessl.config import UserError, format_config, require, resolve_config, run_main, usage, wants_help, write_json
from spacessl.datamodule import PIPELINES, ArchiveData
from spacessl.hardware import lightning_precision
from spacessl.images import STRETCHES, detect_channels, find_images, loader_workers
from spacessl.knn_monitor import KNNMonitor
from spacessl.labels import match_labels, read_labels
from spacessl.methods import NN_BANK_SHARE, RECIPES, peak_lr
from spacessl.model import (BACKBONES, VITS, AtomicCheckpointIO, SSLModel, load_start_weights, read_checkpoint,
                            start_weights)
from spacessl.runs import training_data_dir

# ---- hyperparameters --------------------------------------------------------------------------
DATA_DIR = "data/oath/images/cropped_scaled"  # folder of images, searched recursively (png, jpg, tif, bmp, fits, npy, pgm)
RUN_NAME = ""                    # run folder name under CHECKPOINT_DIR; "" = <data folder>_<method> (plus the time
                                # when that is taken); an existing folder is never overwritten
CHECKPOINT_DIR = "checkpoints"  # where run folders live
RESUME = False                  # True: continue the run RUN_NAME from its last.ckpt
METHOD = "auto"                 # self-supervised objective (methods.py): simclr | simsiam | byol | nnclr | dino | mae;
                                # auto = AUGMENTATION's preset's (collate.METHODS: dino for astro from 2,000 training
                                # images on, simclr below and for the other presets)
AUGMENTATION = "allsky"         # augmentation preset in collate.py: allsky | astro | radio | natural, optionally with
                                # changes for a trial, e.g. "astro:min_scale=0.2,gaussian_blur=0,noise=0.05"
BACKBONE = "resnet18"           # resnet18 | resnet34 | resnet50 | vit_tiny | vit_small | vit_base (mae needs a vit)
INIT = "none"                   # the backbone's start: none (random) | imagenet (torchvision's weights for the resnets,
                                # fetched once into torch's cache; needs network) | path of a weights file (a state
                                # dict, or another run's .ckpt: continue on a new archive from an earlier one)
CHANNELS = 0                    # model input channels: 0 = from the data (1 if all grey, 3 if colour, N for N-band arrays)
STRETCH = "auto"                # pixel values -> [0, 1], per image, all bands on one scale (images.py):
                                # auto (8-bit as is, deeper data percentile) | none (integers / type max, floats
                                # as is) | percentile (0.5-99.5 % clip) | asinh (after the clip) | log (after the clip)
INPUT_SIZE = 128                # px, side of the square crops the network sees (OATH images are 150 px)
BATCH_SIZE = 256                # images per step per device (each gives two views)
MAX_EPOCHS = 100                # passes over the training split; 0 = no training: the INIT weights are saved as the
                                # run's checkpoints, to search with them as they are
WARMUP_EPOCHS = 10              # epochs of linear learning-rate warm-up; shortened (with a note) to fit a short run
LR = 0.0                        # base learning rate, scaled by batch size as METHOD's recipe says; 0 = the
                                # recipe's (methods.py: simclr 0.075 LARS x sqrt(bs), simsiam 0.05 SGD,
                                # byol 0.2 LARS, nnclr 0.3 LARS, dino 0.03 SGD, mae 1.5e-4 AdamW, the last five x bs/256)
WEIGHT_DECAY = -1.0             # on conv/linear weights; < 0 = the recipe's (1e-6, 5e-4, 1.5e-6, 1e-6, 1e-4, 0.05)
TEMPERATURE = 0.0               # simclr/nnclr: NT-Xent temperature, > 0; 0 = AUGMENTATION's preset's (collate.TEMPERATURES:
                                # 0.2 for radio and astro, 0.5 for the others; docs/quality.md, "Retrieval quality")
PROJ_HIDDEN_DIM = 512           # simclr/simsiam/byol/nnclr/dino: projection head hidden width
PROJ_OUT_DIM = 128              # simclr/simsiam/byol/nnclr: projection output width, where the loss is computed;
                                # dino: the bottleneck before its prototypes (methods.DINO_PROTOTYPES)
PRED_HIDDEN_DIM = 128           # simsiam/byol/nnclr: prediction head hidden width (SimSiam's bottleneck: out/4)
MOMENTUM_START = 0.996          # byol/dino: target (teacher) momentum at the start, rising to 1 (BYOL sec. 3.2)
NN_BANK_SIZE = 0                # nnclr: support set, the recent training embeddings positives are looked up in;
                                # 0 = the training images / methods.NN_BANK_SHARE (an eighth)
PATCH_SIZE = 16                 # vit backbones: px side of a patch; must divide INPUT_SIZE
MASK_RATIO = 0.75               # mae: share of patches hidden from the encoder, in (0, 1) (MAE paper: 0.75)
DECODER_DIM = 256               # mae: decoder width (the MAE paper's is 512; smaller suits small data)
DECODER_LAYERS = 4              # mae: decoder transformer blocks (MAE paper: 8; 1 already works, table 1a)
VAL_FRACTION = 0.1              # share of images held out for validation loss, in [0, 0.5)
NUM_WORKERS = -1                # data-loading processes: -1 = one per CPU core (capped) | 0 = in-process
ACCELERATOR = "auto"            # auto (GPU if present) | gpu | cpu
DEVICES = 1                     # GPUs (or CPU processes) per node; > 1 trains with DDP
NUM_NODES = 1                   # machines, for multi-node (e.g. SLURM) runs
COMPILE = False                 # torch.compile the backbone: faster steps on a GPU after a slow first one
PIPELINE = "auto"               # how images reach the model (spacessl/datamodule.py): auto (device on a GPU,
                                # decode on the CPU) | decode (every epoch, augmented per image in CPU workers)
                                # | cache (decoded once into the run folder, augmented per image) | device
                                # (decoded once, whole batches augmented on the training device)
CACHE_SIZE = 256                # cache and device: px side of the decoded images, >= INPUT_SIZE (crops are cut
                                # from them); disk: images x channels x CACHE_SIZE^2 bytes (x2 for 16-bit data)
SEED = 42                       # seeds the split, initialisation and augmentations
LABELS = ""                     # optional CSV (id, class) for the online kNN monitor; "" = none. Never used in the loss
ID_COLUMN = ""                  # labels column naming the image (path, file name, stem or number); "" = auto
CLASS_COLUMN = ""               # labels column with the class; "" = auto (class, label, class6, ...)
MERGE_CLASSES = ""              # classes scored as one, "a+b" or "a+b;c+d" (e.g. "1+2": both spiral windings)
KNN_K = 20                      # neighbours voting in the kNN monitor
LOG_EVERY_N_STEPS = 10          # training steps between rows of logs/version_N/metrics.csv
# -----------------------------------------------------------------------------------------------

RUN_NAME_VARIABLE = "SPACESSL_RUN_NAME"  # the default run name chosen by rank 0, for the other DDP ranks
COLLAPSE_SHARE = 0.25  # the collapse monitor warns below this share of the healthy output std


def method_of(cfg: dict, images: int) -> str:
    """METHOD, or with METHOD=auto the AUGMENTATION preset's method for this many training images."""
    return preset_method(cfg["AUGMENTATION"], images) if cfg["METHOD"] == "auto" else cfg["METHOD"]


def check_config(cfg: dict) -> None:
    try:
        preset_kwargs(cfg["AUGMENTATION"])
    except ValueError as err:
        raise UserError(f"--AUGMENTATION={cfg['AUGMENTATION']}: {err}") from None
    require(cfg["METHOD"] in ("auto", *RECIPES), f"--METHOD={cfg['METHOD']}: choose auto, {', '.join(RECIPES)}")
    require(cfg["BACKBONE"] in BACKBONES,
            f"--BACKBONE={cfg['BACKBONE']}: choose one of {', '.join(BACKBONES)}")
    require(cfg["METHOD"] != "mae" or cfg["BACKBONE"] in VITS,
            f"--METHOD=mae masks patches, so it needs a ViT: --BACKBONE={' or '.join(VITS)}")
    require(cfg["BACKBONE"] not in VITS or (cfg["PATCH_SIZE"] >= 1 and cfg["INPUT_SIZE"] % cfg["PATCH_SIZE"] == 0),
            f"--PATCH_SIZE={cfg['PATCH_SIZE']} must divide --INPUT_SIZE={cfg['INPUT_SIZE']} for a ViT")
    require(cfg["CHANNELS"] >= 0, f"--CHANNELS={cfg['CHANNELS']}: 0 (from the data) or a channel count")
    require(cfg["STRETCH"] in STRETCHES, f"--STRETCH={cfg['STRETCH']}: choose one of {', '.join(STRETCHES)}")
    require(cfg["MAX_EPOCHS"] >= 0, f"--MAX_EPOCHS={cfg['MAX_EPOCHS']}: 0 (save the INIT weights) or more")
    require(cfg["WARMUP_EPOCHS"] >= 0, f"--WARMUP_EPOCHS={cfg['WARMUP_EPOCHS']}: must be >= 0")
    for name in ("INPUT_SIZE", "BATCH_SIZE", "PROJ_HIDDEN_DIM", "PROJ_OUT_DIM",
                 "PRED_HIDDEN_DIM", "DECODER_DIM", "DECODER_LAYERS", "DEVICES", "NUM_NODES", "KNN_K"):
        require(cfg[name] >= 1, f"--{name}={cfg[name]}: must be at least 1")
    require(0 < cfg["MASK_RATIO"] < 1, f"--MASK_RATIO={cfg['MASK_RATIO']}: must be in (0, 1)")
    require(0 <= cfg["MOMENTUM_START"] <= 1, f"--MOMENTUM_START={cfg['MOMENTUM_START']}: must be in [0, 1]")
    require(cfg["NN_BANK_SIZE"] >= 0, f"--NN_BANK_SIZE={cfg['NN_BANK_SIZE']}: 0 (auto) or a number of embeddings")
    require(cfg["LR"] >= 0 and cfg["TEMPERATURE"] >= 0,
            "--LR and --TEMPERATURE must be >= 0 (0 = the method's rate, the preset's temperature)")
    require(0 <= cfg["VAL_FRACTION"] < 0.5, f"--VAL_FRACTION={cfg['VAL_FRACTION']}: must be in [0, 0.5)")
    require(cfg["NUM_WORKERS"] >= -1, f"--NUM_WORKERS={cfg['NUM_WORKERS']}: -1 (auto), 0 or more")
    require(cfg["ACCELERATOR"] in ("auto", "gpu", "cpu"),
            f"--ACCELERATOR={cfg['ACCELERATOR']}: choose auto, gpu or cpu")
    require(cfg["CACHE_SIZE"] >= cfg["INPUT_SIZE"], f"--CACHE_SIZE={cfg['CACHE_SIZE']}: must be >= INPUT_SIZE")
    require(cfg["PIPELINE"] in ("auto", *PIPELINES),
            f"--PIPELINE={cfg['PIPELINE']}: choose auto, {', '.join(PIPELINES)}")
    require("/" not in cfg["RUN_NAME"] and cfg["RUN_NAME"] not in (".", ".."),
            f"--RUN_NAME={cfg['RUN_NAME']!r}: give a plain folder name")
    require(cfg["RUN_NAME"] or not cfg["RESUME"], "--RESUME=True: name the run to continue with --RUN_NAME=<its folder>")


def run_name(cfg: dict, method: str) -> str:
    """RUN_NAME, or by default <data folder>_<method>, with the time added when that folder is
    taken. Under DDP the other ranks start after rank 0 made the folder: they take its choice."""
    if cfg["RUN_NAME"]:
        return cfg["RUN_NAME"]
    if rank_zero_only.rank != 0:
        return os.environ[RUN_NAME_VARIABLE]
    name = f"{Path(cfg['DATA_DIR']).resolve().name}_{method}"
    if (Path(cfg["CHECKPOINT_DIR"]) / name).exists():
        name += time.strftime("-%Y%m%d-%H%M%S")
    os.environ[RUN_NAME_VARIABLE] = name  # inherited by the DDP ranks Lightning starts
    return name


def preset_hint(preset: str, channels: int) -> str:
    """A note when the images look unlike what the augmentation preset was made for, else ""."""
    name = preset_name(preset)
    if channels == 1 and name in ("astro", "natural"):
        return (f"note: the images are grey, --AUGMENTATION={name} was made for colour pictures; for all-sky "
                f"frames use allsky, for radio cutouts radio")
    if channels == 3 and name in ("allsky", "radio"):
        return (f"note: the images are in colour, --AUGMENTATION={name} was made for grey {name} images; for "
                f"galaxy or sky-survey cutouts use astro, for everyday photographs natural")
    return ""


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Create the run folder; never reuse a finished or running one unless resuming it. A run
    stopped before its first checkpoint has nothing to continue, so --RESUME=True starts it again
    from epoch 0 in the same folder."""
    started = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if resume_checkpoint(run_dir):
            return
        if not (run_dir / "config.json").is_file():
            raise UserError(f"cannot resume: {run_dir} holds no run (no config.json, no last.ckpt); "
                            f"drop --RESUME=True to start run {run_dir.name!r}")
        print(f"{run_dir} holds no checkpoint (the run stopped during its first epoch): starting it again")
        return
    if started:
        stopped_early = (run_dir / "config.json").is_file() and not resume_checkpoint(run_dir)
        hint = ("it holds no checkpoint yet (stopped during its first epoch?): pass --RESUME=True to start "
                "it again" if stopped_early else "pass --RESUME=True to continue it")
        raise UserError(f"run folder {run_dir} already exists; {hint}, or choose another --RUN_NAME")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write the run folder {run_dir} ({err.strerror}); choose a writable "
                        f"--CHECKPOINT_DIR") from None


def split_files(files: list, val_fraction: float, seed: int):
    """A seeded random train/validation split (the same on every resume)."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = math.ceil(val_fraction * len(files)) if val_fraction > 0 else 0
    n_val = min(n_val, len(files) - 1)
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def choose_hardware(cfg: dict):
    """(accelerator, precision): spacessl/hardware.py's policy (bf16 mixed on GPUs that support it)."""
    has_gpu = torch.cuda.is_available()
    if cfg["ACCELERATOR"] == "gpu" and not has_gpu:
        raise UserError("--ACCELERATOR=gpu but PyTorch sees no CUDA GPU; use --ACCELERATOR=auto or cpu")
    if cfg["ACCELERATOR"] == "cpu" or not has_gpu:
        if cfg["ACCELERATOR"] == "auto":
            print("no CUDA GPU found: training on the CPU (fine for the demo, slow for OATH)")
        return "cpu", "32-true"
    return "gpu", lightning_precision("cuda")


def resume_checkpoint(run_dir: Path):
    """The checkpoint to continue from: last.ckpt, else best.ckpt (a save of last.ckpt that failed,
    e.g. on a full disk, leaves best.ckpt), else None (the run stopped before its first)."""
    return next((run_dir / name for name in ("last.ckpt", "best.ckpt") if (run_dir / name).is_file()), None)


def check_resume_matches(checkpoint: Path, model) -> None:
    """Refuse to resume into a differently shaped network (the weights would not fit)."""
    run_dir = checkpoint.parent
    saved = read_checkpoint(checkpoint)["hyper_parameters"]
    for key in ("method", "backbone", "in_channels", "proj_hidden_dim", "proj_out_dim", "pred_hidden_dim",
                "patch_size", "decoder_dim", "decoder_layers"):
        if saved.get(key) != model.hparams[key]:
            raise UserError(f"cannot resume {run_dir}: it was trained with {key}={saved.get(key)!r}, "
                            f"now {key}={model.hparams[key]!r}; use the run's config.json settings")


def save_untrained(model, run_dir: Path) -> None:
    """MAX_EPOCHS=0: the start weights as the run's best.ckpt and last.ckpt, to search with as they are."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": 0,
                  "global_step": 0, "pytorch-lightning_version": pl.__version__}
    for name in ("best.ckpt", "last.ckpt"):
        AtomicCheckpointIO().save_checkpoint(checkpoint, run_dir / name)
    print(f"MAX_EPOCHS=0: saved the start weights untrained as {run_dir / 'best.ckpt'} and last.ckpt\n"
          f"next: python SSL_Evaluate.py --RUN={run_dir} --QUERY=<image file name>")


def knn_monitor(cfg: dict, train_files: list, val_files: list, workers: int) -> KNNMonitor:
    """The kNN monitor over the labelled images of each split."""
    labels = read_labels(cfg["LABELS"], cfg["ID_COLUMN"], cfg["CLASS_COLUMN"], cfg["MERGE_CLASSES"])
    splits = []
    for files in (train_files, val_files):
        indices, classes = match_labels(labels, files, cfg["LABELS"]) if files else ([], [])
        splits.append({files[i]: c for i, c in zip(indices, classes)})
    require(len(splits[1]) > 0, f"--LABELS={cfg['LABELS']}: no labelled image in the validation split "
                                f"to monitor; raise --VAL_FRACTION or drop --LABELS")
    return KNNMonitor(cfg["DATA_DIR"], splits[0], splits[1], cfg["KNN_K"], cfg["BATCH_SIZE"], workers)


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    check_config(cfg)
    earlier = Path(cfg["CHECKPOINT_DIR"]) / cfg["RUN_NAME"]
    if cfg["RESUME"] and (earlier / "config.json").is_file() and not any(a.startswith("--DATA_DIR=") for a in argv):
        cfg["DATA_DIR"] = str(training_data_dir(earlier))  # a resumed run goes on with its own images
    files = find_images(cfg["DATA_DIR"])
    channels = cfg["CHANNELS"] or detect_channels(cfg["DATA_DIR"], files)
    hint = preset_hint(cfg["AUGMENTATION"], channels)
    if hint and rank_zero_only.rank == 0:
        print(hint)
    train_files, val_files = split_files(files, cfg["VAL_FRACTION"], cfg["SEED"])
    workers = loader_workers(cfg["NUM_WORKERS"])
    accelerator, precision = choose_hardware(cfg)
    pipeline = cfg["PIPELINE"] if cfg["PIPELINE"] != "auto" else "device" if accelerator == "gpu" else "decode"
    method = method_of(cfg, len(train_files))
    recipe = RECIPES[method]
    lr = cfg["LR"] or recipe.base_lr
    weight_decay = cfg["WEIGHT_DECAY"] if cfg["WEIGHT_DECAY"] >= 0 else recipe.weight_decay
    temperature = cfg["TEMPERATURE"] or preset_temperature(cfg["AUGMENTATION"])
    nn_bank_size = cfg["NN_BANK_SIZE"] or max(1, len(train_files) // NN_BANK_SHARE)
    warmup = min(cfg["WARMUP_EPOCHS"], max(0, cfg["MAX_EPOCHS"] - 1))
    if warmup < cfg["WARMUP_EPOCHS"] and cfg["MAX_EPOCHS"] > 0:
        print(f"note: --WARMUP_EPOCHS={cfg['WARMUP_EPOCHS']} is not below MAX_EPOCHS={cfg['MAX_EPOCHS']}: "
              f"warming up for {warmup} epoch(s)")
    resolved = {"data_dir": str(Path(cfg["DATA_DIR"]).resolve()), "method": method, "channels": channels,
                "n_train": len(train_files), "n_val": len(val_files), "num_workers": workers,
                "accelerator": accelerator, "precision": precision, "pipeline": pipeline, "optimizer": recipe.optimizer,
                "base_lr": lr, "peak_lr": peak_lr(recipe, lr, cfg["BATCH_SIZE"]), "weight_decay": weight_decay,
                "temperature": temperature, "nn_bank_size": nn_bank_size, "warmup_epochs": warmup}
    run_dir = Path(cfg["CHECKPOINT_DIR"]) / run_name(cfg, method)
    resume_from = resume_checkpoint(run_dir) if cfg["RESUME"] else None
    # Under DDP every rank runs this script; only rank 0 claims the folder and writes the config.
    if rank_zero_only.rank == 0:
        prepare_run_dir(run_dir, cfg["RESUME"])
        print(f"run folder: {run_dir}\nhyperparameters:\n{format_config(cfg)}\n"
              f"resolved:\n{format_config(resolved)}")
        name = f"config.resume{len(list(run_dir.glob('config*.json')))}.json" if resume_from else "config.json"
        write_json(run_dir / name, {"hyperparameters": cfg, "resolved": resolved})

    # The folder holds our config.json; prepare_run_dir already refused any folder from another run.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    pl.seed_everything(cfg["SEED"], workers=True, verbose=False)
    data = ArchiveData(cfg["DATA_DIR"], train_files, val_files, channels, cfg["AUGMENTATION"], cfg["INPUT_SIZE"],
                       cfg["BATCH_SIZE"], workers, pin_memory=accelerator == "gpu",
                       channels_last=accelerator == "gpu", pipeline=pipeline, cache_dir=run_dir / "cache",
                       cache_side=cfg["CACHE_SIZE"], stretch=cfg["STRETCH"])
    model = SSLModel(method=method, backbone=cfg["BACKBONE"], in_channels=channels,
                     input_size=cfg["INPUT_SIZE"], augmentation=cfg["AUGMENTATION"], stretch=cfg["STRETCH"],
                     proj_hidden_dim=cfg["PROJ_HIDDEN_DIM"], proj_out_dim=cfg["PROJ_OUT_DIM"],
                     pred_hidden_dim=cfg["PRED_HIDDEN_DIM"], temperature=temperature,
                     momentum_start=cfg["MOMENTUM_START"], nn_bank_size=nn_bank_size, patch_size=cfg["PATCH_SIZE"],
                     mask_ratio=cfg["MASK_RATIO"], decoder_dim=cfg["DECODER_DIM"],
                     decoder_layers=cfg["DECODER_LAYERS"], lr=lr, weight_decay=weight_decay,
                     warmup_epochs=warmup, max_epochs=cfg["MAX_EPOCHS"],
                     batch_size=cfg["BATCH_SIZE"])
    if cfg["INIT"] != "none" and not resume_from:
        load_start_weights(model, start_weights(cfg["INIT"], cfg["BACKBONE"]), cfg["INIT"])
    if cfg["MAX_EPOCHS"] == 0:
        if rank_zero_only.rank == 0:
            save_untrained(model, run_dir)
        return
    if accelerator == "gpu":
        # NHWC layout lets cuDNN use tensor-core convolutions directly (PyTorch's channels_last guide).
        model = model.to(memory_format=torch.channels_last)
    if cfg["COMPILE"]:
        model.backbone.compile()  # in place: checkpoint keys stay the same
    if resume_from:
        check_resume_matches(resume_from, model)
    callbacks = [LearningRateMonitor(logging_interval="epoch")]
    if cfg["LABELS"]:
        callbacks.append(knn_monitor(cfg, train_files, val_files, workers))
    monitor = "val_loss" if val_files else "train_loss_epoch"
    best = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                           auto_insert_metric_name=False)
    # A saver of its own for last.ckpt (no monitor: each epoch's replaces the one before): Lightning
    # 2.6's save_last writes it only in epochs that also write best.ckpt, so once the validation
    # loss stops falling a crash would lose every epoch since, and --RESUME would repeat them.
    last = ModelCheckpoint(dirpath=run_dir, filename="last", save_top_k=1, enable_version_counter=False)
    distributed = cfg["DEVICES"] * cfg["NUM_NODES"] > 1
    trainer = pl.Trainer(
        max_epochs=cfg["MAX_EPOCHS"], accelerator=accelerator, devices=cfg["DEVICES"],
        num_nodes=cfg["NUM_NODES"], precision=precision,
        # Batch-norm statistics over the global batch, as in SimCLR's "global BN" (section B.9);
        # PyTorch's SyncBatchNorm runs on GPUs only, so CPU processes (tests) keep their own.
        strategy="ddp" if distributed else "auto", sync_batchnorm=distributed and accelerator == "gpu",
        callbacks=[best, last, *callbacks],
        logger=CSVLogger(run_dir, name="logs"), plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg["LOG_EVERY_N_STEPS"], enable_model_summary=False)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1) after its clean-up
            raise KeyboardInterrupt from None
        raise

    if trainer.global_rank == 0:
        std = trainer.callback_metrics.get("val_output_std" if val_files else "train_output_std")
        healthy = 1 / math.sqrt(model.objective.output_dim)
        if std is not None:
            print(f"collapse monitor: output std {float(std):.4f} (healthy ~{healthy:.4f}, collapsed 0)")
            if float(std) < COLLAPSE_SHARE * healthy:
                print("warning: the outputs are nearly collapsed (all images map close to one point): train "
                      "longer (--MAX_EPOCHS), or lower --LR, or try --METHOD=simclr, whose negatives keep "
                      "images apart (SimSiam paper, Chen & He 2021, sec. 4.1)")
        print(f"best checkpoint: {best.best_model_path}\nlast checkpoint: {last.best_model_path}")
        print(f"next: python SSL_Evaluate.py --RUN={run_dir} --QUERY=<image file name>")


if __name__ == "__main__":
    run_main(main)
