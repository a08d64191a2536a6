"""Locating a run's checkpoint and training data, and making fresh output folders inside it."""

import json
import time
from pathlib import Path

from config import UserError


def checkpoint_path(run: str, checkpoint: str) -> Path:
    """CHECKPOINT "best" or "last" inside the run folder, or a path to any .ckpt file."""
    if checkpoint in ("best", "last"):
        return Path(run) / f"{checkpoint}.ckpt"
    return Path(checkpoint)


def training_data_dir(run_dir: Path) -> Path:
    """The image folder a run was trained on, from its config.json."""
    config = run_dir / "config.json"
    if not config.is_file():
        raise UserError(f"{config} not found, so the training images are unknown; pass --DATA_DIR")
    return Path(json.loads(config.read_text())["resolved"]["data_dir"])


def new_output_dir(parent: Path, label: str) -> Path:
    """parent/<label>-<YYYYmmdd-HHMMSS>, with ~1, ~2 ... appended if that exists: results of
    earlier searches or probes are never overwritten."""
    base = parent / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, suffix = base, 1
    while out.exists():
        out = base.with_name(f"{base.name}~{suffix}")
        suffix += 1
    out.mkdir(parents=True)
    return out
