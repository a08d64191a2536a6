"""Sequences: a camera's neighbouring frames are the same event again. Times come from THEMIS PGM
headers, FITS DATE-OBS or the file name, and EXCLUDE_WITHIN leaves out a query's own frames."""

import datetime

import numpy as np
import pandas as pd
from astropy.io import fits
from conftest import ROOT, THEMIS, TINY, copy_images, run_cli

import SSL_Evaluate
import SSL_Train
from spacessl.images import image_time

FRAMES = ROOT.parent / "shared" / "data" / "themis_asi_gill_20140310" / "frames"
UTC = datetime.timezone.utc


def test_times_from_pgm_headers_fits_and_names(tmp_path):
    # The sample's first THEMIS frame (from its name) and a FITS file with DATE-OBS and TIME-OBS.
    assert image_time(THEMIS, "20140310_060003_gill.png") == datetime.datetime(2014, 3, 10, 6, 0, 3, tzinfo=UTC)
    hdu = fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32))
    hdu.header["DATE-OBS"], hdu.header["TIME-OBS"] = "2015-01-02", "03:04:05.5"
    hdu.writeto(tmp_path / "f.fits")
    assert image_time(tmp_path, "f.fits") == datetime.datetime(2015, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    (tmp_path / "plain.png").write_bytes(b"")
    assert image_time(tmp_path, "plain.png") is None and image_time(tmp_path, "a_123456.png") is None
    if FRAMES.is_dir():  # a raw minute file: each frame's own "Image request start" line
        name = "20140310_0600_gill_themis19_full.pgm.gz"
        assert image_time(FRAMES, f"{name}#01") == datetime.datetime(2014, 3, 10, 6, 0, 3, 42202, tzinfo=UTC)


def trained_frames(tmp_path, rename=False):
    names = copy_images(THEMIS, tmp_path / "frames", 16)
    if rename:  # no time anywhere: frames by name order
        for i, name in enumerate(names):
            (tmp_path / "frames" / name).rename(tmp_path / "frames" / f"frame_{i:02d}.png")
    argv = [f"--DATA_DIR={tmp_path / 'frames'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r", *TINY,
            "--AUGMENTATION=allsky"]
    assert run_cli(SSL_Train, argv) == 0
    return tmp_path / "runs" / "r", sorted(p.name for p in (tmp_path / "frames").iterdir())


def query(run, name, *extra):
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", f"--QUERY={name}", "--TOP_K=15", "--NUM_WORKERS=0",
                                  "--REPORT=False", *extra]) == 0
    return pd.read_csv(sorted((run / "queries").glob("*/neighbours.csv"))[-1], keep_default_na=False)


def test_exclude_within_leaves_out_the_query_s_own_frames(tmp_path):
    run, names = trained_frames(tmp_path)
    plain = query(run, names[8])
    assert plain.columns.tolist() == ["rank", "filename", "cosine_distance", "time"]
    assert plain["time"].iloc[0].startswith("2014-03-10T06:00:")
    # Frames are 3 s apart: within 7 s of frame 8 are frames 6 to 10 (4 others).
    apart = query(run, names[8], "--EXCLUDE_WITHIN=7")
    assert len(apart) == 11 and apart["rank"].tolist() == list(range(1, 12))
    assert not set(apart["filename"]) & set(names[6:11])
    assert apart["filename"].tolist() == [n for n in plain["filename"] if n not in names[6:11]]


def test_without_times_the_window_counts_frames_in_name_order(tmp_path, capsys):
    run, names = trained_frames(tmp_path, rename=True)
    apart = query(run, names[8], "--EXCLUDE_WITHIN=2")
    assert set(apart["time"]) == {""} and len(apart) == 11 and not set(apart["filename"]) & set(names[6:11])
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", f"--QUERY={names[0]}", "--EXCLUDE_WITHIN=-1"]) == 2
    assert "--EXCLUDE_WITHIN=-1.0: seconds (or frames) >= 0" in capsys.readouterr().err
