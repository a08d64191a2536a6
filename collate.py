"""Augmentation presets for self-supervised training and the one deterministic evaluation transform.

Built on lightly.transforms (lightly's collate-function API is deprecated). Pick a preset by
name with AUGMENTATION in SSL_Train.py:

  allsky   auroral all-sky cameras (OATH / THEMIS): any rotation, both flips, crops >= 30 %,
           blur, brightness/contrast only
  astro    sky-survey cutouts (galaxies): the whole cutout in every view (no crop), quarter
           turns and flips, brightness/contrast only, no blur
  radio    radio-source cutouts (FIRST, MiraBest): any rotation, both flips, crops down to 20 %,
           brightness/contrast only, no blur
           (measured: docs/quality.md, "Retrieval quality")
  natural  lightly's SimCLR defaults for everyday photographs (Chen et al. 2020)

This file holds what a user edits (the presets, their temperatures, methods and search vectors)
and lightly's per-image views; SSL_Train.py hands the chosen preset to the library. The
machinery lives in the package: `spacessl.augment.BatchAugment` applies a preset to float tensors
(whole batches on the training device with PIPELINE=device, the default on a GPU, where
per-image augmentation in CPU workers cannot keep a GPU busy; and single 16-bit, float or
many-band images, which lightly's PIL-based steps would cut to 8 bits and 3 channels), and
`spacessl.view` is the one evaluation view, rebuilt from a checkpoint alone.
"""

import inspect

import torch
from lightly.transforms import SimCLRTransform

from spacessl.augment import BatchAugment
from spacessl.view import normalization

# Steps collate.py adds after lightly's SimCLR view, with their values when a preset does not
# name them: noise = the largest standard deviation of the Gaussian noise added to every pixel of
# a view, in units of the [0, 1] pixel range (each view draws its own from [0, noise]). Noise is
# one of the augmentations of self-supervised galaxy similarity search (Hayat et al. 2021, ApJL
# 911 L33; Stein et al. 2021, arXiv:2110.13151): two whole views of one cutout otherwise share its
# exact sky-noise pattern. No preset uses it: on Galaxy Zoo "astro:noise=0.05" did not raise the
# kNN monitor (docs/quality.md, "Retrieval quality"); it stays for trials such as that one.
# max_ratio = the most a crop is stretched: its aspect ratio is drawn log-uniformly from
# [1 / max_ratio, max_ratio] and resized to a square view. 4/3 is torchvision's RandomResizedCrop
# (lightly's); 1 crops squares, so a view zooms into the image without changing its axis ratios.
EXTRA_DEFAULTS = {"noise": 0.0, "max_ratio": 4 / 3}

# Keyword arguments of lightly's SimCLRTransform for each preset (plus EXTRA_DEFAULTS' steps);
# anything not named keeps the default (lightly's: gaussian_blur=0.5, sigmas=(0.1, 2), cj_prob=0.8).
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
    # cutout and each view shows all of it: RandomResizedCrop also stretches a view by up to 4/3,
    # which changes the axis ratio that tells an edge-on disc from a round elliptical, and on Galaxy
    # Zoo and the demo sample any crop lowered precision@10 (docs/quality.md, "Retrieval quality"). Hence
    # min_scale=1.0 (a whole, unstretched view: torchvision falls back to the full image when no
    # crop of that area fits the drawn ratio). Turns are quarter turns with mirrorings (lightly's
    # rr_degrees=None at rr_prob 0.5 with both flips: the 8 lossless symmetries of a square
    # equally likely): any other angle rotates black corners into a view of a galaxy on a noisy
    # sky, which no image in the archive has. No blur: lightly's (sigma up to 2 px, sized for
    # 224 px ImageNet crops) wipes out the bulge and arms at 48-64 px.
    "astro": dict(cj_bright=0.2, cj_contrast=0.2, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0,
                  min_scale=1.0, gaussian_blur=0.0, rr_prob=0.5, rr_degrees=None, vf_prob=0.5, hf_prob=0.5),
    # Radio sources (FIRST, MiraBest): any angle and crops down to 20 %, no blur, each of which
    # raised MiraBest's precision@10 (bench/ablation.py; with temperature 0.2, TEMPERATURES). With large
    # crops two views of a compact source on an empty sky share its whole extent and brightness
    # profile, an identity cue that needs no morphology; at 64 px lightly's blur (sigma up to
    # 2 px, sized for 224 px ImageNet crops) wipes out the hot spots that tell FR I from FR II.
    "radio": dict(cj_bright=0.2, cj_contrast=0.2, cj_sat=0.0, cj_hue=0.0, random_gray_scale=0.0,
                  min_scale=0.2, gaussian_blur=0.0, rr_prob=1.0, rr_degrees=180.0, vf_prob=0.5, hf_prob=0.5),
    "natural": dict(),
}

