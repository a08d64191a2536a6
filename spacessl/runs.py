"""Locating a run's checkpoint and training data, and making fresh output folders inside it."""

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import UserError, write_json
from .embeddings import cache_meta, cached_embeddings, embed_image, read_cache
from .hardware import pick_device
from .images import find_images, loader_workers
from .model import SSLModel, load_model
from . import postprocess
from .postprocess import KINDS, Transform, search_vectors


def checkpoint_path(run: str, checkpoint: str) -> Path:
    """CHECKPOINT "best" or "last" inside the run folder, or a path to any .ckpt file."""
    if checkpoint in ("best", "last"):
        return Path(run) / f"{checkpoint}.ckpt"
    return Path(checkpoint)


def embedding_cache_dir(checkpoint: Path, data_dir: Path) -> Path:
    """<run>/embeddings/<checkpoint name>__<data folder name>/: one cache per model and folder."""
    return checkpoint.parent / "embeddings" / f"{checkpoint.stem}__{Path(data_dir).resolve().name}"


def training_data_dir(run_dir: Path) -> Path:
    """The image folder a run was trained on, from its config.json."""
    config = run_dir / "config.json"
    if not config.is_file():
        raise UserError(f"{config} not found, so the training images are unknown; pass --DATA_DIR")
    try:
        data_dir = json.loads(config.read_text())["resolved"]["data_dir"]
        if not isinstance(data_dir, str) or not data_dir:
            raise ValueError("data_dir is not a folder name")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        reason = "not JSON" if isinstance(err, json.JSONDecodeError) else f"no resolved data_dir ({type(err).__name__})"
        raise UserError(f"{config} is damaged ({reason}), so the training images are unknown: pass "
                        f"--DATA_DIR=<the image folder>, or restore the file from the run's config.resume*.json "
                        f"or a backup") from None
    return Path(data_dir)


def new_output_dir(parent: Path, label: str) -> Path:
    """parent/<label>-<YYYYmmdd-HHMMSS>, with ~1, ~2 ... appended if that exists: results of
    earlier searches or probes are never overwritten."""
    base = parent / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent.mkdir(parents=True, exist_ok=True)
    out, suffix = base, 1
    while True:
        try:
            out.mkdir()  # atomic: of two processes asking at once, one gets ~1
            return out
        except FileExistsError:
            out = base.with_name(f"{base.name}~{suffix}")
            suffix += 1


