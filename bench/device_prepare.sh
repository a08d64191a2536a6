#!/usr/bin/env bash
# Prepare what bench/device_check.sh needs on a GPU machine that has PyTorch and Lightning but
# not our other packages nor ../shared (see DEVELOPERS.md): wheels in .whl/, data copies in
# devdata/shared/ (the layout of ../shared/data that bench/quality.py and bench/ablation.py read).
# Both folders are git-ignored here (.git/info/exclude) and carried to the machine; about 55 MB.
# Usage, from the repository root:  bash bench/device_prepare.sh
set -euo pipefail
SHARED=${SHARED:-../shared/data}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/devdata/' .git/info/exclude || echo /devdata/ >> .git/info/exclude
# The machine's Python is 3.12; it already has torch, torchvision, pytorch-lightning, numpy,
# pandas, scikit-learn, matplotlib and nvidia-ml-py. lightly runs without its hydra-core extra.
rm -rf .whl && mkdir .whl
for package in lightly==1.6.0 kornia==0.9.0 kornia_rs==0.2.0 astropy==8.0.2 astropy-iers-data pyerfa==2.0.1.5; do
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$package"
done
# Galaxy Zoo: the central 256 px of each 423 px cutout (what bench/quality.py keeps) at 128 px,
# JPEG quality 90 (about 30 MB instead of 93); MiraBest as it is (3 MB).
rm -rf devdata && mkdir -p devdata/shared/galaxyzoo1_small/smallGZ1/Imagenes
cp -r "$SHARED/mirabest_fr" devdata/shared/
cp "$SHARED/galaxyzoo1_small/smallGZ1/smallCSV_class.csv" devdata/shared/galaxyzoo1_small/smallGZ1/
.venv/bin/python - "$SHARED" <<'PY'
import sys
from pathlib import Path
from PIL import Image
source = Path(sys.argv[1]) / "galaxyzoo1_small/smallGZ1/Imagenes"
dest = Path("devdata/shared/galaxyzoo1_small/smallGZ1/Imagenes")
for path in sorted(source.glob("*.jpeg")):
    with Image.open(path) as img:
        left, top = (img.width - 256) // 2, (img.height - 256) // 2
        img = img.convert("RGB").crop((left, top, left + 256, top + 256))
        img.resize((128, 128), Image.Resampling.LANCZOS).save(dest / path.name, quality=90)
PY
du -sh .whl devdata
