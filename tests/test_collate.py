"""Augmentation presets give two differently augmented views; evaluation is deterministic."""

import numpy as np
import pytest
import torch
from conftest import GALAXIES, THEMIS
from PIL import Image

from collate import (METHODS, PRESETS, SMALL_ARCHIVE, SMALL_ARCHIVE_METHODS, TEMPERATURES, preset_kwargs, preset_method,
                     preset_settings, preset_temperature, train_transform)
from collate import batch_augment as BatchAugment
from spacessl.view import eval_transform, normalization, normalize_stored
from spacessl.images import load_image, read_image
from spacessl.methods import RECIPES


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("channels,source", [(1, THEMIS), (3, GALAXIES)])
def test_two_views_of_the_right_shape(preset, channels, source):
    img = load_image(sorted(source.iterdir())[0], channels)
    torch.manual_seed(0)
    views = train_transform(preset, 48, channels)(img)
    assert len(views) == 2
    assert all(v.shape == (channels, 48, 48) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])


def test_allsky_keeps_grey_images_grey_and_has_no_colour_jitter():
    kwargs = PRESETS["allsky"]
    assert kwargs["cj_sat"] == 0 and kwargs["cj_hue"] == 0 and kwargs["random_gray_scale"] == 0
    assert kwargs["rr_degrees"] == 180 and kwargs["min_scale"] >= 0.3


def test_preset_changes_for_a_trial():
    changed = preset_settings("astro:min_scale=0.5, gaussian_blur=0.3")
    assert changed["min_scale"] == 0.5 and changed["gaussian_blur"] == 0.3
    assert {k: v for k, v in changed.items() if k not in ("min_scale", "gaussian_blur")} == \
        {k: v for k, v in preset_settings("astro").items() if k not in ("min_scale", "gaussian_blur")}
    assert preset_kwargs("allsky") == PRESETS["allsky"]
    quarter_turns = preset_settings("astro:rr_degrees=none,rr_prob=0.5")
    assert quarter_turns["rr_degrees"] is None and quarter_turns["rr_prob"] == 0.5
    assert preset_settings("natural:rr_degrees=45")["rr_degrees"] == 45.0  # lightly's default is None
    for bad in ("sky", "astro:sigmas=1", "astro:min_scale"):
        with pytest.raises(ValueError):
            preset_kwargs(bad)


def test_noise_trial_gives_views_gaussian_noise_of_a_drawn_strength():
    flat = Image.fromarray(np.full((40, 40, 3), 128, np.uint8))  # stays flat through every other step
    std = torch.tensor(normalization(3)["std"])[:, None, None]
    noise = 0.05
    assert all(preset_settings(name)["noise"] == 0 for name in PRESETS)

    def spreads(preset):  # each view's per-channel pixel std, in units of the [0, 1] range
        torch.manual_seed(0)
        transform = train_transform(preset, 32, 3)
        return torch.stack([(view * std).std((1, 2)) for _ in range(100) for view in transform(flat)])

    drawn = spreads(f"astro:noise={noise}")
    assert drawn.max() <= 1.1 * noise and abs(drawn.mean().item() - noise / 2) < 0.1 * noise  # uniform in [0, noise]
    assert spreads("astro").max() < 1e-6


def test_square_crops_zoom_without_stretching():
    yy, xx = np.mgrid[:64, :64]
    disc = Image.fromarray(np.where((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 10 ** 2, 255, 0).astype(np.uint8)).convert("RGB")

    def extents(preset):  # (width, height) of the disc in each of 100 views of 48 px
        torch.manual_seed(0)
        transform = train_transform(preset, 48, 3)
        masks = [(v.mean(0) > (v.mean(0).max() + v.mean(0).min()) / 2) for _ in range(50) for v in transform(disc)]
        return torch.tensor([[int(m.any(0).sum()), int(m.any(1).sum())] for m in masks])

    square = extents("astro:min_scale=0.5,max_ratio=1")
    assert (square[:, 0] - square[:, 1]).abs().max() <= 1 and square.float().std() > 1  # zoomed, never stretched
    assert (extents("astro:min_scale=0.5")[:, 0] - extents("astro:min_scale=0.5")[:, 1]).abs().max() >= 3


def test_every_preset_has_a_temperature_that_trial_changes_keep():
    assert set(TEMPERATURES) == set(PRESETS) and all(t > 0 for t in TEMPERATURES.values())
    assert preset_temperature("radio:min_scale=0.5") == preset_temperature("radio") == 0.2
    with pytest.raises(ValueError, match="unknown augmentation preset 'sky'"):
        preset_temperature("sky")


def test_every_preset_has_a_method_that_trial_changes_keep_and_small_archives_their_own():
    assert set(METHODS) == set(PRESETS) and set(METHODS.values()) | set(SMALL_ARCHIVE_METHODS.values()) <= set(RECIPES)
    assert preset_method("astro:min_scale=0.5", 6664) == preset_method("astro", SMALL_ARCHIVE) == "dino"
    assert preset_method("astro", SMALL_ARCHIVE - 1) == preset_method("astro:min_scale=0.5", 300) == "simclr"
    assert preset_method("allsky", 100) == preset_method("allsky", 100000) == "simclr"
    with pytest.raises(ValueError, match="unknown augmentation preset 'sky'"):
        preset_method("sky", 100)


def test_eval_transform_is_deterministic_and_resizes_the_whole_image():
    img = Image.new("L", (150, 100), 128)
    first, second = eval_transform(64, 1)(img), eval_transform(64, 1)(img)
    assert first.shape == (1, 64, 64) and torch.equal(first, second)


@pytest.mark.parametrize("channels,source,dtype", [(3, GALAXIES, torch.uint8), (1, THEMIS, torch.float32)])
def test_stored_eval_images_finished_on_the_device_equal_the_eval_transform(channels, source, dtype):
    """Embedding sends 8-bit pictures to the device as uint8 and normalises there: the numbers
    are exactly those of the per-image transform that queries use, for pictures and 16-bit data."""
    image = read_image(sorted(source.iterdir())[0], channels)
    stored = eval_transform(48, channels, stored=True)(image)
    assert stored.dtype == dtype and stored.shape == (channels, 48, 48)
    assert torch.equal(normalize_stored(stored[None], channels)[0], eval_transform(48, channels)(image))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_augmentation_gives_two_views_per_image(preset, channels):
    torch.manual_seed(0)
    batch = torch.rand(1, channels, 60, 60).repeat(4, 1, 1, 1)  # four copies of one image
    augment = BatchAugment(preset, 48, channels)
    view0, view1 = augment(batch), augment(batch)
    assert view0.shape == view1.shape == (4, channels, 48, 48)
    assert not torch.equal(view0, view1)
    assert not torch.equal(view0[0], view0[1])  # each copy gets its own random draw
