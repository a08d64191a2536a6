"""Scientific inputs: 16-bit at full precision, FITS, .npy, THEMIS raw PGM frames, many bands,
the stretches, and each way such files can be wrong."""

import gzip
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from conftest import GALAXIES, ROOT, THEMIS, TINY, run_cli
from PIL import Image

import SSL_Evaluate
import SSL_Train
from spacessl.errors import UserError
from spacessl.images import BadImage, detect_channels, find_images, load_image, pgm_frames, read_image, to_unit

THEMIS_FRAMES = ROOT.parent / "shared" / "data" / "themis_asi_gill_20140310" / "frames"
needs_shared = pytest.mark.skipif(not THEMIS_FRAMES.is_dir(), reason="../shared/data is not beside the repository")


def write_fits(path, data, header_only=False):
    hdus = [fits.PrimaryHDU()]
    if header_only:
        hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.zeros(3))]))
    else:
        hdus[0] = fits.PrimaryHDU(data)
    fits.HDUList(hdus).writeto(path)


def test_16_bit_images_keep_their_precision_up_to_the_stretch(tmp_path):
    # 1,000 distinct counts in a narrow band: an 8-bit copy could hold at most 256 of them.
    ramp = (3000 + np.arange(1000, dtype=np.uint16)).reshape(20, 50)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    unit = read_image(tmp_path / "ramp.png", 1)
    assert isinstance(unit, torch.Tensor) and unit.dtype == torch.float32 and unit.shape == (1, 20, 50)
    assert len(torch.unique(unit)) > 900
    assert float(unit.min()) == 0.0 and float(unit.max()) == 1.0  # 0.5-99.5 % clip


def test_8_bit_pictures_stay_pictures_for_lightly():
    image = read_image(next(GALAXIES.iterdir()), 3)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    stretched = read_image(next(GALAXIES.iterdir()), 3, "asinh")
    assert isinstance(stretched, torch.Tensor) and stretched.shape[0] == 3


@pytest.mark.parametrize("stretch", ["none", "percentile", "asinh", "log"])
def test_stretches_map_to_the_unit_range_in_order_and_blank_no_data(stretch):
    pixels = np.concatenate([np.linspace(0, 1, 200), [np.nan, np.inf, -np.inf]]).reshape(1, 1, -1)
    unit = to_unit(pixels, stretch)[0, 0]
    assert unit.dtype == np.float32 and np.isfinite(unit).all() and unit.min() >= 0 and unit.max() <= 1
    assert (np.diff(unit[:200]) >= 0).all() and unit[-1] < unit[200 - 1]
    assert unit[200] == 0.0  # NaN = no data = background


def test_asinh_lifts_faint_structure_above_a_linear_stretch():
    pixels = np.linspace(0, 1000, 1001).reshape(1, 1, -1)
    faint = 50  # 5 % of the range
    assert to_unit(pixels, "asinh")[0, 0, faint] > 2 * to_unit(pixels, "percentile")[0, 0, faint]


def test_fits_and_npy_files_are_read_as_bands(tmp_path):
    cube = np.random.default_rng(0).normal(size=(4, 24, 24)).astype(np.float32)
    cube[0, 0, 0] = np.nan
    write_fits(tmp_path / "cube.fits", cube)
    np.save(tmp_path / "cube.npy", cube)
    np.save(tmp_path / "plane.npy", cube[1])
    from_fits, from_npy = read_image(tmp_path / "cube.fits", 4), read_image(tmp_path / "cube.npy", 4)
    assert from_fits.shape == (4, 24, 24) and torch.equal(from_fits, from_npy)
    assert from_fits[0, 0, 0] == 0 and torch.isfinite(from_fits).all()
    assert read_image(tmp_path / "plane.npy", 1).shape == (1, 24, 24)
    assert load_image(tmp_path / "cube.npy", 4).mode == "L"  # shown as the mean of its bands


@pytest.mark.parametrize("make,message", [
    (lambda p: write_fits(p / "table.fits", None, header_only=True), "no image HDU"),
    (lambda p: np.save(p / "line.npy", np.zeros(10)), "expected 2-D (H x W) or 3-D"),
    (lambda p: np.save(p / "hyper.npy", np.zeros((2, 2, 8, 8))), "expected 2-D (H x W) or 3-D"),
    (lambda p: np.save(p / "four.npy", np.zeros((4, 8, 8))), "4 bands, but the model takes 1 channels"),
    (lambda p: (p / "cut.pgm").write_bytes(b"P5\n#c\n8 8\n65535\n" + bytes(10)), "frame 0 is truncated"),
])
def test_bad_science_files_are_refused_by_name(tmp_path, make, message):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(BadImage, match=re.escape(message)):
        read_image(f"{path}#0" if path.suffix == ".pgm" else path, 1)


