"""The run folder, the one owner of its layout: creating it (SSL_Train.py), its config.json,
locating its checkpoint and training data, and fresh result folders inside it, each with the
config.json that says how it was made.

    <run>/config.json            settings given ("hyperparameters") and what they resolved to
    <run>/config.resumeN.json    the same for each resumed training
    <run>/best.ckpt, last.ckpt   checkpoints; logs/version_N/metrics.csv
    <run>/embeddings/<ckpt>__<data folder>/   cached embeddings (embeddings.py)
    <run>/<kind>/<label>-<time>/ results: queries, maps, anomalies, probes (result_dir)
"""

import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import TMP_MARK, write_json
from .embeddings import cache_meta, cached_embeddings, embed_image, read_cache
from .hardware import pick_device
from .images import file_stamps, find_images, loader_workers
from .model import SSLModel, load_model
from .postprocess import KINDS, Transform, search_vectors
from .postprocess import resolve as postprocess_kind


RUN_NAME_VARIABLE = "SPACESSL_RUN_NAME"  # the default run name chosen by rank 0, for the other DDP ranks


def run_name(checkpoint_dir, data_dir, method: str, rank: int) -> str:
    """The default run name <data folder>_<method>, with the time added when that folder is taken.
    Under DDP the other ranks start after rank 0 made the folder: they take its choice."""
    if rank != 0:
        return os.environ[RUN_NAME_VARIABLE]
    name = f"{Path(data_dir).resolve().name}_{method}"
    if (Path(checkpoint_dir) / name).exists():
        name += time.strftime("-%Y%m%d-%H%M%S")
    os.environ[RUN_NAME_VARIABLE] = name  # inherited by the DDP ranks Lightning starts
    return name


def resume_checkpoint(run_dir: Path):
    """The checkpoint to continue from: last.ckpt, else best.ckpt (a save of last.ckpt that failed,
    e.g. on a full disk, leaves best.ckpt), else None (the run stopped before its first)."""
    return next((run_dir / name for name in ("last.ckpt", "best.ckpt") if (run_dir / name).is_file()), None)


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Create the run folder; never reuse a finished or running one unless resuming it. A run
    stopped before its first checkpoint has nothing to continue, so resuming starts it again
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


def write_run_config(run_dir: Path, hyperparameters: dict, resolved: dict, resumed: bool) -> None:
    """config.json (config.resumeN.json for the Nth resume): the settings given and what they
    resolved to; resolved["data_dir"] is where later scripts find the training images."""
    name = f"config.resume{len(list(run_dir.glob('config*.json')))}.json" if resumed else "config.json"
    write_json(run_dir / name, {"hyperparameters": hyperparameters, "resolved": resolved})


def run_folder(run: str, checkpoint: Path) -> Path:
    """Where a run's results and caches go: the run folder RUN, also for a checkpoint file from
    elsewhere; the checkpoint's own folder only when RUN is no folder."""
    return Path(run) if Path(run).is_dir() else checkpoint.parent


def checkpoint_path(run: str, checkpoint: str) -> Path:
    """CHECKPOINT "best" or "last" inside the run folder, or a path to any .ckpt file."""
    if checkpoint in ("best", "last"):
        return Path(run) / f"{checkpoint}.ckpt"
    return Path(checkpoint)


def embedding_cache_dir(checkpoint: Path, data_dir: Path, run_dir: Path) -> Path:
    """<run>/embeddings/<checkpoint name>__<data folder name>/: one cache per model and folder."""
    return Path(run_dir) / "embeddings" / f"{checkpoint.stem}__{Path(data_dir).resolve().name}"


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


