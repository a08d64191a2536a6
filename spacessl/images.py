"""Finding and reading the images of an archive folder, shared by training and evaluation.

Formats: PNG, JPEG, TIFF and BMP (PIL, 8 or 16 bits, any mode), FITS (astropy; the first HDU
holding an image, 2-D or bands x H x W), NumPy .npy (one 2-D or C x H x W array per file) and
THEMIS all-sky raw PGM files (.pgm or .pgm.gz, many 16-bit frames per file). Each frame of a
multi-frame file is one image, named "<file>#<frame>" (e.g. "20140310_0600_gill_themis19_full.pgm.gz#07").

What the model gets (`read_image`):
- an 8-bit picture (under STRETCH auto or none, with 1 or 3 channels) stays an 8-bit PIL image in
  mode "L" or "RGB", the input lightly's transforms were written for;
- anything else (16-bit, float, FITS, .npy, PGM, any number of bands) becomes a float32 tensor
  (bands, H, W) in [0, 1], stretched from the stored numbers themselves, so no precision is lost
  before the stretch. NaN pixels (no data) become 0 (background); +-inf the ends of the stretch.
`load_image` gives an 8-bit picture of any of them for galleries and maps. An unreadable file,
or one with a band count the model does not take, is skipped with a warning naming it.
"""

import datetime
import functools
import gzip
import hashlib
import io
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval, LinearStretch, LogStretch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, default_collate

from .errors import UserError

log = logging.getLogger("spacessl")

PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
ARRAY_EXTENSIONS = (".npy",)
FRAMES_EXTENSIONS = (".pgm", ".pgm.gz")
IMAGE_EXTENSIONS = PICTURE_EXTENSIONS + FITS_EXTENSIONS + ARRAY_EXTENSIONS + FRAMES_EXTENSIONS
FRAME_MARK = "#"  # "<file>#<frame>" names one frame of a multi-frame file
# Modes that carry one band of brightness; anything else is treated as colour.
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes with more than 8 bits per pixel: read as numbers, not as a picture.
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
STRETCHES = ("auto", "none", "percentile", "asinh", "log")
DEEP_MAX = np.iinfo(np.uint16).max  # stored 16-bit pixels: [0, 1] <-> 0..65535 (the decode-once cache's deep data)
# Raw camera frames (e.g. THEMIS: ~3,300-count CCD pedestal, saturated stars at 65,535) would be
# almost black on a fixed scale; clipping at the 0.5th and 99.5th percentiles is the usual
# quick-look display and keeps a few hot pixels from setting the scale. All bands share one
# scale, so colours and band ratios survive.
STRETCH_PERCENTILES = (0.5, 99.5)
# asinh: linear near the faint end, logarithmic for bright cores (Lupton et al. 2004, PASP 116,
# 133); log: for data spanning decades. Parameters as astropy.visualization's defaults.
ASINH_A = 0.1
LOG_A = 1000.0
# ITU-R 601 luma, as PIL's convert("L"): colour data fed to a 1-channel model.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# How many files (evenly spaced over the folder) are opened to decide the channel count.
CHANNEL_SAMPLE = 256
# NUM_WORKERS=-1 starts one loader process per core, at most this many: more rarely helps one GPU.
AUTO_WORKER_CAP = 8
# Multi-frame files decoded and kept per loader process (consecutive frames come from one file).
FRAME_FILES_KEPT = 2
PGM_TIME_KEY = b'#"Image request start"'  # a THEMIS raw frame's time, in its own header
NAME_TIME = re.compile(r"(?<!\d)(\d{8})[_T-]?(\d{6})(?!\d)")  # 20140310_060003 in a file name


class BadImage(ValueError):
    """A file that opens but cannot be used as an image (no image HDU, wrong rank, band count)."""


# PIL raises the first ones for unreadable, truncated or hostile files; gzip and astropy the next.
UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def has_extension(name: str, extensions) -> bool:
    return name.lower().endswith(extensions)


