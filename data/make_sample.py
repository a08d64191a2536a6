"""Rebuild the small real sample in data/sample/ from the shared archive copies.

Usage (from the repository root, with ../shared beside it):
    python data/make_sample.py [--SHARED=../shared/data]

Writes, replacing nothing that exists (delete data/sample first to rebuild):
    data/sample/galaxies/<OBJID>.jpg     Galaxy Zoo 1 SDSS cutouts, centre 256 px of 423, resized
    data/sample/galaxy_labels.csv        filename,class,class_name for those cutouts
    data/sample/themis_gill_16bit/*.png  consecutive raw THEMIS frames kept as 16-bit grey PNG
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spacessl.images import pgm_frames  # noqa: E402  (the repository's reader: one PGM parser)

# Where the read-only archive copies live (see ../shared/data/*/SOURCE.md).
SHARED = "../shared/data"
# Galaxy cutouts per Galaxy Zoo 1 class id: 0 elliptical, 1 CW spiral, 2 ACW spiral, 3 edge-on,
# 5 merger ("don't know", class 4, is left out: it is not a morphology).
GALAXIES_PER_CLASS = {0: 110, 1: 40, 2: 40, 3: 80, 5: 30}
GALAXY_CLASS_NAMES = {0: "elliptical", 1: "spiral_cw", 2: "spiral_acw", 3: "edge_on", 5: "merger"}
# SDSS cutouts are 423 px with the galaxy in the middle; keeping the central 256 px drops mostly
# empty sky before downscaling (as in the Kaggle Galaxy Zoo solutions' centre crops).
GALAXY_CROP = 256
GALAXY_SIZE = 80  # px, stored size; the demo trains at 64 px crops of these
GALAXY_JPEG_QUALITY = 90  # the originals are JPEG already
# THEMIS: the first N consecutive 3-second frames of the GILL 06:00 UT file set, downscaled.
THEMIS_FRAMES = 40
THEMIS_SIZE = 128  # px
SEED = 0  # which galaxies are drawn


def make_galaxies(shared: Path, out: Path) -> None:
    src = shared / "galaxyzoo1_small" / "smallGZ1"
    labels = pd.read_csv(src / "smallCSV_class.csv")
    rng = np.random.default_rng(SEED)
    rows = []
    (out / "galaxies").mkdir(parents=True)
    for cls, count in GALAXIES_PER_CLASS.items():
        ids = labels.loc[labels.CLASS == cls, "OBJID"].to_numpy()
        for objid in sorted(rng.choice(ids, size=count, replace=False)):
            img = Image.open(src / "Imagenes" / f"{objid}.jpeg").convert("RGB")
            left = (img.width - GALAXY_CROP) // 2
            top = (img.height - GALAXY_CROP) // 2
            img = img.crop((left, top, left + GALAXY_CROP, top + GALAXY_CROP))
            img = img.resize((GALAXY_SIZE, GALAXY_SIZE), Image.Resampling.LANCZOS)
            name = f"{objid}.jpg"
            img.save(out / "galaxies" / name, quality=GALAXY_JPEG_QUALITY)
            rows.append((name, cls, GALAXY_CLASS_NAMES[cls]))
    pd.DataFrame(rows, columns=["filename", "class", "class_name"]).to_csv(
        out / "galaxy_labels.csv", index=False)


def make_themis(shared: Path, out: Path) -> None:
    src = shared / "themis_asi_gill_20140310" / "frames"
    (out / "themis_gill_16bit").mkdir(parents=True)
    written = 0
    for path in sorted(src.glob("*.pgm*")):
        minute = path.name[:13]  # 20140310_0600
        for i, frame in enumerate(pgm_frames(str(path))):
            if written == THEMIS_FRAMES:
                return
            small = Image.fromarray(frame.astype(np.float32)).resize(
                (THEMIS_SIZE, THEMIS_SIZE), Image.Resampling.BOX)
            pixels = np.clip(np.rint(np.asarray(small)), 0, 65535).astype(np.uint16)
            name = f"{minute}{i * 3:02d}_gill.png"  # 3-second cadence -> HHMMSS
            Image.fromarray(pixels).save(out / "themis_gill_16bit" / name)
            written += 1


def main() -> None:
    shared = Path(SHARED)
    for arg in sys.argv[1:]:
        if not arg.startswith("--SHARED="):
            sys.exit(f"error: unknown argument {arg!r}; only --SHARED=<path> is accepted")
        shared = Path(arg.split("=", 1)[1])
    out = Path(__file__).resolve().parent / "sample"
    if out.exists():
        sys.exit(f"error: {out} exists; delete it first to rebuild the sample")
    make_galaxies(shared, out)
    make_themis(shared, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
