"""How a model sees an image at evaluation: the whole image resized to the training size and
normalised, the one view that embedding a folder, query files, notebook arrays and Grad-CAM use.
Reading and stretching the stored numbers to [0, 1] is images.py's; this is what follows.
"""

import functools

import numpy as np
import torch
import torchvision.transforms as T

from .images import picture_bands, unit_tensor

# ImageNet statistics (lightly's default) for 3-channel input; for 1-channel input the mean of
# the three, the usual choice when a grey image goes through an ImageNet-style network.
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
GREY_MEAN, GREY_STD = [0.449], [0.226]


def normalization(channels: int) -> dict:
    """Per-channel mean and std: ImageNet's for 3 channels, the grey values for every band else."""
    if channels == 3:
        return {"mean": RGB_MEAN, "std": RGB_STD}
    return {"mean": GREY_MEAN * channels, "std": GREY_STD * channels}


class EvalTransform:
    """The whole image resized to the training size (no crop: the edge of an all-sky image
    holds the horizon-side aurora), as one normalised float tensor. Takes a PIL picture or a
    float tensor. With stored=True it stops before normalising and keeps an 8-bit picture as
    uint8: a quarter of the bytes through the loader workers, pinned memory and the copy to the
    device, where `normalize_stored` finishes the batch with the same arithmetic."""

    def __init__(self, input_size: int, channels: int, stored: bool = False):
        self.resize, self.channels, self.stored = T.Resize((input_size, input_size)), channels, stored

    def __call__(self, image):
        image = self.resize(image)
        if not isinstance(image, torch.Tensor):
            image = torch.from_numpy(np.array(picture_bands(image)))  # a writable copy
        return image if self.stored else normalize_stored(image[None], self.channels)[0]


def eval_transform(input_size: int, channels: int, stored: bool = False) -> EvalTransform:
    return EvalTransform(input_size, channels, stored)


def normalize_stored(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """A batch from EvalTransform(stored=True) (uint8 0-255, or float in [0, 1]; any device) as
    the network's float32 input: scaled to [0, 1], then each channel's mean and std."""
    mean, std = _normalization_tensors(channels, batch.device)
    return unit_tensor(batch).sub(mean).div(std)


@functools.lru_cache(maxsize=None)
def _normalization_tensors(channels: int, device: torch.device) -> tuple:
    """normalization(channels) as (1, channels, 1, 1) tensors on the device, copied there once
    (a copy from host memory each batch would make the CPU wait for the device)."""
    norm = normalization(channels)
    return tuple(torch.tensor(norm[key], device=device).view(1, -1, 1, 1) for key in ("mean", "std"))


def model_view(model, stored: bool = False) -> EvalTransform:
    """The evaluation view at a model's input size and channels (its checkpoint's hyperparameters).
    stored=True leaves the normalisation to `normalize_stored` on the device."""
    return eval_transform(model.hparams.input_size, model.hparams.in_channels, stored)
