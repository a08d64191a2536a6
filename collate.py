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

Both scripts take their preprocessing from here, so a model is always queried the way it was
trained. `BatchAugment` applies the same presets to float tensors: to whole batches on the
training device (SSL_Train.py's PIPELINE=device, the default on a GPU), where per-image
augmentation in CPU workers cannot keep a GPU busy, and to single 16-bit, float or many-band
images, which lightly's PIL-based steps would cut to 8 bits and 3 channels.
"""

import functools
import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from kornia.enhance import adjust_hue
from lightly.transforms import SimCLRTransform

from spacessl.images import picture_bands, unit_tensor

# ImageNet statistics (lightly's default) for 3-channel input; for 1-channel input the mean of
# the three, the usual choice when a grey image goes through an ImageNet-style network.
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
GREY_MEAN, GREY_STD = [0.449], [0.226]
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale

# The batch path's constants (BatchAugment), each as torchvision / lightly do it per image.
CROP_TRIES = 10                 # RandomResizedCrop's redraws before it falls back to a central crop
JITTER_STEPS = 4                # ColorJitter's steps: brightness, contrast, saturation, hue
BLUR_SIGMAS = 3                 # Gaussian kernel radius in sigmas (the weight beyond is < 0.3 %)
MAX_SUPERSAMPLE = 4             # antialiasing: at most 4 x 4 samples per output pixel

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
        self.arrays = BatchAugment(preset, input_size, channels)

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


def preset_settings(preset: str) -> dict:
    """The preset's settings, lightly's and EXTRA_DEFAULTS' defaults filled in."""
    return {**_simclr_defaults(), **EXTRA_DEFAULTS, **preset_kwargs(preset)}


class BatchAugment:
    """A preset for float batches (N, channels, H, W) in [0, 1] on any device, in a few kernels
    whatever the batch size: one sampling grid per batch for crop + flips + rotation, blends for
    the colour jitter, one grouped convolution for the blur. Draws follow lightly's SimCLR view
    (crop, flips, rotation, colour jitter in random order, greyscale, blur, then the preset's
    noise and normalisation) with the preset's ranges and rates, so the per-image and the batch
    path train the same recipe. Parameters are drawn on the CPU from torch's generator (seeded
    runs repeat on any device), in the loader workers when training, and travel with the batch:
    `apply` never copies from host memory or waits for the device, so the CPU queues the next
    step while the GPU works; only the noise pixels are drawn there, by the device's generator.
    `draw` and `apply` are separate so fixed parameters give a fixed output (noise aside)."""

    def __init__(self, preset: str, input_size: int, channels: int):
        self.s, self.size, self.channels = preset_settings(preset), input_size, channels
        norm = normalization(channels)
        self.scale = {torch.device("cpu"): (torch.tensor(norm["mean"])[:, None, None],
                                            torch.tensor(norm["std"])[:, None, None])}
        s = self.s
        strengths = [s["cj_bright"], s["cj_contrast"]] + ([s["cj_sat"], s["cj_hue"]] if channels == 3 else [0, 0])
        self.jitter_steps = [step for step, strength in enumerate(strengths)
                             if strength * s["cj_strength"] > 0 and s["cj_prob"] > 0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.draw(len(images), images.shape[-2], images.shape[-1]))

    def draw(self, n: int, height: int, width: int, generator=None) -> dict:
        """Per-image parameters: crop (left, top, width, height as shares of the image), angle
        (degrees, counter-clockwise), hflip, vflip, jitter (applied or not), factors (brightness,
        contrast, saturation, hue), order (of the four jitter steps), grey, blur, sigma (px),
        noise (its standard deviation; the noise itself is drawn by `apply`, on the device)."""
        s = self.s

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=generator)

        def chance(p):
            return torch.rand(n, generator=generator) < p

        crop_w, crop_h = self._crop_sizes(n, height, width, uniform)
        left, top = uniform(0, 1) * (1 - crop_w), uniform(0, 1) * (1 - crop_h)
        degrees = s["rr_degrees"]
        low, high = (90.0, 90.0) if degrees is None else \
            (-float(degrees), float(degrees)) if isinstance(degrees, (int, float)) else map(float, degrees)
        angle = torch.where(chance(s["rr_prob"]), uniform(low, high), torch.zeros(n))
        strength = s["cj_strength"]
        factors = [uniform(max(0.0, 1 - strength * s[k]), 1 + strength * s[k])
                   for k in ("cj_bright", "cj_contrast", "cj_sat")]
        factors.append(uniform(-strength * s["cj_hue"], strength * s["cj_hue"]))
        return self.plan({"crop": torch.stack([left, top, crop_w, crop_h], 1), "angle": angle,
                          "hflip": chance(s["hf_prob"]), "vflip": chance(s["vf_prob"]), "jitter": chance(s["cj_prob"]),
                          "factors": torch.stack(factors, 1),
                          "order": torch.rand(n, JITTER_STEPS, generator=generator).argsort(1),
                          "grey": chance(s["random_gray_scale"]), "blur": chance(s["gaussian_blur"]),
                          "sigma": uniform(*s["sigmas"]),
                          # Drawn only where the preset adds noise, so a preset without it
                          # consumes the random numbers it did before the setting existed.
                          "noise": uniform(0.0, s["noise"]) if s["noise"] > 0 else torch.zeros(n)})

    def plan(self, params: dict) -> dict:
        """The drawn parameters (CPU) with what follows from them: "ranked", each image's active
        jitter steps in its drawn order, and the rows each step changes ("hue_rows" per place
        in that order, "grey_rows", "blur_rows"), so that `apply` learns them from tensor
        shapes, never by asking the device. Call it again after changing parameters by hand."""
        steps = torch.tensor(self.jitter_steps, dtype=torch.long)
        position = params["order"].argsort(1)
        ranked = steps[position[:, steps].argsort(1)]

        def rows(mask):
            return mask.nonzero()[:, 0]
        none = torch.zeros(len(ranked), dtype=torch.bool)
        return {**params, "ranked": ranked,
                "hue_rows": [rows(params["jitter"] & (ranked[:, place] == HUE)) for place in range(len(steps))],
                "grey_rows": rows(params["grey"] if self.channels == 3 else none),
                "blur_rows": rows(params["blur"] if self.s["gaussian_blur"] > 0 else none)}

    def _crop_sizes(self, n, height, width, uniform):
        """torchvision's RandomResizedCrop: an area share in [min_scale, 1] and a log-uniform
        aspect ratio in [1 / max_ratio, max_ratio], redrawn up to CROP_TRIES times until the crop
        fits, else the central crop of the nearest allowed aspect ratio."""
        crop_w, crop_h = torch.ones(n), torch.ones(n)
        ratio, ratios = width / height, (1 / self.s["max_ratio"], self.s["max_ratio"])
        if ratio < ratios[0]:
            crop_h = torch.full((n,), ratio / ratios[0])
        elif ratio > ratios[1]:
            crop_w = torch.full((n,), ratios[1] / ratio)
        todo = torch.ones(n, dtype=torch.bool)
        for _ in range(CROP_TRIES):
            area = uniform(self.s["min_scale"], 1.0) * height * width
            aspect = torch.exp(uniform(math.log(ratios[0]), math.log(ratios[1])))
            w, h = torch.sqrt(area * aspect) / width, torch.sqrt(area / aspect) / height
            fits = todo & (w <= 1) & (h <= 1)
            crop_w, crop_h = torch.where(fits, w, crop_w), torch.where(fits, h, crop_h)
            todo &= ~fits
        return crop_w, crop_h

    def apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """The views (N, channels, input_size, input_size), normalised, for images in [0, 1] and
        parameters from `draw` (on the CPU or already on the images' device)."""
        p = {key: [v.to(images.device) for v in value] if isinstance(value, list) else value.to(images.device)
             for key, value in params.items()}
        x = self._geometry(images.float(), p, self._supersampling(*images.shape[-2:]))
        x = self._jitter(x, p)
        if len(p["grey_rows"]):
            x[p["grey_rows"]] = grey(x[p["grey_rows"]]).expand(-1, 3, -1, -1)
        if len(p["blur_rows"]):
            x[p["blur_rows"]] = self._blur(x[p["blur_rows"]], p["sigma"][p["blur_rows"]])
        if self.s["noise"] > 0:
            x = x + p["noise"][:, None, None, None] * torch.randn_like(x)
        if x.device not in self.scale:
            self.scale[x.device] = tuple(t.to(x.device) for t in self.scale[torch.device("cpu")])
        mean, std = self.scale[x.device]
        return (x - mean) / std

    def _supersampling(self, height: int, width: int) -> int:
        """Samples per output pixel and axis: the shrink of a whole-image crop (the largest a
        batch of any size nearly always holds), at most MAX_SUPERSAMPLE."""
        return int(min(MAX_SUPERSAMPLE, max(1, round(max(height, width) / self.size))))

    def _geometry(self, x, p, factor: int):
        """Crop, flips and rotation as one bilinear sampling grid. A crop larger than the
        output is sampled factor x factor times per output pixel and averaged, as the
        antialiased resize of the per-image path does; corners rotated in from outside the
        crop are black, as in torchvision's rotate."""
        crop = p["crop"]
        side = self.size * factor
        steps = (torch.arange(side, device=x.device, dtype=torch.float32) + 0.5) / side * 2 - 1
        v, u = torch.meshgrid(steps, steps, indexing="ij")  # pixel centres, y down
        theta = torch.deg2rad(p["angle"])[:, None, None]
        cos, sin = torch.cos(theta), torch.sin(theta)
        # The rotated view at (u, v) shows the flipped crop at the inverse rotation of (u, v).
        cu, cv = cos * u - sin * v, sin * u + cos * v
        inside = ((cu.abs() <= 1) & (cv.abs() <= 1)).to(x.dtype)[:, None]
        cu = torch.where(p["hflip"][:, None, None], -cu, cu)
        cv = torch.where(p["vflip"][:, None, None], -cv, cv)
        left, top, crop_w, crop_h = (crop[:, i, None, None] for i in range(4))
        grid = torch.stack([2 * left - 1 + crop_w * (cu + 1), 2 * top - 1 + crop_h * (cv + 1)], -1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) * inside
        return F.avg_pool2d(out, factor) if factor > 1 else out

    def _jitter(self, x, p):
        """torchvision's ColorJitter on the images drawn for it: brightness, contrast,
        saturation and hue in a random order per image (saturation and hue on RGB only).
        Brightness, contrast and saturation are each a blend, clamp(f x + (1 - f) other),
        with black, the image's mean grey or its grey image: one blend per place in the order
        covers every image, with f = 1 (no change) where an image has no such step there."""
        for place, hue_rows in enumerate(p["hue_rows"]):
            step = p["ranked"][:, place]
            factor = p["factors"].gather(1, step[:, None])[:, 0]
            factor = torch.where(p["jitter"] & (step != HUE), factor, torch.ones_like(factor))[:, None, None, None]
            other = torch.zeros_like(factor)
            if CONTRAST in self.jitter_steps:
                mean = grey(x).mean((1, 2, 3), keepdim=True)
                other = torch.where(step[:, None, None, None] == CONTRAST, mean, other)
            if SATURATION in self.jitter_steps:
                other = other + (step == SATURATION)[:, None, None, None] * grey(x)
            x = torch.addcmul((1 - factor) * other, x, factor).clamp_(0, 1)
            if len(hue_rows):
                x[hue_rows] = adjust_hue(x[hue_rows], p["factors"][hue_rows, HUE] * 2 * math.pi)
        return x

    def _blur(self, x, sigma):
        """A Gaussian of each image's sigma (lightly's GaussianBlur, PIL's radius = sigma), as one
        separable grouped convolution with edge pixels repeated."""
        n, c, height, width = x.shape
        radius = math.ceil(BLUR_SIGMAS * self.s["sigmas"][1])
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel = kernel.repeat_interleave(c, 0)  # one kernel per image and channel
        flat = F.pad(x.reshape(1, n * c, height, width), (radius,) * 4, mode="replicate")
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
        flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
        return flat.reshape(n, c, height, width)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): luma for RGB (ITU-R 601, as torchvision's rgb_to_grayscale), else the band mean."""
    if x.shape[1] == 3:
        return LUMA[0] * x[:, :1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:]
    return x.mean(1, keepdim=True)


# torchvision's ColorJitter steps, in its numbering (0 brightness, 1 contrast, 2 saturation, 3 hue).
CONTRAST, SATURATION, HUE = 1, 2, 3