def walk_images(root: Path):
    """Relative names of the image files below root, hidden folders and files skipped. Linked
    folders are followed (an archive is often assembled from links to several disks), each real
    folder once, so a link loop ends with a warning instead of walking forever."""
    seen = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            log.warning("skipping %s: a link leads back to %s, already searched", folder, real)
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if not has_extension(name, IMAGE_EXTENSIONS) or not path.is_file():
                continue
            if name.startswith("."):  # hidden: editors' and systems' files (._x.png of macOS), said once each
                log.warning("skipping %s: its name starts with a dot (a hidden file); rename it to include it", path)
                continue
            yield path.relative_to(root).as_posix()


def find_images(root) -> list:
    """All images below `root` (recursive, hidden folders skipped), as sorted relative names;
    each frame of a multi-frame file is one name, "<file>#<frame>"."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder {root} does not exist; set --DATA_DIR=<folder of images> "
                        f"(see data/README.md for getting OATH)")
    if not root.is_dir():
        raise UserError(f"--DATA_DIR={root} is a file; it must be a folder of images")
    files = sorted(walk_images(root))
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; "
                        f"check --DATA_DIR")
    names = []
    for name in files:
        if not has_extension(name, FRAMES_EXTENSIONS):
            names.append(name)
            continue
        try:
            count = len(pgm_frames(str(root / name)))
        except UNREADABLE_ERRORS as err:
            log.warning("skipping unreadable frame file %s (%s)", root / name, err)
            continue
        width = len(str(count - 1))
        names.extend(f"{name}{FRAME_MARK}{i:0{width}d}" for i in range(count))
    return names


def split_frame(path):
    """(file, frame number or None) for a path that may name one frame of a multi-frame file."""
    path = Path(path)
    base, mark, frame = path.name.rpartition(FRAME_MARK)
    if mark and frame.isdigit() and has_extension(base, FRAMES_EXTENSIONS) and not path.exists():
        return path.with_name(base), int(frame)
    return path, None


def source_file(root, name) -> Path:
    """The file on disk that holds image `name` of the folder `root`."""
    return split_frame(Path(root) / name)[0]


def file_stamps(root, files) -> list:
    """Each image's file stamp "size:mtime:ctime" (ns). It changes when a file is replaced or
    touched, and when its content is rewritten with the same size and its old mtime put back
    (cp -p, rsync -t): the inode change time moves on every write and cannot be set back.
    Hashing every image's content instead would read the whole archive on each search."""
    stamps, seen = [], {}
    for name in files:
        source = source_file(root, name)
        if source not in seen:  # the frames of a multi-frame file share its one stamp
            stat = source.stat()
            seen[source] = f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
        stamps.append(seen[source])
    return stamps


def data_digest(root, files, stamps=None) -> str:
    """Changes when an image is added, removed, replaced or touched (see file_stamps; pass them
    when already made)."""
    digest = hashlib.sha256()
    for name, stamp in zip(files, file_stamps(root, files) if stamps is None else stamps):
        digest.update(f"{name}\t{stamp}\n".encode())
    return digest.hexdigest()


def pgm_frames(path: str) -> list:
    """Every frame of a file of concatenated binary PGM (P5) images, e.g. a THEMIS ASI raw
    minute file (20 frames of 256 x 256, 16-bit big-endian, '#' metadata lines before each),
    as 2-D uint8 or uint16 arrays. Plain PGM parsing: the only THEMIS reader on PyPI
    (themis-imager-readfile) pins numpy < 2."""
    return pgm_file(path)[0]


def pgm_times(path: str) -> list:
    """The time of each frame of such a file (its "Image request start" metadata line, UTC), or
    None for a frame without one."""
    return pgm_file(path)[1]


