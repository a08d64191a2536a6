"""The batch augmentation (PIPELINE=device): a preset's random views of whole float batches in a
few kernels on the training device, as lightly's SimCLR view makes them per image.

The presets themselves (which ranges and rates) live in the root collate.py, the file users edit;
`collate.batch_augment(preset, ...)` hands their settings here.
"""

import math

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_hue

from .view import normalization

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale

# The batch path's constants (BatchAugment), each as torchvision / lightly do it per image.
CROP_TRIES = 10                 # RandomResizedCrop's redraws before it falls back to a central crop
JITTER_STEPS = 4                # ColorJitter's steps: brightness, contrast, saturation, hue
BLUR_SIGMAS = 3                 # Gaussian kernel radius in sigmas (the weight beyond is < 0.3 %)
MAX_SUPERSAMPLE = 4             # antialiasing: at most 4 x 4 samples per output pixel

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

    def __init__(self, settings: dict, input_size: int, channels: int):
        """settings: every step's value by lightly's SimCLRTransform argument names plus "noise"
        and "max_ratio" (collate.preset_settings gives them for a preset)."""
        self.s, self.size, self.channels = settings, input_size, channels
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
