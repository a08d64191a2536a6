"""Augmentation presets for self-supervised training and the one deterministic evaluation transform.

Built on lightly.transforms (lightly's collate-function API is deprecated). Pick a preset by
name with AUGMENTATION in SSL_Train.py:

  allsky   auroral all-sky cameras (OATH / THEMIS): any rotation, both flips, crops >= 30 %,
           blur, brightness/contrast only
  astro    sky-survey cutouts (galaxies): any rotation, both flips, mild crops that keep the
           centred object, brightness/contrast only
  radio    radio-source cutouts (FIRST, MiraBest): as astro with crops down to 20 % and no blur
           (measured: README "Retrieval quality")
  natural  lightly's SimCLR defaults for everyday photographs (Chen et al. 2020)

Both scripts take their preprocessing from here, so a model is always queried the way it was
trained. `batch_train_transform` applies the same presets to float tensors with kornia: to
whole batches on the training device, for when per-image augmentation on the CPU cannot keep a
GPU busy, and to single 16-bit, float or many-band images, which lightly's PIL-based steps would
cut to 8 bits and 3 channels.
"""

import inspect

import kornia.augmentation as K
import torch
import torchvision.transforms as T
from lightly.transforms import SimCLRTransform

from spacessl.images import as_tensor

# ImageNet statistics (lightly's default) for 3-channel input; for 1-channel input the mean of
# the three, the usual choice when a grey image goes through an ImageNet-style network.
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
GREY_MEAN, GREY_STD = [0.449], [0.226]

# Keyword arguments of lightly's SimCLRTransform for each preset; anything not named keeps
# lightly's default (gaussian_blur=0.5, sigmas=(0.1, 2), cj_prob=0.8).
PRESETS = {
    # An all-sky image has no "up": the camera's orientation relative to the aurora is arbitrary
    # (the OATH set itself was augmented by rotation, Clausen & Nickisch 2018), so any angle and
    # both flips are label-preserving. No hue/saturation jitter and no random greyscale: THEMIS
    # is a white-light monochrome imager, and in colour cameras the auroral emission line
    # (green 557.7 nm vs red 630.0 nm) is physics, not nuisance. Brightness/contrast jitter
    # stands in for exposure, moonlight and background changes. Crops keep >= 30 % of the
    # area so an arc or a patch is still recognisable.
    "allsky": dict(cj_bright=0.4, cj_contrast=0.4, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0,
                   min_scale=0.3, rr_prob=1.0, rr_degrees=180.0, vf_prob=0.5, hf_prob=0.5),
    # A galaxy has no preferred orientation on the sky, but its colour is its stellar population
    # (and band ratios are measurements), so no colour shifts. The object is centred in the
    # cutout; crops keep >= 60 % of it (as for SDSS cutouts in Hayat et al. 2021, ApJL 911, L33).
    # On the demo's galaxies this beat the `radio` crops and no blur (README "Retrieval quality"):
    # an edge-on disc is told by its whole outline, which small crops cut.
    "astro": dict(cj_bright=0.2, cj_contrast=0.2, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0,
                  min_scale=0.6, rr_prob=1.0, rr_degrees=180.0, vf_prob=0.5, hf_prob=0.5),
    # Radio sources (FIRST, MiraBest): as astro, but crops down to 20 % and no blur, each of which
    # raised MiraBest's precision@10 (bench/ablation.py; best with TEMPERATURE=0.2). With large
    # crops two views of a compact source on an empty sky share its whole extent and brightness
    # profile, an identity cue that needs no morphology; at 64 px lightly's blur (sigma up to
    # 2 px, sized for 224 px ImageNet crops) wipes out the hot spots that tell FR I from FR II.
    "radio": dict(cj_bright=0.2, cj_contrast=0.2, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0,
                  min_scale=0.2, gaussian_blur=0.0, rr_prob=1.0, rr_degrees=180.0, vf_prob=0.5, hf_prob=0.5),
    "natural": dict(),
}


