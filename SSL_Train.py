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

import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from collate import batch_augment, preset_hint, preset_kwargs, preset_method, preset_temperature, preset_turned, train_transform
from spacessl.config import format_config, run_main, settings
from spacessl.errors import UserError, require
from spacessl.datamodule import PIPELINES, ArchiveData
from spacessl.hardware import lightning_accelerator, lightning_precision, pick_device
from spacessl.images import STRETCHES, detect_channels, find_images, loader_workers
from spacessl.methods import RECIPES
from spacessl.model import BACKBONES, VITS, SSLModel, load_start_weights, start_weights
from spacessl.runs import prepare_run_dir, resume_checkpoint, run_name, training_data_dir, write_run_config
from spacessl.training import fit, knn_monitor, recipe_values, save_untrained, split_files

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
DEVICE = "auto"                 # auto (GPU if present) | cpu | cuda
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
    require(cfg["CACHE_SIZE"] >= cfg["INPUT_SIZE"], f"--CACHE_SIZE={cfg['CACHE_SIZE']}: must be >= INPUT_SIZE")
    require(cfg["PIPELINE"] in ("auto", *PIPELINES),
            f"--PIPELINE={cfg['PIPELINE']}: choose auto, {', '.join(PIPELINES)}")
    require("/" not in cfg["RUN_NAME"] and cfg["RUN_NAME"] not in (".", ".."),
            f"--RUN_NAME={cfg['RUN_NAME']!r}: give a plain folder name")
    require(cfg["RUN_NAME"] or not cfg["RESUME"], "--RESUME=True: name the run to continue with --RUN_NAME=<its folder>")