# NT-Xent temperature that goes with each preset (SSL_Train.py's TEMPERATURE=0 takes it from here).
# 0.5 is SimCLR's CIFAR-10 setting (Chen et al. 2020, app. B.9). 0.2 for radio sources and
# galaxies: it raised precision@10 on MiraBest and on Galaxy Zoo (docs/quality.md, "Retrieval quality").
TEMPERATURES = {"allsky": 0.5, "astro": 0.2, "radio": 0.2, "natural": 0.5}

# Self-supervised method that goes with each preset (SSL_Train.py's METHOD=auto takes it from here).
# DINO (Caron et al. 2021) gave the best neighbours of the methods tried on Galaxy Zoo's 6,664
# cutouts, and found more mergers and edge-on discs there in simulated hunts than SimCLR (9.6 vs
# 6.3 and 72.3 vs 66.1 in 100 viewed: docs/quality.md, "Discovery"); SimCLR (Chen et al. 2020) is
# better on MiraBest's radio sources, where DINO lost ("Retrieval quality"); the all-sky and
# natural presets keep SimCLR, the method they were measured with.
METHODS = {"allsky": "simclr", "astro": "dino", "radio": "simclr", "natural": "simclr"}
# On small archives DINO learns little: on the demo's 300 cutouts its validation loss rises from the
# first epoch, it does not learn the turns its views teach (0.29 of turned copies found by their
# original, random weights 0.23, SimCLR 0.95) and SimCLR finds as many mergers and more edge-on
# discs ("Discovery"). So below SMALL_ARCHIVE training images these methods replace METHODS'.
# Only 300 and 6,664 images were measured: where between them the better method changes is not known.
SMALL_ARCHIVE = 2000
SMALL_ARCHIVE_METHODS = {"astro": "simclr"}

# Presets whose search vector is the mean of the network's unit outputs over the 8 quarter turns and
# mirrorings of the image (test-time pooling over the symmetries of the square): a galaxy has no
# preferred orientation on the sky, so the vector should not have one either, whether or not the
# network learned that from its views. On Galaxy Zoo it doubled the mergers found in 100 viewed
# with DINO (19.4 vs 9.6; edge-on 75.6 vs 72.1; docs/quality.md, "Discovery"). Measured for astro
# only; each image then costs 8 forward passes to embed.
TURNED_SEARCH = {"allsky": False, "astro": True, "radio": False, "natural": False}


