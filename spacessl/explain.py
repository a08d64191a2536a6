"""Which regions make two images similar: Grad-CAM on the similarity of their embeddings.

Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) weights a convolutional layer's feature maps by
the spatial mean of a target's gradient and keeps the positive part. The target for each image
is its embedding projected on the other image's unit embedding, the other held fixed. (The plain
cosine is a poor target for near-duplicates: its gradient is the tiny part of the other
embedding orthogonal to this one and can be negative everywhere.) At the last layer before
global pooling this map is the spatial decomposition of the similarity of "Visualizing Deep
Similarity Networks" (Stylianou, Souvenir & Pless, WACV 2019).
"""

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .view import model_view
from .images import read_image, to_picture

CAM_LAYERS = ("layer1", "layer2", "layer3", "layer4")
OVERLAY_ALPHA = 0.45  # weight of the heat map over the image


def similarity_cams(model, image_a, image_b, layer: str):
    """(cosine similarity, map for a, map for b); each map in [0, 1] at the model's input size.
    The images are as images.read_image gives them."""
    transform = model_view(model)
    batch = torch.stack([transform(image_a), transform(image_b)]).to(model.device)
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["maps"] = output

    model.eval()
    handle = getattr(model.backbone, layer).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            features = model.backbone(batch).float()
            unit = torch.nn.functional.normalize(features, dim=1)
            similarity = (unit[0] * unit[1]).sum()
            # One backward pass serves both images: in eval mode each image's features depend
            # on that image alone.
            targets = (features[0] * unit[1].detach()).sum() + (features[1] * unit[0].detach()).sum()
            targets.backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    maps, grads = captured["maps"].detach(), captured["maps"].grad
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps).sum(dim=1, keepdim=True))
    cams = torch.nn.functional.interpolate(cams, size=batch.shape[-2:], mode="bilinear",
                                           align_corners=False)[:, 0]
    peak = cams.flatten(1).max(dim=1).values.clamp_min(torch.finfo(cams.dtype).tiny)
    cams = (cams / peak[:, None, None]).cpu().numpy()
    return float(similarity.detach()), cams[0], cams[1]


def overlay(image: Image.Image, cam: np.ndarray) -> Image.Image:
    """The image (resized to the map) with the map in the 'jet' colours laid over it."""
    size = cam.shape[::-1]
    base = np.asarray(image.convert("RGB").resize(size), dtype=np.float32) / 255
    heat = colormaps["jet"](cam)[..., :3]
    mixed = (1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * heat
    return Image.fromarray(np.round(mixed * 255).astype(np.uint8))


def explain_pair(model, path_a, path_b, layer: str, scale: int) -> Image.Image:
    """One picture: image a | a's map | b's map | image b, each `scale` times the input size."""
    channels, stretch = model.hparams.in_channels, model.hparams.stretch
    input_a, input_b = read_image(path_a, channels, stretch), read_image(path_b, channels, stretch)
    _, cam_a, cam_b = similarity_cams(model, input_a, input_b, layer)
    image_a, image_b = to_picture(input_a, channels), to_picture(input_b, channels)
    side = model.hparams.input_size
    panels = [image_a.convert("RGB").resize((side, side)), overlay(image_a, cam_a),
              overlay(image_b, cam_b), image_b.convert("RGB").resize((side, side))]
    strip = Image.new("RGB", (4 * side, side))
    for i, panel in enumerate(panels):
        strip.paste(panel, (i * side, 0))
    return strip.resize((4 * side * scale, side * scale), Image.Resampling.NEAREST)