class result_dir:
    """A fresh <home>/<kind>/<label>-<time>/ for one script's results (home: the run folder, see
    output_home), with its config.json (the settings given and what they resolved to:
    checkpoint, data folder and `resolved`), so every result folder says how it was made.

        with result_dir(run, "queries", label, cfg) as out:
            ... write into out.path ...
        print(out.path)   # the finished folder

    The results are written into a hidden folder beside and renamed into place only when the
    block ends without an error: a failure (a full disk, a bad setting, Ctrl-C) leaves no half
    result folder, and a full disk is one line naming the folder."""

    def __init__(self, run, kind: str, label: str, cfg: dict, **resolved):
        self.parent, self.label = run.home / kind, label
        self.config = {"hyperparameters": cfg, "resolved": {
            "checkpoint": str(run.checkpoint.resolve()), "data_dir": str(Path(run.data_dir).resolve()), **resolved}}

    def __enter__(self):
        self.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.label}-", suffix=TMP_MARK, dir=self.parent))
        try:
            write_json(self.path / "config.json", self.config)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        return self

    def __exit__(self, kind, error, trace):
        staging = self.path
        try:
            if kind is None:
                self.path = new_output_dir(self.parent, self.label)
                os.replace(staging, self.path)  # onto the empty folder just claimed: atomic
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise UserError(f"the disk is full: the results in {self.parent} could not be written (nothing "
                            f"was kept); free some space and run again") from None
        return False


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


def open_run(run: str, checkpoint: str = "best", data_dir: str = "", postprocess: str = "auto",
             device: str = "auto", batch_size: int = 256, num_workers: int = -1, output_dir: str = "",
             embed: bool = True) -> OpenRun:
    """Load a run's checkpoint ("best", "last" or a .ckpt path) and embed data_dir (default: the
    training images) with it, or reuse the cached embeddings (bringing them up to date with the
    folder); post-processed as `postprocess` says (postprocess.KINDS). Results and caches go to
    the run folder `run`, also for a checkpoint file from elsewhere. embed=False: only reuse
    them, and say how to make them when there are none."""
    device = pick_device(device)
    if postprocess not in KINDS:
        raise UserError(f"--POSTPROCESS={postprocess}: choose one of {', '.join(KINDS)}")
    if num_workers < -1 or batch_size < 1:
        raise UserError("--NUM_WORKERS must be -1 (auto), 0 or more and --BATCH_SIZE at least 1")
    ckpt = checkpoint_path(run, checkpoint)
    model = load_model(ckpt)
    run_dir = run_folder(run, ckpt)
    given_data = data_dir
    data_dir = Path(data_dir) if data_dir else training_data_dir(ckpt.parent)
    files = find_images(data_dir)
    workers = loader_workers(num_workers)
    print(f"checkpoint: {ckpt}\ndata: {data_dir} ({len(files)} images)")
    home = output_home(run_dir, output_dir)
    own_cache = embedding_cache_dir(ckpt, data_dir, run_dir)
    cache_dir = home / own_cache.relative_to(run_dir)  # where new caches and derived files go
    # A read-only run (a colleague's) is searched from its own cache while that is valid.
    stamps = file_stamps(data_dir, files)
    meta = cache_meta(ckpt, data_dir, files, stamps)
    found = read_cache(own_cache, meta) if cache_dir != own_cache else None
    source_dir = own_cache if found else cache_dir
    if found is None and not embed:
        found = read_cache(cache_dir, meta)
        if found is None:
            data = f" --DATA_DIR={given_data}" if given_data else ""
            raise UserError(f"{run} has no embeddings of the {len(files)} images in {data_dir} from "
                            f"{ckpt.name} yet: make them with python SSL_Evaluate.py --RUN={run}"
                            f" --CHECKPOINT={checkpoint}{data} (SSL_Embed.py on several GPUs), then start "
                            f"the explorer again")
    embeddings, names = found or cached_embeddings(model, ckpt, data_dir, files, cache_dir, batch_size,
                                                   workers, device, stamps)
    print(f"embeddings: {source_dir / 'embeddings.npy'} ({embeddings.shape[0]} x {embeddings.shape[1]}), "
          f"searched after post-processing: {postprocess_kind(postprocess, embeddings.shape)}")
    source = {**json.loads((source_dir / "meta.json").read_text()), "postprocess": postprocess}
    vectors, transform = search_vectors(embeddings, postprocess, cache_dir, source)
    skipped = sorted(set(files) - set(names))
    return OpenRun(ckpt, model, run_dir, data_dir, vectors, names, device, workers, cache_dir, skipped, transform,
                   home, embeddings)
