"""Shared fixtures: small real images from data/sample and one tiny trained run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "data" / "sample"
GALAXIES = SAMPLE / "galaxies"
THEMIS = SAMPLE / "themis_gill_16bit"
# Small enough for a CPU: 32 px crops, batches of 8, one epoch, no loader processes.
TINY = ["--INPUT_SIZE=32", "--BATCH_SIZE=8", "--MAX_EPOCHS=1", "--WARMUP_EPOCHS=0",
        "--NUM_WORKERS=0", "--PROJ_HIDDEN_DIM=64", "--PROJ_OUT_DIM=32", "--LOG_EVERY_N_STEPS=1",
        "--AUGMENTATION=astro"]


def run_cli(module, argv):
    """Run a script's main like the command line does; returns the exit status (0 = success)."""
    from spacessl.config import run_main

    try:
        run_main(module.main, argv)
    except SystemExit as stop:
        return stop.code
    return 0


def copy_images(source: Path, dest: Path, count: int) -> list:
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in source.iterdir())[:count]
    for name in names:
        shutil.copy(source / name, dest / name)
    return names


@pytest.fixture
def galaxy_dir(tmp_path):
    """16 real Galaxy Zoo cutouts in a fresh folder."""
    copy_images(GALAXIES, tmp_path / "galaxies", 16)
    return tmp_path / "galaxies"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder holding a one-epoch model trained on 24 real galaxy cutouts."""
    import SSL_Train

    base = tmp_path_factory.mktemp("trained")
    copy_images(GALAXIES, base / "data", 24)
    status = run_cli(SSL_Train, [f"--DATA_DIR={base / 'data'}", f"--CHECKPOINT_DIR={base / 'runs'}",
                                 "--RUN_NAME=tiny", *TINY])
    assert status == 0
    return base / "runs" / "tiny"


def browser_dom(page: Path, profile: Path) -> str:
    """The DOM of a local HTML page after a real headless Chromium has loaded it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # Flags: no sandbox as root, and no background network calls on a closed network.
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