def test_bad_science_files_are_skipped_with_a_warning_while_training(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    for i, image in enumerate(np.random.default_rng(1).normal(size=(10, 40, 40))):
        np.save(data / f"good{i}.npy", image.astype(np.float32))
    np.save(data / "line.npy", np.zeros(10))
    write_fits(data / "table.fits", None, header_only=True)
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        assert run_cli(SSL_Train, [f"--DATA_DIR={data}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r",
                                   *TINY, "--VAL_FRACTION=0", "--BATCH_SIZE=16"]) == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "line.npy" in warned and "table.fits" in warned and "no image HDU" in warned


def test_mixed_band_counts_in_one_folder_are_an_error(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8)))
    np.save(tmp_path / "b.npy", np.zeros((2, 8, 8)))
    with pytest.raises(UserError, match="different band counts"):
        detect_channels(tmp_path, find_images(tmp_path))
    assert run_cli(SSL_Train, [f"--DATA_DIR={tmp_path}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}"]) == 2
    assert "a.npy has 4" in capsys.readouterr().err


def test_a_many_band_archive_trains_embeds_and_is_searched(tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "cubes"
    data.mkdir()
    for i in range(12):
        write_fits(data / f"c{i:02d}.fits", rng.normal(size=(5, 40, 40)).astype(np.float32))
    assert run_cli(SSL_Train, [f"--DATA_DIR={data}", f"--CHECKPOINT_DIR={tmp_path}", "--RUN_NAME=bands",
                               *TINY, "--STRETCH=asinh"]) == 0
    ckpt = torch.load(tmp_path / "bands" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["in_channels"] == 5 and ckpt["hyper_parameters"]["stretch"] == "asinh"
    assert ckpt["state_dict"]["backbone.conv1.weight"].shape[1] == 5
    assert run_cli(SSL_Evaluate, [f"--RUN={tmp_path / 'bands'}", "--QUERY=c03.fits", "--TOP_K=4",
                                  "--NUM_WORKERS=0", "--EXPLAIN_TOP=1"]) == 0
    out = next((tmp_path / "bands" / "queries").iterdir())
    assert len(pd.read_csv(out / "neighbours.csv")) == 4
    assert (out / "neighbours.png").is_file() and (out / "explain_1.png").is_file()


@needs_shared
def test_themis_raw_frames_match_the_committed_16_bit_sample():
    frames = pgm_frames(str(THEMIS_FRAMES / "20140310_0600_gill_themis19_full.pgm.gz"))
    assert len(frames) == 20 and frames[0].shape == (256, 256) and frames[0].dtype == np.dtype(">u2")
    assert 3000 < np.median(frames[0]) < 10000  # raw counts on the CCD pedestal
    # data/sample/themis_gill_16bit holds these frames box-averaged to 128 px (data/make_sample.py).
    sample = np.asarray(Image.open(THEMIS / "20140310_060003_gill.png"), dtype=np.float64)
    boxed = frames[1].astype(np.float64).reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.abs(sample - boxed).max() <= 0.5


@needs_shared
def test_themis_frame_files_round_trip_through_embedding(tmp_path):
    data = tmp_path / "themis"
    data.mkdir()
    (data / "20140310_0605_gill_themis19_full.pgm").write_bytes(
        (THEMIS_FRAMES / "20140310_0605_gill_themis19_full.pgm").read_bytes())
    with gzip.open(THEMIS_FRAMES / "20140310_0600_gill_themis19_full.pgm.gz") as packed:
        (data / "first.pgm").write_bytes(packed.read()[: 3 * 131072])  # 2.x frames: the third is cut
    files = find_images(data)
    assert files[0] == "20140310_0605_gill_themis19_full.pgm#00" and len(files) == 20  # "first" unreadable
    assert run_cli(SSL_Train, [f"--DATA_DIR={data}", f"--CHECKPOINT_DIR={tmp_path}", "--RUN_NAME=asi",
                               *TINY, "--AUGMENTATION=allsky"]) == 0
    assert run_cli(SSL_Evaluate, [f"--RUN={tmp_path / 'asi'}", "--QUERY=20140310_0605_gill_themis19_full.pgm#07",
                                  "--TOP_K=2", "--NUM_WORKERS=0", "--REPORT=False"]) == 0
    names = pd.read_csv(next((tmp_path / "asi" / "embeddings").iterdir()) / "filenames.csv")["filename"]
    assert names.tolist() == files
    neighbours = pd.read_csv(next((tmp_path / "asi" / "queries").iterdir()) / "neighbours.csv")
    assert all(name.startswith("20140310_0605_gill_themis19_full.pgm#") for name in neighbours["filename"])