def main(argv):
    cfg = settings(globals(), argv)
    check_config(cfg)
    earlier = Path(cfg["CHECKPOINT_DIR"]) / cfg["RUN_NAME"]
    if cfg["RESUME"] and (earlier / "config.json").is_file() and not any(a.startswith("--DATA_DIR=") for a in argv):
        cfg["DATA_DIR"] = str(training_data_dir(earlier))  # a resumed run goes on with its own images
    files = find_images(cfg["DATA_DIR"])
    channels = cfg["CHANNELS"] or detect_channels(cfg["DATA_DIR"], files)
    rank = rank_zero_only.rank
    if preset_hint(cfg["AUGMENTATION"], channels) and rank == 0:
        print(preset_hint(cfg["AUGMENTATION"], channels))
    train_files, val_files = split_files(files, cfg["VAL_FRACTION"], cfg["SEED"])
    workers = loader_workers(cfg["NUM_WORKERS"])
    device = pick_device(cfg["DEVICE"])
    if cfg["DEVICE"] == "auto" and device.type == "cpu" and rank == 0:
        print("no CUDA GPU found: training on the CPU (fine for the demo, slow for OATH)")
    accelerator, precision = lightning_accelerator(device), lightning_precision(device.type)
    pipeline = cfg["PIPELINE"] if cfg["PIPELINE"] != "auto" else "device" if device.type == "cuda" else "decode"
    method = preset_method(cfg["AUGMENTATION"], len(train_files)) if cfg["METHOD"] == "auto" else cfg["METHOD"]
    values = recipe_values(method, lr=cfg["LR"], weight_decay=cfg["WEIGHT_DECAY"], temperature=cfg["TEMPERATURE"],
                           preset_temperature=preset_temperature(cfg["AUGMENTATION"]), nn_bank_size=cfg["NN_BANK_SIZE"],
                           n_train=len(train_files), warmup_epochs=cfg["WARMUP_EPOCHS"],
                           max_epochs=cfg["MAX_EPOCHS"], batch_size=cfg["BATCH_SIZE"])
    if values["warmup_epochs"] < cfg["WARMUP_EPOCHS"] and cfg["MAX_EPOCHS"] > 0 and rank == 0:
        print(f"note: --WARMUP_EPOCHS={cfg['WARMUP_EPOCHS']} is not below MAX_EPOCHS={cfg['MAX_EPOCHS']}: "
              f"warming up for {values['warmup_epochs']} epoch(s)")
    resolved = {"data_dir": str(Path(cfg["DATA_DIR"]).resolve()), "method": method, "channels": channels,
                "n_train": len(train_files), "n_val": len(val_files), "num_workers": workers,
                "accelerator": accelerator, "precision": precision, "pipeline": pipeline, **values}
    run_dir = Path(cfg["CHECKPOINT_DIR"]) / (cfg["RUN_NAME"] or run_name(cfg["CHECKPOINT_DIR"], cfg["DATA_DIR"],
                                                                         method, rank))
    resume_from = resume_checkpoint(run_dir) if cfg["RESUME"] else None
    if rank == 0:  # under DDP every rank runs this script; only rank 0 claims the folder
        prepare_run_dir(run_dir, cfg["RESUME"])
        print(f"run folder: {run_dir}\nhyperparameters:\n{format_config(cfg)}\nresolved:\n{format_config(resolved)}")
        write_run_config(run_dir, cfg, resolved, resumed=resume_from is not None)
    # The folder holds our config.json; prepare_run_dir already refused any folder from another run.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    pl.seed_everything(cfg["SEED"], workers=True, verbose=False)
    data = ArchiveData(cfg["DATA_DIR"], train_files, val_files, channels,
                       train_transform(cfg["AUGMENTATION"], cfg["INPUT_SIZE"], channels),
                       batch_augment(cfg["AUGMENTATION"], cfg["INPUT_SIZE"], channels), cfg["BATCH_SIZE"], workers,
                       pin_memory=accelerator == "gpu", channels_last=accelerator == "gpu", pipeline=pipeline,
                       cache_dir=run_dir / "cache", cache_side=cfg["CACHE_SIZE"], stretch=cfg["STRETCH"])
    model = SSLModel(method=method, backbone=cfg["BACKBONE"], in_channels=channels, input_size=cfg["INPUT_SIZE"],
                     augmentation=cfg["AUGMENTATION"], stretch=cfg["STRETCH"],
                     turned_search=preset_turned(cfg["AUGMENTATION"]), proj_hidden_dim=cfg["PROJ_HIDDEN_DIM"],
                     proj_out_dim=cfg["PROJ_OUT_DIM"], pred_hidden_dim=cfg["PRED_HIDDEN_DIM"],
                     temperature=values["temperature"], momentum_start=cfg["MOMENTUM_START"],
                     nn_bank_size=values["nn_bank_size"], patch_size=cfg["PATCH_SIZE"], mask_ratio=cfg["MASK_RATIO"],
                     decoder_dim=cfg["DECODER_DIM"], decoder_layers=cfg["DECODER_LAYERS"], lr=values["base_lr"],
                     weight_decay=values["weight_decay"], warmup_epochs=values["warmup_epochs"],
                     max_epochs=cfg["MAX_EPOCHS"], batch_size=cfg["BATCH_SIZE"])
    if cfg["INIT"] != "none" and not resume_from:
        load_start_weights(model, start_weights(cfg["INIT"], cfg["BACKBONE"]), cfg["INIT"])
    if cfg["MAX_EPOCHS"] == 0:
        if rank == 0:
            save_untrained(model, run_dir)
        return
    if accelerator == "gpu":
        # NHWC layout lets cuDNN use tensor-core convolutions directly (PyTorch's channels_last guide).
        model = model.to(memory_format=torch.channels_last)
    if cfg["COMPILE"]:
        model.backbone.compile()  # in place: checkpoint keys stay the same
    monitors = [knn_monitor(cfg["DATA_DIR"], train_files, val_files, labels=cfg["LABELS"], id_column=cfg["ID_COLUMN"],
                            class_column=cfg["CLASS_COLUMN"], merge_classes=cfg["MERGE_CLASSES"], k=cfg["KNN_K"],
                            batch_size=cfg["BATCH_SIZE"], workers=workers)] if cfg["LABELS"] else []
    fit(model, data, run_dir, max_epochs=cfg["MAX_EPOCHS"], accelerator=accelerator, precision=precision,
        devices=cfg["DEVICES"], num_nodes=cfg["NUM_NODES"], log_every_n_steps=cfg["LOG_EVERY_N_STEPS"],
        validate=bool(val_files), resume_from=resume_from, callbacks=monitors)


if __name__ == "__main__":
    run_main(main)
