"""The SimCLR LightningModule (Chen et al. 2020, arXiv:2002.05709) and checkpoint loading.

One class for training and evaluation: `save_hyperparameters()` stores every constructor
argument in the checkpoint, so `load_model(path)` rebuilds the network from the file alone.
"""

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_warmup_schedule
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from config import UserError, atomic_path

BACKBONES = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
# Bumped when the module changes in a way old checkpoints cannot be loaded into.
CHECKPOINT_FORMAT = 1
LARS_MOMENTUM = 0.9  # SimCLR appendix B.1
LR_END_FACTOR = 1e-3  # the cosine decays to this fraction of the peak rate (lightly's default)


def build_backbone(name: str, in_channels: int):
    """A randomly initialised torchvision ResNet without its classifier, and its feature width."""
    net = BACKBONES[name](weights=None)
    if in_channels != 3:
        # Same stem geometry, only the number of input planes follows the data.
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size,
                              stride=old.stride, padding=old.padding, bias=False)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


class SimCLR(pl.LightningModule):
    """SimCLR: a ResNet backbone, a 2-layer projection head and the NT-Xent loss.

    Embeddings for search come from the backbone (before the head), which the SimCLR paper
    (section 4.2) found to be the better representation.
    """

    def __init__(self, backbone="resnet18", in_channels=3, input_size=224, augmentation="allsky",
                 proj_hidden_dim=512, proj_out_dim=128, temperature=0.5, lr=0.075,
                 weight_decay=1e-6, warmup_epochs=10, max_epochs=100, batch_size=256,
                 checkpoint_format=CHECKPOINT_FORMAT):
        super().__init__()
        self.save_hyperparameters()
        self.backbone, width = build_backbone(backbone, in_channels)
        self.projection_head = SimCLRProjectionHead(width, proj_hidden_dim, proj_out_dim)
        # gather_distributed: with several GPUs each rank's positives meet every rank's negatives,
        # so the loss equals the single-device loss at the global batch size.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def forward(self, x):
        return self.projection_head(self.backbone(x))

    @torch.no_grad()
    def embed(self, x):
        """L2-normalised backbone features: inner products are cosine similarities."""
        return nn.functional.normalize(self.backbone(x).float(), dim=1)

    def _shared_step(self, batch, stage: str):
        if batch is None:  # every image of this batch was unreadable (and skipped with a warning)
            return None
        (view0, view1), _ = batch
        z0, z1 = self(view0), self(view1)
        loss = self.criterion(z0, z1)
        size = len(view0)
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 sync_dist=True, batch_size=size)
        # Collapse monitor (SimSiam paper, Chen & He 2021, section 4.1; used by SpaceSSL): the
        # per-dimension std of the normalised outputs is ~1/sqrt(d) when healthy, 0 when collapsed.
        self.log(f"{stage}_output_std", std_of_l2_normalized(z0.detach()), on_step=False,
                 on_epoch=True, sync_dist=True, batch_size=size)
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._shared_step(batch, "val")

    def predict_step(self, batch, batch_idx):
        """(embeddings, dataset indices) of a batch of (images, indices); None if all unreadable."""
        if batch is None:
            return None
        images, indices = batch
        return self.embed(images), indices

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = get_weight_decay_parameters([self.backbone, self.projection_head])
        # LARS with lr = LR * sqrt(batch size), weight decay 1e-6, linear warm-up then cosine
        # decay: the SimCLR recipe for small batches (Chen et al. 2020, appendix B.1), as in
        # lightly's ImageNet SimCLR benchmark. Biases and norm layers get neither weight decay
        # nor LARS adaptation (lightly's LARS skips parameters whose weight decay is 0).
        optimizer = LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                         lr=hp.lr * math.sqrt(hp.batch_size), momentum=LARS_MOMENTUM,
                         weight_decay=hp.weight_decay)
        # A LambdaLR's state holds no schedule, so resuming with a larger MAX_EPOCHS stretches the
        # cosine to the new end instead of running past the old one.
        scheduler = LambdaLR(optimizer, lambda epoch: cosine_warmup_schedule(
            epoch, max_steps=hp.max_epochs, start_value=1.0, end_value=LR_END_FACTOR,
            warmup_steps=hp.warmup_epochs, warmup_start_value=0.0))
        return [optimizer], [{"scheduler": scheduler, "interval": "epoch"}]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so an interrupted
    save never leaves a truncated last.ckpt behind for --RESUME to trip over."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)


def read_checkpoint(path) -> dict:
    """The checkpoint dict, loaded with weights_only=True (no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; train first with SSL_Train.py or pass "
                        f"--CHECKPOINT=<path to a .ckpt file>")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} could not be read ({reason[:200]}); it is damaged "
                        f"or not a PyTorch checkpoint") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "checkpoint_format" not in hp or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} was not written by SSL_Train.py (no SimCLR "
                        f"hyperparameters in it); pass a best.ckpt or last.ckpt from a run folder")
    if hp["checkpoint_format"] != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has format {hp['checkpoint_format']}, this code reads "
                        f"format {CHECKPOINT_FORMAT}; use the code version that trained it")
    return ckpt


def load_model(path) -> SimCLR:
    """Rebuild the trained model from a checkpoint file alone, in eval mode on the CPU."""
    ckpt = read_checkpoint(path)
    try:
        model = SimCLR(**ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match this code's SimCLR model "
                        f"({first[:200]})") from None
    return model.eval()