@functools.lru_cache(maxsize=FRAME_FILES_KEPT)
def pgm_file(path: str) -> tuple:
    """(frames, times) of a multi-frame PGM file (pgm_frames, pgm_times)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    frames, times, pos = [], [], 0
    while pos < len(data) and data[pos:].strip():
        if data[pos:pos + 2] != b"P5":
            raise BadImage(f"not a binary PGM (P5) frame at byte {pos}")
        pos += 2
        fields, taken = [], None
        while len(fields) < 3:  # width, height, maxval, between whitespace and '#' comment lines
            while data[pos:pos + 1].isspace():
                pos += 1
            if data[pos:pos + 1] == b"#":
                end = data.index(b"\n", pos)
                if data.startswith(PGM_TIME_KEY, pos):
                    taken = parse_time(data[pos + len(PGM_TIME_KEY):end].decode("ascii", "replace"))
                pos = end + 1
                continue
            end = pos
            while end < len(data) and data[end:end + 1].isdigit():
                end += 1
            if end == pos:
                raise BadImage(f"damaged PGM header at byte {pos}")
            fields.append(int(data[pos:end]))
            pos = end
        width, height, maxval = fields
        pos += 1  # one whitespace byte ends the header
        dtype = np.dtype(">u2" if maxval > 255 else "u1")
        size = width * height * dtype.itemsize
        if pos + size > len(data):
            raise BadImage(f"frame {len(frames)} is truncated")
        frames.append(np.frombuffer(data, dtype=dtype, count=width * height, offset=pos).reshape(height, width))
        times.append(taken)
        pos += size
    if not frames:
        raise BadImage("no PGM frame in the file")
    return frames, times


def parse_time(text: str):
    """A UTC datetime from an ISO-like text ("2014-03-10 06:00:00.063119 UTC",
    "2014-03-10T06:00:00"), or None."""
    text = text.strip().removesuffix("UTC").strip().replace(" ", "T", 1)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc) if moment.tzinfo is None else moment


def image_time(root, name: str):
    """When image `name` of folder `root` was taken (UTC datetime), or None where nothing says:
    a THEMIS PGM frame's own header line, a FITS header's DATE-OBS (plus TIME-OBS when the date
    holds no time), else a date and time in the file name (20140310_060003, 20140310T060003)."""
    file, frame = split_frame(Path(root) / name)
    try:
        if frame is not None or has_extension(file.name, FRAMES_EXTENSIONS):
            return pgm_times(str(file))[frame or 0]
        if has_extension(file.name, FITS_EXTENSIONS):
            header = fits.getheader(file)
            date = str(header.get("DATE-OBS", ""))
            if date and "T" not in date and header.get("TIME-OBS"):
                date = f"{date}T{header['TIME-OBS']}"
            found = parse_time(date) if date else None
            if found is not None:
                return found
    except UNREADABLE_ERRORS:
        return None
    match = NAME_TIME.search(Path(name).name)
    if match:
        try:
            return datetime.datetime.strptime("".join(match.groups()), "%Y%m%d%H%M%S").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            return None
    return None


def fits_pixels(path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus:
            if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                return np.asarray(hdu.data)
    raise BadImage("no image HDU (an HDU with 2-D or 3-D data) in the FITS file")


def as_bands(pixels: np.ndarray) -> np.ndarray:
    """A 2-D array as one band, a 3-D one as bands x H x W; other ranks are refused."""
    if pixels.ndim == 2:
        return pixels[None]
    if pixels.ndim == 3:
        return pixels
    raise BadImage(f"array of shape {pixels.shape}: expected 2-D (H x W) or 3-D (bands x H x W)")


def read_stored(path):
    """The image as stored: an 8-bit PIL picture ("L" or "RGB"; transparency laid on black), or
    a (bands, H, W) array of the stored numbers for everything else."""
    file, frame = split_frame(path)
    name = file.name
    if frame is not None:
        frames = pgm_frames(str(file))
        if frame >= len(frames):
            raise BadImage(f"frame {frame} asked for, the file has {len(frames)}")
        return frames[frame][None]
    if has_extension(name, FITS_EXTENSIONS):
        return as_bands(fits_pixels(file))
    if has_extension(name, ARRAY_EXTENSIONS):
        return as_bands(np.load(file, allow_pickle=False))
    if has_extension(name, FRAMES_EXTENSIONS):
        return pgm_frames(str(file))[0][None]
    with Image.open(file) as img:
        img.load()
    if img.mode in HIGH_DEPTH_MODES:
        return np.asarray(img)[None]
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas are empty sky, so they go on black rather than on whatever colour
        # the file happens to store under alpha = 0.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img.convert("L" if img.mode in GREY_MODES else "RGB")


def sniffed_suffix(data: bytes) -> str:
    """The file suffix of an image's bytes (an upload has no trustworthy name), so it is read by
    read_stored like the same file on disk: FITS, NumPy, PGM (each maybe gzipped), else a picture."""
    zipped = ".gz" if data[:2] == b"\x1f\x8b" else ""
    head = data[:16]
    if zipped:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
                head = unzipped.read(16)
        except (OSError, EOFError):
            return ".png"  # not a gzip file after all: let the picture reader say what it is
    if head.startswith(b"SIMPLE  ="):
        return ".fits" + zipped
    if head.startswith(b"P5") or head.startswith(b"P2"):
        return ".pgm" + zipped
    if head.startswith(b"\x93NUMPY") and not zipped:
        return ".npy"
    return ".png"  # PIL reads any picture format by its content, whatever the suffix


def picture_bands(picture: Image.Image) -> np.ndarray:
    """A PIL picture's pixels as a (bands, H, W) array of its stored type."""
    pixels = np.asarray(picture)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def stored_bands(stored) -> int:
    if isinstance(stored, Image.Image):
        return 1 if stored.mode == "L" else 3
    return stored.shape[0]