def writable(folder: Path) -> bool:
    """Whether files can be made in folder (tried, since permission bits do not tell on a
    read-only mount or for root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def output_home(run_dir: Path, output_dir: str) -> Path:
    """Where a script's results (and caches it must build) go: OUTPUT_DIR when given, else the
    run folder, else, for a run folder that cannot be written (a colleague's, a read-only
    mount), checkpoints/<run name> here, said in one line."""
    if output_dir:
        home = Path(output_dir)
    elif writable(run_dir):
        return run_dir
    else:
        home = Path("checkpoints") / run_dir.name
        print(f"{run_dir} cannot be written: results go to {home} (choose another with --OUTPUT_DIR)")
    if not writable(home):
        raise UserError(f"cannot write results to {home}; choose a writable --OUTPUT_DIR")
    return home


def result_dir(run, kind: str, label: str, cfg: dict, **resolved) -> Path:
    """A fresh <home>/<kind>/<label>-<time>/ for one script's results (home: the run folder, see
    output_home), with its config.json (the settings given and what they resolved to:
    checkpoint, data folder and `resolved`) written first, so every result folder says how it
    was made."""
    out = new_output_dir(run.home / kind, label)
    write_json(out / "config.json", {"hyperparameters": cfg, "resolved": {
        "checkpoint": str(run.checkpoint.resolve()), "data_dir": str(Path(run.data_dir).resolve()), **resolved}})
    return out


@dataclass
class OpenRun:
    """A trained model with the cached embeddings of its image folder."""
    checkpoint: Path
    model: SSLModel
    run_dir: Path
    data_dir: Path
    vectors: np.ndarray  # (n, width) unit rows to search: the embeddings after `transform`
    names: list          # image files (relative to data_dir) of the rows
    device: torch.device
    workers: int
    cache_dir: Path      # where the embeddings (and a search index) are cached
    skipped: list        # images of data_dir left out as unreadable
    transform: Transform  # the post-processing fitted on this folder's embeddings (postprocess.py)
    home: Path           # where results go: the run folder, or OUTPUT_DIR's when that is read-only
    embeddings: np.ndarray  # (n, width) the model's unit embeddings before post-processing

    def embed(self, image) -> np.ndarray:
        """A file, PIL image or array as a search vector: embedded and post-processed like the rows."""
        return self.transform.apply(embed_image(self.model, image, self.device))


def open_run(cfg: dict, embed: bool = True) -> OpenRun:
    """Load the checkpoint named by cfg's RUN and CHECKPOINT and embed cfg's DATA_DIR (default:
    the training images) with it, or reuse the cached embeddings; post-processed as cfg's
    POSTPROCESS says. embed=False: only reuse them, and say how to make them when there are none."""
    device = pick_device(cfg["DEVICE"])
    if cfg["POSTPROCESS"] not in KINDS:
        raise UserError(f"--POSTPROCESS={cfg['POSTPROCESS']}: choose one of {', '.join(KINDS)}")
    if cfg["NUM_WORKERS"] < -1 or cfg["BATCH_SIZE"] < 1:
        raise UserError("--NUM_WORKERS must be -1 (auto), 0 or more and --BATCH_SIZE at least 1")
    ckpt = checkpoint_path(cfg["RUN"], cfg["CHECKPOINT"])
    model = load_model(ckpt)
    run_dir = ckpt.parent
    data_dir = Path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else training_data_dir(run_dir)
    files = find_images(data_dir)
    workers = loader_workers(cfg["NUM_WORKERS"])
    print(f"checkpoint: {ckpt}\ndata: {data_dir} ({len(files)} images)")
    home = output_home(run_dir, cfg["OUTPUT_DIR"])
    own_cache = embedding_cache_dir(ckpt, data_dir)
    cache_dir = home / own_cache.relative_to(run_dir)  # where new caches and derived files go
    # A read-only run (a colleague's) is searched from its own cache while that is valid.
    meta = cache_meta(ckpt, data_dir, files)
    found = read_cache(own_cache, meta) if cache_dir != own_cache else None
    source_dir = own_cache if found else cache_dir
    if found is None and not embed:
        found = read_cache(cache_dir, meta)
        if found is None:
            data = f" --DATA_DIR={cfg['DATA_DIR']}" if cfg["DATA_DIR"] else ""
            raise UserError(f"{cfg['RUN']} has no embeddings of the {len(files)} images in {data_dir} from "
                            f"{ckpt.name} yet: make them with python SSL_Evaluate.py --RUN={cfg['RUN']}"
                            f" --CHECKPOINT={cfg['CHECKPOINT']}{data} (SSL_Embed.py on several GPUs), then start "
                            f"the explorer again")
    embeddings, names = found or cached_embeddings(model, ckpt, data_dir, files, cache_dir, cfg["BATCH_SIZE"],
                                                   workers, device)
    print(f"embeddings: {source_dir / 'embeddings.npy'} ({embeddings.shape[0]} x {embeddings.shape[1]}), "
          f"searched after post-processing: {postprocess.resolve(cfg['POSTPROCESS'], embeddings.shape)}")
    source = {**json.loads((source_dir / "meta.json").read_text()), "postprocess": cfg["POSTPROCESS"]}
    vectors, transform = search_vectors(embeddings, cfg["POSTPROCESS"], cache_dir, source)
    skipped = sorted(set(files) - set(names))
    return OpenRun(ckpt, model, run_dir, data_dir, vectors, names, device, workers, cache_dir, skipped, transform,
                   home, embeddings)
