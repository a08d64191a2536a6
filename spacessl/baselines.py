"""Reference embeddings that show what self-supervision adds: the same network with random
weights, and raw pixels (downsampled, PCA-reduced). Both are L2-normalised like the model's."""

import numpy as np
import torch
from sklearn.decomposition import PCA

from .errors import UserError
from .embeddings import embed_images
from .images import as_tensor, read_image, resize_unit
from .model import SSLModel


def random_init_embeddings(hparams: dict, root, files: list, seed: int, batch_size: int,
                           num_workers: int, device) -> np.ndarray:
    """Embeddings from an untrained copy of the architecture (same backbone, channels, size)."""
    torch.manual_seed(seed)
    vectors, kept = embed_images(SSLModel(**hparams), root, files, batch_size, num_workers, device)
    if kept != files:
        raise UserError(f"images under {root} changed while probing (some became unreadable); run again")
    return vectors


def raw_pixel_embeddings(root, files: list, channels: int, size: int, pca_dim: int, seed: int,
                         stretch: str = "auto") -> np.ndarray:
    """Each image resized to size x size, flattened, projected on its first principal components
    (PCA fitted on these images, without labels)."""
    pixels = np.stack([
        resize_unit(as_tensor(read_image(f"{root}/{name}", channels, stretch)), size).numpy().ravel()
        for name in files])
    components = min(pca_dim, *pixels.shape)
    reduced = PCA(n_components=components, random_state=seed).fit_transform(pixels)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return (reduced / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