def to_unit(pixels: np.ndarray, stretch: str) -> np.ndarray:
    """Stored numbers -> float32 in [0, 1], one scale for all bands (see STRETCHES)."""
    pixels = np.asarray(pixels)
    if stretch == "none" or (stretch == "auto" and pixels.dtype == np.uint8):
        if np.issubdtype(pixels.dtype, np.integer):
            unit = pixels.astype(np.float32) / np.iinfo(pixels.dtype).max
        else:
            unit = np.clip(pixels.astype(np.float32), 0, 1)  # floats are taken as already in [0, 1]
    else:
        pixels = pixels.astype(np.float64)
        if not np.isfinite(pixels).any():
            return np.zeros(pixels.shape, dtype=np.float32)
        shape = {"asinh": AsinhStretch(ASINH_A), "log": LogStretch(LOG_A)}.get(stretch, LinearStretch())
        with np.errstate(invalid="ignore"):
            unit = (shape + AsymmetricPercentileInterval(*STRETCH_PERCENTILES))(pixels, clip=True)
    return np.nan_to_num(unit, nan=0.0).astype(np.float32)


def fit_bands(unit: np.ndarray, channels: int) -> np.ndarray:
    """(bands, H, W) -> (channels, H, W): grey is copied into 3 channels, colour becomes luma;
    any other mismatch is refused."""
    bands = unit.shape[0]
    if bands == channels:
        return unit
    if bands == 1 and channels == 3:
        return np.repeat(unit, 3, axis=0)
    if bands == 3 and channels == 1:
        return np.tensordot(LUMA, unit, axes=1)[None]
    raise BadImage(f"{bands} bands, but the model takes {channels} channels; keep images with "
                   f"another band count in another folder")


def read_image(path, channels: int, stretch: str = "auto"):
    """The model's input before resizing: an 8-bit PIL image ("L" for channels=1, "RGB" for 3)
    for 8-bit pictures under the auto/none stretch, else a float32 tensor (channels, H, W) in
    [0, 1]. Raises one of UNREADABLE_ERRORS for files that cannot be used.

    Grey images fed to a 3-channel model are copied into R, G and B; colour images fed to a
    1-channel model become luma (ITU-R 601, PIL's convert("L")).
    """
    return from_stored(read_stored(path), channels, stretch)


def from_stored(stored, channels: int, stretch: str = "auto"):
    """read_image's result for an image already in memory: a PIL picture, or an array of 2-D
    (H x W) or 3-D (bands x H x W) stored numbers."""
    if isinstance(stored, Image.Image):
        if stored.mode not in ("L", "RGB"):
            stored = np.asarray(stored)[None] if stored.mode in HIGH_DEPTH_MODES else \
                stored.convert("L" if stored.mode in GREY_MODES else "RGB")
    else:
        stored = as_bands(np.asarray(stored))
    if isinstance(stored, Image.Image):
        if stretch in ("auto", "none") and channels in (1, 3):
            return stored.convert("L" if channels == 1 else "RGB")
        stored = picture_bands(stored)
    return torch.from_numpy(np.ascontiguousarray(fit_bands(to_unit(stored, stretch), channels)))


