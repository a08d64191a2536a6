"""Decode-once cache: built once with unreadable files marked, 16-bit data kept in 16 bits,
reused, rebuilt when stale or half-written; and training through it, with per-image or
whole-batch augmentation (PIPELINE=cache, PIPELINE=device)."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from spacessl.cache import CachedBatches, CachedImages, decoded_cache
from collate import batch_augment as BatchAugment
from collate import train_transform
from conftest import GALAXIES, THEMIS, TINY, copy_images, run_cli
from spacessl.images import find_images, load_image, read_image


def test_cache_holds_every_readable_image_once(tmp_path, caplog):
    names = copy_images(THEMIS, tmp_path / "data", 5)
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    files = find_images(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        images, readable = decoded_cache(tmp_path / "data", files, 1, 32, tmp_path / "cache", 0)
    assert images.shape == (6, 1, 32, 32) and images.dtype == np.uint16
    assert readable.tolist() == [name != "broken.png" for name in files]
    assert "broken.png" in caplog.text
    # 16-bit frames: stretched and resized at full precision, stored in 16 bits.
    unit = read_image(tmp_path / "data" / names[0], 1)
    resized = torch.nn.functional.interpolate(unit[None], size=(32, 32), mode="bilinear", antialias=True)
    expected = (resized[0, 0] * 65535).round().numpy()
    np.testing.assert_array_equal(images[files.index(names[0]), 0], expected)
    # An 8-bit picture is resized as a picture.
    galaxy = next(GALAXIES.iterdir())
    picture, _ = decoded_cache(GALAXIES.parent, [f"{GALAXIES.name}/{galaxy.name}"], 3, 32, tmp_path / "cache3", 0)
    rgb = np.asarray(load_image(galaxy, 3).resize((32, 32), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[0], rgb)


def test_cache_is_reused_and_rebuilt_when_stale_or_half_written(tmp_path, caplog):
    copy_images(THEMIS, tmp_path / "data", 3)
    files = find_images(tmp_path / "data")
    decoded_cache(tmp_path / "data", files, 1, 16, tmp_path / "cache", 0)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        decoded_cache(tmp_path / "data", files, 1, 16, tmp_path / "cache", 0)
    assert "reusing decoded images" in caplog.text
    for make_stale in (lambda: (tmp_path / "cache" / "meta.json").unlink(),       # interrupted build
                       lambda: (tmp_path / "data" / files[0]).touch()):           # image changed
        make_stale()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="spacessl"):
            decoded_cache(tmp_path / "data", files, 1, 16, tmp_path / "cache", 0)
        assert "decoding 3 images once" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        decoded_cache(tmp_path / "data", files, 1, 24, tmp_path / "cache", 0)  # another size
    assert "decoding 3 images once" in caplog.text


def test_cached_items_for_both_augmentation_paths(tmp_path):
    copy_images(THEMIS, tmp_path / "data", 2)
    files = find_images(tmp_path / "data")
    images, _ = decoded_cache(tmp_path / "data", files, 1, 40, tmp_path / "cache", 0)
    raw, positions, views = CachedBatches(images, [1, 0], BatchAugment("allsky", 32, 1))[[1, 0]]
    assert positions.tolist() == [0, 1] and raw.dtype == torch.uint16 and raw.shape == (2, 1, 40, 40)
    assert torch.equal(raw[0].int(), torch.from_numpy(images[1].astype(np.int32)))  # gathered in sorted order
    assert len(views) == 2 and views[0]["crop"].shape == (2, 4) and not torch.equal(views[0]["crop"], views[1]["crop"])
    (view0, view1), _ = CachedImages(images, [0, 1], train_transform("allsky", 32, 1))[1]
    assert view0.shape == view1.shape == (1, 32, 32) and not torch.equal(view0, view1)


def train(data, runs, name, *extra):
    import SSL_Train

    return run_cli(SSL_Train, [f"--DATA_DIR={data}", f"--CHECKPOINT_DIR={runs}", f"--RUN_NAME={name}", *TINY,
                               "--CACHE_SIZE=40", *extra])


@pytest.mark.parametrize("pipeline", ["device", "cache"])
def test_training_through_the_cache(galaxy_dir, tmp_path, pipeline):
    assert train(galaxy_dir, tmp_path, pipeline, f"--PIPELINE={pipeline}") == 0
    assert (tmp_path / pipeline / "cache" / "meta.json").is_file()
    assert (tmp_path / pipeline / "last.ckpt").is_file()
    config = json.loads((tmp_path / pipeline / "config.json").read_text())
    assert config["resolved"]["pipeline"] == pipeline


def test_sixteen_bit_frames_train_on_the_device_pipeline(tmp_path):
    copy_images(THEMIS, tmp_path / "data", 16)
    assert train(tmp_path / "data", tmp_path, "frames", "--PIPELINE=device") == 0
    assert json.loads((tmp_path / "frames" / "cache" / "meta.json").read_text())["dtype"] == "uint16"


def test_the_cpu_decodes_per_image_by_default_and_bad_pipelines_are_refused(galaxy_dir, tmp_path, capsys):
    import SSL_Train

    assert train(galaxy_dir, tmp_path, "auto") == 0
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["resolved"]["pipeline"] == "decode"
    assert not (tmp_path / "auto" / "cache").exists()
    argv = [f"--DATA_DIR={galaxy_dir}", f"--CHECKPOINT_DIR={tmp_path}", "--PIPELINE=gpu"]
    assert run_cli(SSL_Train, argv) == 2
    assert "--PIPELINE=gpu: choose auto, decode, cache, device" in capsys.readouterr().err
