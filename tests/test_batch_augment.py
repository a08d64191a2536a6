"""The batch path (collate.BatchAugment, PIPELINE=device) reproduces each preset: exact output
for fixed parameters against torchvision's per-image functions, and the drawn parameters
follow the preset's ranges and rates over many draws."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from collate import PRESETS, preset_settings
from collate import batch_augment as BatchAugment
from spacessl.images import unit_tensor

DRAWS = 20000  # parameter draws per statistical check: a rate's std is <= 0.0036


def plain(augment, n, **changes):
    """Parameters that leave the images as they are, with `changes`."""
    params = augment.draw(n, 8, 8)
    params.update(crop=torch.tensor([[0.0, 0.0, 1.0, 1.0]] * n), angle=torch.zeros(n))
    for key in ("hflip", "vflip", "jitter", "grey", "blur"):
        params[key] = torch.zeros(n, dtype=torch.bool)
    params.update(changes)
    return augment.plan(params)


def unnormalised(augment, images, params):
    mean, std = augment.scale[torch.device("cpu")]
    return augment.apply(images, params) * std + mean


def yes(n):
    return torch.ones(n, dtype=torch.bool)


@pytest.fixture
def rgb():
    torch.manual_seed(0)
    return BatchAugment("natural", 8, 3), torch.rand(4, 3, 8, 8)


def test_fixed_geometry_matches_torchvision(rgb):
    augment, x = rgb
    torch.testing.assert_close(unnormalised(augment, x, plain(augment, 4)), x)
    turned = unnormalised(augment, x, plain(augment, 4, angle=torch.full((4,), 90.0)))
    torch.testing.assert_close(turned, TF.rotate(x, 90))  # counter-clockwise, as lightly's rr_degrees
    torch.testing.assert_close(unnormalised(augment, x, plain(augment, 4, hflip=yes(4))), x.flip(-1))
    torch.testing.assert_close(unnormalised(augment, x, plain(augment, 4, vflip=yes(4))), x.flip(-2))
    big = torch.rand(4, 3, 10, 10)
    corner = plain(augment, 4, crop=torch.tensor([[0.2, 0.0, 0.8, 0.8]] * 4))  # the top right 8 x 8 px
    torch.testing.assert_close(unnormalised(augment, big, corner), big[..., :8, 2:])
    # A 45-degree turn leaves the corners black (torchvision's fill), the centre as it was.
    corners = unnormalised(augment, x, plain(augment, 4, angle=torch.full((4,), 45.0)))
    assert corners[..., 0, 0].abs().max() < 1e-6
    torch.testing.assert_close(unnormalised(BatchAugment("natural", 16, 3), torch.ones(1, 3, 16, 16),
                                            plain(augment, 1, angle=torch.full((1,), 45.0)))[..., 6:10, 6:10],
                               torch.ones(1, 3, 4, 4))


def test_downscaled_crops_are_antialiased():
    augment = BatchAugment("natural", 8, 1)
    stripes = torch.zeros(1, 1, 32, 32)
    stripes[..., ::2] = 1  # one-pixel stripes: a point-sampled 4x shrink gives all 0 or all 1
    out = unnormalised(augment, stripes, plain(augment, 1))
    torch.testing.assert_close(out, torch.full_like(out, 0.5))


def test_fixed_colour_matches_torchvision(rgb):
    augment, x = rgb
    factors = torch.tensor([[1.2, 0.8, 1.3, 0.1]] * 4)
    in_order = plain(augment, 4, jitter=yes(4), factors=factors, order=torch.arange(4).repeat(4, 1))
    expected = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, 1.2), 0.8), 1.3), 0.1)
    torch.testing.assert_close(unnormalised(augment, x, in_order), expected, atol=1e-4, rtol=0)
    reversed_order = plain(augment, 4, jitter=yes(4), factors=factors, order=torch.arange(3, -1, -1).repeat(4, 1))
    expected = TF.adjust_brightness(TF.adjust_contrast(TF.adjust_saturation(TF.adjust_hue(x, 0.1), 1.3), 0.8), 1.2)
    torch.testing.assert_close(unnormalised(augment, x, reversed_order), expected, atol=1e-4, rtol=0)
    grey = unnormalised(augment, x, plain(augment, 4, grey=yes(4)))
    torch.testing.assert_close(grey, TF.rgb_to_grayscale(x, 3), atol=1e-4, rtol=0)


def test_fixed_blur_is_a_gaussian_with_edges_repeated(rgb):
    augment, x = rgb
    sigma = 1.0
    radius = 6  # 3 sigma of the preset's largest sigma, 2
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps /= taps.sum()
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    expected = F.conv2d(F.conv2d(padded.reshape(1, 12, 20, 20), taps.expand(12, 1, 1, -1), groups=12),
                        taps[:, None].expand(12, 1, -1, 1), groups=12).reshape(4, 3, 8, 8)
    blurred = unnormalised(augment, x, plain(augment, 4, blur=yes(4), sigma=torch.full((4,), sigma)))
    torch.testing.assert_close(blurred, expected)


def test_noise_has_each_images_drawn_standard_deviation():
    augment = BatchAugment("astro:noise=0.05", 32, 3)
    x = torch.full((4, 3, 32, 32), 0.5)
    sigmas = torch.tensor([0.0, 0.01, 0.03, 0.05])
    torch.manual_seed(0)
    residual = (unnormalised(augment, x, plain(augment, 4, noise=sigmas)) - x).flatten(1)
    assert residual[0].abs().max() < 1e-6  # no noise drawn: the image as it was
    assert residual[1:].mean(1).abs().max() < 4 * 0.05 / math.sqrt(residual.shape[1])
    torch.testing.assert_close(residual[1:].std(1), sigmas[1:], rtol=0.05, atol=0)


def test_sixteen_bit_input_keeps_its_precision():
    augment = BatchAugment("allsky", 8, 1)
    stored = torch.from_numpy(np.stack([np.full((1, 8, 8), 30000, np.uint16),
                                        np.full((1, 8, 8), 30001, np.uint16)]))  # the same value in 8 bits
    out = unnormalised(augment, unit_tensor(stored), plain(augment, 2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[1] - out[0], torch.full((1, 8, 8), 1 / 65535), atol=1e-7, rtol=0)


def torchvision_crop_areas(min_scale, max_ratio, side=96):
    draws = [T.RandomResizedCrop.get_params(torch.empty(1, side, side), (min_scale, 1.0), (1 / max_ratio, max_ratio))
             for _ in range(DRAWS // 4)]
    return np.array([h * w / side ** 2 for _, _, h, w in draws])


@pytest.mark.parametrize("preset", [*PRESETS, "astro:noise=0.05", "astro:min_scale=0.5,max_ratio=1"])
def test_drawn_parameters_follow_the_preset(preset):
    s = preset_settings(preset)
    torch.manual_seed(1)
    p = BatchAugment(preset, 32, 3).draw(DRAWS, 96, 96)
    left, top, width, height = p["crop"].T
    assert (left >= 0).all() and (top >= 0).all() and (left + width <= 1 + 1e-6).all() and (top + height <= 1 + 1e-6).all()
    area, aspect = (width * height).numpy(), (width / height).numpy()
    assert area.min() >= s["min_scale"] - 1e-6
    assert aspect.min() >= 1 / s["max_ratio"] - 1e-6 and aspect.max() <= s["max_ratio"] + 1e-6
    reference = torchvision_crop_areas(s["min_scale"], s["max_ratio"])  # pixel rounding aside, the same distribution
    assert abs(area.mean() - reference.mean()) < 0.01 and abs(np.median(area) - np.median(reference)) < 0.02
    # Crop centres are uniform over where the crop fits; min_scale 1 (astro) leaves no room: the whole image.
    room = (1 - width) > 1e-3
    if s["min_scale"] < 1:
        assert abs(float((left[room] / (1 - width[room])).mean()) - 0.5) < 0.02
    else:
        assert not room.any() and (height == 1).all()

    def rate(flags, expected):
        assert abs(flags.float().mean().item() - expected) < 4 * math.sqrt(0.25 / DRAWS) + 1e-9

    rate(p["hflip"], s["hf_prob"])
    rate(p["vflip"], s["vf_prob"])
    rate(p["angle"] != 0, s["rr_prob"])
    if s["rr_degrees"] is None:
        assert set(p["angle"].unique().tolist()) <= {0.0, 90.0}
    else:
        turned = p["angle"][p["angle"] != 0]
        assert turned.abs().max() <= s["rr_degrees"] and abs(turned.std().item() - s["rr_degrees"] / math.sqrt(3)) < 2
    rate(p["jitter"], s["cj_prob"])
    rate(p["grey"], s["random_gray_scale"])
    rate(p["blur"], s["gaussian_blur"])
    assert (p["sigma"] >= s["sigmas"][0]).all() and (p["sigma"] <= s["sigmas"][1]).all()
    assert (p["noise"] >= 0).all() and (p["noise"] <= s["noise"]).all()
    assert abs(p["noise"].mean().item() - s["noise"] / 2) <= 0.01 * s["noise"]  # uniform in [0, noise]
    for column, key in enumerate(("cj_bright", "cj_contrast", "cj_sat")):
        spread = s["cj_strength"] * s[key]
        f = p["factors"][:, column]
        assert f.min() >= max(0, 1 - spread) - 1e-6 and f.max() <= 1 + spread + 1e-6
        assert abs(f.mean().item() - (max(0, 1 - spread) + 1 + spread) / 2) < 0.01 + spread * 0.01
    assert p["factors"][:, 3].abs().max() <= s["cj_strength"] * s["cj_hue"] + 1e-6
    # Every order of the four jitter steps is drawn, each step equally often first.
    firsts = np.bincount(p["order"][:, 0].numpy(), minlength=4) / DRAWS
    assert np.abs(firsts - 0.25).max() < 0.02


def test_same_seed_same_views_on_any_batch_size():
    augment = BatchAugment("allsky", 16, 1)
    images = torch.rand(6, 1, 24, 24)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(first, augment(images))
