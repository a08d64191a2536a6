"""Post-processing of a set of embeddings before cosine search, fitted on the set itself
(no labels): the one place every search (SSL_Evaluate.py, SSL_Probe.py, maps, anomalies, the
notebook API) gets its vectors from.

  auto    whiten when the set has at least as many images as the embeddings have dimensions
          (so the variance of every direction is estimated), else centre: the measured default
  none    the model's unit embeddings as they are
  centre  minus the set's mean vector, then unit length again
  whiten  centred, rotated onto the set's principal axes and each axis divided by its standard
          deviation (plus a floor of WHITEN_FLOOR times the largest, so near-empty directions are
          not blown up), then unit length: PCA-whitening, which lets no few dominant directions
          decide every distance (Jégou & Chum 2012, "Negative evidences and co-occurrences in
          image retrieval: the benefit of PCA and whitening", ECCV).

Which one is the default is a measured choice (docs/quality.md, "Retrieval quality"): whitening raised
precision@10 on MiraBest (792 images, 512 dimensions) for trained and random networks alike, and
lowered the THEMIS temporal check (120 frames), where centring alone did no harm.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_path, fingerprint, new_memmap, write_json
from .progress import progress

log = logging.getLogger("spacessl")

KINDS = ("auto", "none", "centre", "whiten")
WHITEN_FLOOR = 1e-2      # variance floor of each whitened axis, relative to the largest variance
FIT_ROWS = 100_000       # at most this many rows (a seeded sample) to fit the mean and axes on
CHUNK = 65_536           # rows transformed at a time
SEED = 0


@dataclass
class Transform:
    kind: str
    mean: np.ndarray      # (d,) float64, zeros for "none"
    axes: np.ndarray      # (k, d) float64: rows to project on, already divided by their scales;
                          # k = d, or fewer when the set has fewer rows than dimensions

    def apply(self, vectors) -> np.ndarray:
        """Unit rows (float32) of the post-processed vectors."""
        x = np.asarray(vectors, dtype=np.float64)
        x = (x - self.mean) @ self.axes.T
        return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def resolve(kind: str, shape) -> str:
    """The kind "auto" stands for with a set of this (rows, dimensions) shape; others as given."""
    if kind not in KINDS:
        raise UserError(f"post-processing {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "auto":
        return "whiten" if shape[0] >= shape[1] else "centre"
    return kind


def fit(vectors, kind: str) -> Transform:
    """The transform of `kind` fitted on (a sample of) the rows of `vectors`."""
    kind = resolve(kind, vectors.shape)
    n, d = vectors.shape
    rows = np.arange(n) if n <= FIT_ROWS else np.sort(np.random.default_rng(SEED).choice(n, FIT_ROWS, replace=False))
    x = np.asarray(vectors[rows], dtype=np.float64)
    mean = x.mean(axis=0) if kind != "none" else np.zeros(d)
    if kind != "whiten":
        return Transform(kind, mean, np.eye(d))
    if len(x) < 2:
        raise UserError("whitening needs at least two embedded images; use --POSTPROCESS=none")
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s ** 2 / len(x)
    scales = np.sqrt(variance + WHITEN_FLOOR * variance.max())
    return Transform(kind, mean, vt / scales[:, None])


def search_vectors(vectors, kind: str, cache_dir: Path, source: dict):
    """(post-processed unit rows, Transform) for the embeddings in cache_dir (described by `source`,
    their meta.json). Anything but "none" is written once, beside the embeddings, as
    search_<kind>.npy (memory-mapped, built in chunks) with its transform, and reused while the
    embeddings are unchanged."""
    kind = resolve(kind, vectors.shape)
    if kind == "none":
        return vectors, fit(vectors, "none")
    data_path, fit_path, meta_path = (cache_dir / f"search_{kind}.npy", cache_dir / f"search_{kind}.npz",
                                      cache_dir / f"search_{kind}.json")
    settings = {"source": source, "kind": kind, "floor": WHITEN_FLOOR, "fit_rows": FIT_ROWS, "seed": SEED}
    try:
        saved = json.loads(meta_path.read_text())
        if saved["settings"] == settings and saved["files"] == [fingerprint(data_path), fingerprint(fit_path)]:
            with np.load(fit_path) as fitted:
                transform = Transform(kind, fitted["mean"], fitted["axes"])
            return np.load(data_path, mmap_mode="r"), transform
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("post-processed embeddings in %s are damaged (%s): building them again", cache_dir, err)
    meta_path.unlink(missing_ok=True)  # whatever follows, the old files no longer describe these embeddings
    log.info("post-processing %d embeddings (%s) into %s", len(vectors), kind, data_path)
    transform = fit(vectors, kind)
    with atomic_path(fit_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, mean=transform.mean, axes=transform.axes)
    with atomic_path(data_path) as tmp:
        out = new_memmap(tmp, np.float32, (len(vectors), transform.axes.shape[0]))
        for start in progress(range(0, len(vectors), CHUNK), desc=f"post-processing ({kind})", unit="chunks"):
            out[start:start + CHUNK] = transform.apply(vectors[start:start + CHUNK])
        out.flush()
        del out
    write_json(meta_path, {"settings": settings, "files": [fingerprint(data_path), fingerprint(fit_path)]})
    return np.load(data_path, mmap_mode="r"), transform