def preset_kwargs(spec: str) -> dict:
    """The SimCLRTransform arguments of a preset spec: a preset name, optionally followed by
    changes to it, e.g. "astro:min_scale=0.2,gaussian_blur=0" (used by the ablation benchmark and
    for quick trials; edit PRESETS for a lasting change). "rr_degrees=none" is lightly's rotation
    by exactly 90 degrees (with rr_prob; with both flips at 0.5 and rr_prob 0.5, each of the 8
    lossless turns and mirrorings is equally likely). Raises ValueError naming the problem."""
    kwargs = dict(PRESETS[preset_name(spec)])
    changes = spec.partition(":")[2]
    defaults = {**_simclr_defaults(), **EXTRA_DEFAULTS}
    for change in filter(None, (part.strip() for part in changes.split(","))):
        key, _, text = change.partition("=")
        current = kwargs.get(key, defaults.get(key))
        if key in defaults and defaults[key] is None:  # rr_degrees: a number or none
            current = 0.0
            if text.strip().lower() == "none":
                kwargs[key] = None
                continue
        if key not in defaults or not isinstance(current, (int, float)) or isinstance(current, bool):
            numeric = [k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            raise ValueError(f"augmentation change {change!r}: give name=number with a name out of "
                             f"{', '.join(numeric)}")
        try:
            kwargs[key] = type(current)(float(text)) if isinstance(current, float) else int(text)
        except ValueError:
            raise ValueError(f"augmentation change {change!r}: {text!r} is not a number") from None
    return kwargs


def preset_name(spec: str) -> str:
    """The preset a spec names (before any ":" changes); ValueError if there is none of that name."""
    name = spec.partition(":")[0]
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}: choose one of {', '.join(PRESETS)}")
    return name


def preset_temperature(spec: str) -> float:
    """The NT-Xent temperature of a preset spec's preset (changes after ":" do not alter it)."""
    return TEMPERATURES[preset_name(spec)]


def preset_turned(spec: str) -> bool:
    """Whether a preset spec's search vector pools the 8 turns and mirrorings (TURNED_SEARCH)."""
    return TURNED_SEARCH[preset_name(spec)]


def preset_method(spec: str, images: int) -> str:
    """The self-supervised method of a preset spec's preset (changes after ":" do not alter it) for
    an archive of this many training images."""
    name = preset_name(spec)
    return SMALL_ARCHIVE_METHODS.get(name, METHODS[name]) if images < SMALL_ARCHIVE else METHODS[name]


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


def _simclr_defaults() -> dict:
    return {name: p.default for name, p in inspect.signature(SimCLRTransform.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


class TrainTransform:
    """Two random views of an image from images.read_image, as a list of two tensors
    (channels, size, size): lightly's SimCLRTransform for 8-bit pictures, and the same preset on
    tensors (BatchAugment) for deeper or many-band data, which lightly's PIL-based blur would cut
    to 8 bits and 3 channels."""

    def __init__(self, preset: str, input_size: int, channels: int):
        kwargs = preset_kwargs(preset)
        self.noise = kwargs.pop("noise", EXTRA_DEFAULTS["noise"])
        max_ratio = kwargs.pop("max_ratio", EXTRA_DEFAULTS["max_ratio"])
        self.pictures = SimCLRTransform(input_size=input_size, normalize=normalization(channels), **kwargs)
        for view in self.pictures.transforms:  # lightly takes no ratio argument; its crop comes first
            crop = view.transform.transforms[0]  # rebuilt, as torchvision's v2 crop caches its ratio
            view.transform.transforms[0] = type(crop)(crop.size, crop.scale, (1 / max_ratio, max_ratio),
                                                      crop.interpolation, crop.antialias)
        self.std = torch.tensor(normalization(channels)["std"])[:, None, None]
        self.arrays = batch_augment(preset, input_size, channels)

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            batch = image[None]
            return [self.arrays(batch)[0], self.arrays(batch)[0]]
        views = self.pictures(image)
        if self.noise > 0:  # after normalisation, so in units of the pixel range over each channel's std
            views = [v + self.noise * torch.rand(()) * torch.randn_like(v) / self.std for v in views]
        return views


def train_transform(preset: str, input_size: int, channels: int) -> TrainTransform:
    return TrainTransform(preset, input_size, channels)


def preset_settings(preset: str) -> dict:
    """The preset's settings, lightly's and EXTRA_DEFAULTS' defaults filled in."""
    return {**_simclr_defaults(), **EXTRA_DEFAULTS, **preset_kwargs(preset)}


def batch_augment(preset: str, input_size: int, channels: int) -> BatchAugment:
    """A preset spec for float batches on any device (PIPELINE=device, and deep or many-band images)."""
    return BatchAugment(preset_settings(preset), input_size, channels)
