"""Which device and which number format, decided once for training, embedding and benchmarks.

On a GPU: bfloat16 mixed precision where the card supports it (Ampere and later), float16
mixed precision with loss scaling before that; on the CPU: float32, which also keeps CPU
embeddings bit-identical between runs.
"""

import contextlib

import torch

from .errors import UserError


def pick_device(requested: str) -> torch.device:
    """The torch device for a DEVICE setting: auto (a GPU if there is one), cpu or cuda."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"--DEVICE={requested}: choose auto, cpu or cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--DEVICE=cuda but PyTorch sees no CUDA GPU; use --DEVICE=auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def lightning_precision(device_type: str) -> str:
    """The policy above as a Lightning Trainer `precision`."""
    if device_type != "cuda":
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def autocast(device: torch.device):
    """The policy above as a context for inference (no loss scaling needed)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def lightning_accelerator(device: torch.device) -> str:
    """A device from pick_device as a Lightning Trainer `accelerator`."""
    return "gpu" if device.type == "cuda" else "cpu"