def preset_kwargs(spec: str) -> dict:
    """The SimCLRTransform arguments of a preset spec: a preset name, optionally followed by
    changes to it, e.g. "astro:min_scale=0.2,gaussian_blur=0" (used by the ablation benchmark and
    for quick trials; edit PRESETS for a lasting change). Raises ValueError naming the problem."""
    name, _, changes = spec.partition(":")
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}: choose one of {', '.join(PRESETS)}")
    kwargs = dict(PRESETS[name])
    defaults = _simclr_defaults()
    for change in filter(None, (part.strip() for part in changes.split(","))):
        key, _, text = change.partition("=")
        current = kwargs.get(key, defaults.get(key))
        if key not in defaults or not isinstance(current, (int, float)) or isinstance(current, bool):
            numeric = [k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            raise ValueError(f"augmentation change {change!r}: give name=number with a name out of "
                             f"{', '.join(numeric)}")
        try:
            kwargs[key] = type(current)(float(text)) if isinstance(current, float) else int(text)
        except ValueError:
            raise ValueError(f"augmentation change {change!r}: {text!r} is not a number") from None
    return kwargs


def _simclr_defaults() -> dict:
    return {name: p.default for name, p in inspect.signature(SimCLRTransform.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def normalization(channels: int) -> dict:
    """Per-channel mean and std: ImageNet's for 3 channels, the grey values for every band else."""
    if channels == 3:
        return {"mean": RGB_MEAN, "std": RGB_STD}
    return {"mean": GREY_MEAN * channels, "std": GREY_STD * channels}


class TrainTransform:
    """Two random views of an image from images.read_image, as a list of two tensors
    (channels, size, size): lightly's SimCLRTransform for 8-bit pictures, and the same preset on
    tensors (kornia) for deeper or many-band data, which lightly's PIL-based blur would cut to
    8 bits and 3 channels."""

    def __init__(self, preset: str, input_size: int, channels: int):
        self.pictures = SimCLRTransform(input_size=input_size, normalize=normalization(channels),
                                        **preset_kwargs(preset))
        self.arrays = batch_train_transform(preset, input_size, channels)

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            batch = image[None]
            return [self.arrays(batch)[0], self.arrays(batch)[0]]
        return self.pictures(image)


def train_transform(preset: str, input_size: int, channels: int) -> TrainTransform:
    return TrainTransform(preset, input_size, channels)


def eval_transform(input_size: int, channels: int) -> T.Compose:
    """The whole image resized to the training size (no crop: the edge of an all-sky image
    holds the horizon-side aurora), as one tensor. Takes a PIL picture or a float tensor."""
    norm = normalization(channels)
    return T.Compose([T.Resize((input_size, input_size)), as_tensor,
                      T.Normalize(norm["mean"], norm["std"])])


def preset_settings(preset: str) -> dict:
    """The preset's SimCLRTransform arguments, lightly's defaults filled in."""
    return {**_simclr_defaults(), **preset_kwargs(preset)}


def batch_train_transform(preset: str, input_size: int, channels: int) -> K.AugmentationSequential:
    """The preset for float batches (N, channels, H, W) in [0, 1] on any device: one random draw
    per image, in lightly's SimCLR order (crop, rotation, flips, colour jitter, greyscale, blur,
    normalisation). Call it twice for two views."""
    s = preset_settings(preset)
    if s["rr_prob"] > 0 and s["rr_degrees"] is None:
        raise ValueError(f"preset {preset!r}: 90-degree rotations are not available for batches")
    strength = s["cj_strength"]
    steps = [K.RandomResizedCrop((input_size, input_size), scale=(s["min_scale"], 1.0))]
    if s["rr_prob"] > 0:
        steps.append(K.RandomRotation(degrees=s["rr_degrees"], p=s["rr_prob"]))
    steps += [K.RandomHorizontalFlip(p=s["hf_prob"]), K.RandomVerticalFlip(p=s["vf_prob"]),
              K.ColorJiggle(brightness=s["cj_bright"] * strength, contrast=s["cj_contrast"] * strength,
                            saturation=s["cj_sat"] * strength if channels == 3 else 0.0,
                            hue=s["cj_hue"] * strength if channels == 3 else 0.0, p=s["cj_prob"])]
    if s["random_gray_scale"] > 0 and channels == 3:
        steps.append(K.RandomGrayscale(p=s["random_gray_scale"]))
    sigma_max = s["sigmas"][1]
    kernel = 2 * int(3 * sigma_max) + 1  # +-3 sigma, odd
    steps.append(K.RandomGaussianBlur((kernel, kernel), sigma=tuple(s["sigmas"]), p=s["gaussian_blur"]))
    norm = normalization(channels)
    steps.append(K.Normalize(mean=torch.tensor(norm["mean"]), std=torch.tensor(norm["std"])))
    return K.AugmentationSequential(*steps)