def as_tensor(image) -> torch.Tensor:
    """A read_image result as a float32 tensor (channels, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return image
    return torch.from_numpy(np.ascontiguousarray(picture_bands(image), dtype=np.float32) / 255)


def unit_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """Stored pixels (any device) as float32 in [0, 1]: uint8 over 255, uint16 over DEEP_MAX, and
    floats (already in [0, 1]) as they are."""
    if pixels.dtype in (torch.uint8, torch.uint16):
        return pixels.to(torch.float32).div_(255 if pixels.dtype == torch.uint8 else DEEP_MAX)
    return pixels.to(torch.float32)


def resize_unit(image: torch.Tensor, side: int) -> torch.Tensor:
    """A float image (channels, H, W) resized to side x side (bilinear, antialiased)."""
    return torch.nn.functional.interpolate(image[None], size=(side, side), mode="bilinear",
                                           antialias=True, align_corners=False)[0]


def to_picture(image, channels: int) -> Image.Image:
    """A read_image result as an 8-bit picture for galleries, maps and reports: "L" or "RGB" as
    the model sees it; data of other band counts are shown as the mean of their bands."""
    if isinstance(image, Image.Image):
        return image
    pixels = image.numpy()
    pixels = pixels[0] if channels == 1 else pixels.transpose(1, 2, 0) if channels == 3 else pixels.mean(axis=0)
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8))


def load_image(path, channels: int, stretch: str = "auto") -> Image.Image:
    """The image at path as an 8-bit picture (see to_picture)."""
    return to_picture(read_image(path, channels, stretch), channels)


def thumbnail(image, channels: int, stretch: str, side: int) -> Image.Image:
    """The one small picture of an image (a path, or a read_image result), for every gallery,
    sheet, map, report and the explorer: read as the model reads it (its channels and stretch, so
    a 16-bit frame looks the same everywhere), 8-bit RGB, scaled to fit side x side with its
    aspect ratio kept."""
    if isinstance(image, (str, os.PathLike)):
        picture = load_image(image, channels, stretch)
    else:
        picture = to_picture(image, channels)
    return ImageOps.contain(picture.convert("RGB"), (side, side))


def detect_channels(root, files) -> int:
    """The model's input channels from the data: 1 if every sampled image is grey, 3 if some are
    colour pictures, N if all are N-band arrays; other mixtures are an error."""
    step = max(1, len(files) // CHANNEL_SAMPLE)
    seen = {}
    for name in files[::step]:
        try:
            seen.setdefault(stored_bands(read_stored(Path(root) / name)), name)
        except UNREADABLE_ERRORS:
            continue
    if set(seen) <= {1, 3}:
        return 3 if 3 in seen else 1
    if len(seen) == 1:
        return next(iter(seen))
    examples = ", ".join(f"{name} has {bands}" for bands, name in sorted(seen.items()))
    raise UserError(f"images under {root} have different band counts ({examples}); put each kind "
                    f"in its own folder, or set --CHANNELS to the count to keep (others are skipped)")


def loader_workers(requested: int) -> int:
    """DataLoader processes for a NUM_WORKERS setting (-1 = automatic)."""
    return requested if requested >= 0 else min(os.cpu_count() or 1, AUTO_WORKER_CAP)


class ImageFolder(Dataset):
    """(transformed image, index) pairs for the listed files; None for a file that cannot be read."""

    def __init__(self, root, files, channels: int, transform, stretch: str = "auto"):
        self.root, self.files, self.channels, self.transform = Path(root), files, channels, transform
        self.stretch = stretch
        self.warned = set()

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.root / self.files[index]
        try:
            img = read_image(path, self.channels, self.stretch)
        except UNREADABLE_ERRORS as err:
            if index not in self.warned:
                self.warned.add(index)
                log.warning("skipping unreadable image %s (%s)", path, err)
            return None
        return self.transform(img), index


def collate_readable(batch):
    """default_collate over the readable items; None when the whole batch was unreadable.
    Where stored images of a folder that mixes 8-bit pictures with deeper data meet in one batch
    (uint8 beside float in [0, 1], view.EvalTransform(stored=True)), the uint8 ones are
    scaled to [0, 1] first: stacking would otherwise promote 255 to 255.0."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    if len({item[0].dtype for item in batch if isinstance(item[0], torch.Tensor)}) > 1:
        batch = [(unit_tensor(image), *rest) for image, *rest in batch]
    return default_collate(batch)
