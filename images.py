"""Finding and reading the images of an archive folder, shared by training and evaluation.

Every image comes out as an 8-bit PIL image in mode "L" (1 channel) or "RGB" (3 channels),
whatever it was on disk (L, P, RGBA, CMYK, 16-bit I;16, 32-bit I or F), so the transforms in
collate.py see one kind of input. Unreadable files are skipped with a warning naming them.
"""

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, default_collate

from config import UserError

log = logging.getLogger("spacessl")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Modes that carry one band of brightness; anything else is treated as colour.
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes with more than 8 bits per pixel that need a stretch down to 8 bits.
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Raw camera frames (e.g. THEMIS: ~3,300-count CCD pedestal, saturated stars at 65,535) would be
# almost black after a fixed /257; a per-image percentile stretch is the usual quick-look display
# and keeps a few hot pixels from setting the scale.
STRETCH_PERCENTILES = (0.5, 99.5)
# How many files (evenly spaced over the folder) are opened to decide 1 vs 3 channels.
CHANNEL_SAMPLE = 256
# NUM_WORKERS=-1 starts one loader process per core, at most this many: more rarely helps one GPU.
AUTO_WORKER_CAP = 8
# PIL raises these for unreadable, truncated or hostile files.
UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def find_images(root) -> list:
    """All image files below `root` (recursive, hidden folders skipped), as sorted relative paths."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder {root} does not exist; set --DATA_DIR=<folder of images> "
                        f"(see data/README.md for getting OATH)")
    if not root.is_dir():
        raise UserError(f"--DATA_DIR={root} is a file; it must be a folder of images")
    files = sorted(
        path.relative_to(root).as_posix() for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; "
                        f"check --DATA_DIR")
    return files


def detect_channels(root, files) -> int:
    """1 if every sampled image is greyscale, else 3: the model's input follows the data."""
    step = max(1, len(files) // CHANNEL_SAMPLE)
    for name in files[::step]:
        try:
            with Image.open(Path(root) / name) as img:
                if img.mode not in GREY_MODES:
                    return 3
        except UNREADABLE_ERRORS:
            continue
    return 1


def stretch_to_8bit(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float64)
    finite = pixels[np.isfinite(pixels)]
    if finite.size == 0:
        return Image.new("L", img.size)
    low, high = np.percentile(finite, STRETCH_PERCENTILES)
    # NaN (no data) shows as background, +-inf as the ends of the stretch.
    pixels = np.nan_to_num(pixels, nan=low, posinf=high, neginf=low)
    scaled = np.clip((pixels - low) / max(high - low, np.finfo(float).eps), 0, 1)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8))


def load_image(path, channels: int) -> Image.Image:
    """Read one image as 8-bit "L" (channels=1) or "RGB" (channels=3). Raises on unreadable files.

    Grey images fed to a 3-channel model are copied into R, G and B; colour images fed to a
    1-channel model become luminance (ITU-R 601, PIL's convert("L")).
    """
    with Image.open(path) as img:
        img.load()
    if img.mode in HIGH_DEPTH_MODES:
        img = stretch_to_8bit(img)
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas are empty sky, so they go on black rather than on whatever colour
        # the file happens to store under alpha = 0.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def loader_workers(requested: int) -> int:
    """DataLoader processes for a NUM_WORKERS setting (-1 = automatic)."""
    return requested if requested >= 0 else min(os.cpu_count() or 1, AUTO_WORKER_CAP)


class ImageFolder(Dataset):
    """(transformed image, index) pairs for the listed files; None for a file that cannot be read."""

    def __init__(self, root, files, channels: int, transform):
        self.root, self.files, self.channels, self.transform = Path(root), files, channels, transform
        self.warned = set()

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.root / self.files[index]
        try:
            img = load_image(path, self.channels)
        except UNREADABLE_ERRORS as err:
            if index not in self.warned:
                self.warned.add(index)
                log.warning("skipping unreadable image %s (%s)", path, err)
            return None
        return self.transform(img), index


def collate_readable(batch):
    """default_collate over the readable items; None when the whole batch was unreadable."""
    batch = [item for item in batch if item is not None]
    return default_collate(batch) if batch else None
