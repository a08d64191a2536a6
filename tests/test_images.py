"""Finding images, reading every pixel mode as 8-bit L/RGB, and skipping unreadable files."""

import logging

import numpy as np
import pytest
from conftest import GALAXIES, THEMIS
from PIL import Image

from spacessl.errors import UserError
from spacessl.images import ImageFolder, collate_readable, detect_channels, find_images, load_image


def save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_find_images_is_recursive_sorted_and_skips_other_files(tmp_path):
    for name in ["b/2.PNG", "a.jpg", "c/d/3.tif", "e.bmp", "f.jpeg", ".hidden/x.png"]:
        save(tmp_path / name, Image.new("L", (4, 4)))
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == ["a.jpg", "b/2.PNG", "c/d/3.tif", "e.bmp", "f.jpeg"]


def test_missing_data_folder(tmp_path):
    with pytest.raises(UserError, match=r"data folder .*nowhere does not exist; set --DATA_DIR"):
        find_images(tmp_path / "nowhere")


def test_data_folder_that_is_a_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="is a file; it must be a folder"):
        find_images(tmp_path / "x.png")


def test_empty_data_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"no images \(.png.*found under"):
        find_images(tmp_path)


def test_16bit_themis_frame_is_stretched_to_the_full_8bit_range():
    path = sorted(THEMIS.iterdir())[0]
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(load_image(path, channels=1))
    assert pixels.dtype == np.uint8 and pixels.shape == (128, 128)
    assert pixels.min() == 0 and pixels.max() == 255
    # A fixed /257 would squeeze these raw counts (median ~6000) into the darkest 10 % instead.
    assert np.median(pixels) > 25


@pytest.mark.parametrize("mode,fill", [("L", 90), ("1", 1), ("I", 70000), ("F", 0.25),
                                       ("RGB", (10, 200, 30)), ("P", 3), ("CMYK", (0, 0, 0, 0))])
def test_every_mode_becomes_8bit_grey_or_rgb(tmp_path, mode, fill):
    img = Image.new(mode, (20, 10), fill)
    if mode in ("I", "F"):  # give high-depth images some range to stretch
        img.putpixel((0, 0), 0)
    path = save(tmp_path / f"x.{'tif' if mode in ('I', 'F', 'CMYK') else 'png'}", img)
    for channels, out_mode in ((1, "L"), (3, "RGB")):
        out = load_image(path, channels)
        assert out.mode == out_mode and out.size == (20, 10)


def test_grey_copied_into_rgb_and_colour_to_luminance(tmp_path):
    grey = save(tmp_path / "g.png", Image.new("L", (4, 4), 77))
    colour = save(tmp_path / "c.png", Image.new("RGB", (4, 4), (255, 0, 0)))
    assert np.asarray(load_image(grey, 3))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(load_image(colour, 1))[0, 0] == 76  # ITU-R 601 luma of pure red


def test_float_image_with_nan_and_inf_pixels(tmp_path):
    pixels = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    pixels[0, :3] = [np.nan, np.inf, -np.inf]
    out = np.asarray(load_image(save(tmp_path / "f.tif", Image.fromarray(pixels)), 1))
    assert out.dtype == np.uint8 and out.max() == 255


def test_transparent_areas_become_black(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    img.putpixel((0, 0), (200, 100, 50, 255))
    out = np.asarray(load_image(save(tmp_path / "a.png", img), 3))
    assert out[0, 0].tolist() == [200, 100, 50] and out[3, 3].tolist() == [0, 0, 0]


def test_detect_channels_follows_the_data(tmp_path):
    save(tmp_path / "a.png", Image.new("L", (4, 4)))
    save(tmp_path / "b.png", Image.new("I;16", (4, 4)))
    assert detect_channels(tmp_path, find_images(tmp_path)) == 1
    save(tmp_path / "c.png", Image.new("RGB", (4, 4)))
    assert detect_channels(tmp_path, find_images(tmp_path)) == 3
    assert detect_channels(THEMIS, find_images(THEMIS)) == 1
    assert detect_channels(GALAXIES, find_images(GALAXIES)) == 3


def make_broken(folder):
    """A truncated copy of a real PNG and a file of text named .png."""
    good = sorted(THEMIS.iterdir())[0].read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "garbage.png").write_text("this is not a PNG")


def test_unreadable_images_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    save(tmp_path / "good.png", Image.new("L", (8, 8), 5))
    make_broken(tmp_path)
    files = find_images(tmp_path)
    dataset = ImageFolder(tmp_path, files, 1, lambda img: int(np.asarray(img).sum()))
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        items = [dataset[i] for i in range(len(files))]
        dataset[files.index("garbage.png")]  # warned once per file, not once per epoch
    assert [item is None for item in items] == [True, False, True]  # garbage, good, truncated
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert any("garbage.png" in w for w in warnings) and any("truncated.png" in w for w in warnings)
    assert collate_readable([items[1], None])[1].tolist() == [1]
    assert collate_readable([None, None]) is None
