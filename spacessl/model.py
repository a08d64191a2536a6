"""The self-supervised LightningModule (a backbone plus one objective from methods.py) and
checkpoint loading.

One class for every method, for training and evaluation: `save_hyperparameters()` stores every
constructor argument in the checkpoint, so `load_model(path)` rebuilds the network from the file
alone, and `embed` is the same L2-normalised backbone output whatever the method.
"""

import pickle
import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from lightly.models.modules import MaskedVisionTransformerTorchvision
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_warmup_schedule
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchvision.models.vision_transformer import VisionTransformer

from .errors import UserError
from .files import atomic_path
from .methods import ADAMW_BETA2, OBJECTIVES, RECIPES, peak_lr
from .view import normalize_stored

RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
# (width, blocks, heads): DeiT-Tiny and -Small (Touvron et al. 2021), ViT-Base (Dosovitskiy et al. 2021).
VITS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
VIT_MLP_RATIO = 4
BACKBONES = (*RESNETS, *VITS)
# Bumped when the module changes in a way old checkpoints cannot be loaded into.
CHECKPOINT_FORMAT = 2
LR_END_FACTOR = 1e-3  # the cosine decays to this fraction of the peak rate (lightly's default)
# Checkpoints written before `turned_search` was stored pooled the turns by their preset, and only
# astro's did (collate.TURNED_SEARCH as it was then): a fact about old files, not a default.
LEGACY_TURNED = ("astro",)


def build_backbone(name: str, in_channels: int, input_size: int, patch_size: int):
    """A randomly initialised backbone mapping (N, in_channels, size, size) images to (N, width)
    features, and its width: a torchvision ResNet without its classifier, or a torchvision ViT
    (class-token output) wrapped by lightly so MAE can feed it only the visible patches."""
    if name in VITS:
        width, blocks, heads = VITS[name]
        vit = VisionTransformer(image_size=input_size, patch_size=patch_size, num_layers=blocks,
                                num_heads=heads, hidden_dim=width, mlp_dim=VIT_MLP_RATIO * width)
        if in_channels != 3:
            vit.conv_proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        return MaskedVisionTransformerTorchvision(vit), width
    net = RESNETS[name](weights=None)
    if in_channels != 3:
        # Same stem geometry, only the number of input planes follows the data.
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size,
                              stride=old.stride, padding=old.padding, bias=False)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


def pooled_over_turns(backbone, x):
    """The normalised mean of a backbone's unit outputs over the 8 quarter turns and mirrorings of
    each image of the batch x (N, C, H, W), H = W."""
    views = [torch.rot90(image, turns, dims=(2, 3)) for image in (x, x.flip(3)) for turns in range(4)]
    pooled = torch.stack([nn.functional.normalize(backbone(v).float(), dim=1) for v in views]).mean(0)
    return nn.functional.normalize(pooled, dim=1)


class SSLModel(pl.LightningModule):
    """A backbone trained by one of the objectives in methods.py.

    Embeddings for search come from the backbone (before any head), which the SimCLR paper
    (section 4.2) found to be the better representation; for MAE, the encoder's class token
    with no patch masked.
    """

    def __init__(self, method="simclr", backbone="resnet18", in_channels=3, input_size=224,
                 augmentation="allsky", stretch="auto", turned_search=False, proj_hidden_dim=512, proj_out_dim=128,
                 pred_hidden_dim=128, temperature=0.5, momentum_start=0.996, nn_bank_size=1024, patch_size=16,
                 mask_ratio=0.75, decoder_dim=256, decoder_layers=4, lr=0.075, weight_decay=1e-6,
                 warmup_epochs=10, max_epochs=100, batch_size=256, checkpoint_format=CHECKPOINT_FORMAT):
        super().__init__()
        self.save_hyperparameters()
        self.backbone, width = build_backbone(backbone, in_channels, input_size, patch_size)
        self.objective = OBJECTIVES[method](self.backbone, width, self.hparams)
        self.total_steps = 1  # training steps of the whole fit, set when it starts (BYOL's momentum schedule)

    @torch.no_grad()
    def embed(self, x):
        """L2-normalised backbone features: inner products are cosine similarities. With
        turned_search (images with no preferred orientation: the preset's collate.TURNED_SEARCH,
        stored in the checkpoint) the mean of those of the 8 quarter turns and mirrorings of each
        image, normalised again."""
        if not self.hparams.get("turned_search", False):
            return nn.functional.normalize(self.backbone(x).float(), dim=1)
        return pooled_over_turns(self.backbone, x)

    def embed_stored(self, x):
        """embed() of a batch from view.EvalTransform(stored=True), normalised here, on the
        batch's device."""
        return self.embed(normalize_stored(x, self.hparams.in_channels))

    def _shared_step(self, batch, stage: str):
        if batch is None:  # every image of this batch was unreadable (and skipped with a warning)
            return None
        (view0, view1), _ = batch
        loss, outputs = self.objective(self.backbone, view0, view1, self.global_step, self.total_steps)
        size = len(view0)
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 sync_dist=True, batch_size=size)
        # Collapse monitor (SimSiam paper, Chen & He 2021, section 4.1; used by SpaceSSL): the
        # per-dimension std of the normalised outputs is ~1/sqrt(d) when healthy, 0 when collapsed.
        self.log(f"{stage}_output_std", std_of_l2_normalized(outputs.detach()), on_step=False,
                 on_epoch=True, sync_dist=True, batch_size=size)
        return loss

    def on_fit_start(self):
        # Once per fit: Lightning's estimate reloads the training data each time it is asked.
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._shared_step(batch, "val")

    def predict_step(self, batch, batch_idx):
        """(embeddings, dataset indices) of a batch of (stored images, indices) from
        embeddings.eval_dataset(stored=True); None if all unreadable."""
        if batch is None:
            return None
        images, indices = batch
        return self.embed_stored(images), indices

    def configure_optimizers(self):
        hp = self.hparams
        recipe = RECIPES[hp.method]
        lr = peak_lr(recipe, hp.lr, hp.batch_size)
        decay, no_decay = get_weight_decay_parameters([self.backbone, self.objective])
        decay = [p for p in decay if p.requires_grad]  # BYOL's momentum copies are not trained
        no_decay = [p for p in no_decay if p.requires_grad]
        # Biases and norm layers get no weight decay (and so no LARS adaptation: lightly's LARS
        # skips parameters whose weight decay is 0), as in each method's reference code.
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        if recipe.optimizer == "lars":
            optimizer = LARS(groups, lr=lr, momentum=recipe.momentum, weight_decay=hp.weight_decay)
        elif recipe.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=(recipe.momentum, ADAMW_BETA2),
                                          weight_decay=hp.weight_decay)
        # Linear warm-up then cosine decay, per epoch, as all four papers. A LambdaLR's state holds
        # no schedule, so resuming with a larger MAX_EPOCHS stretches the cosine to the new end.
        scheduler = LambdaLR(optimizer, lambda epoch: cosine_warmup_schedule(
            epoch, max_steps=hp.max_epochs, start_value=1.0, end_value=LR_END_FACTOR,
            warmup_steps=hp.warmup_epochs, warmup_start_value=0.0))
        return [optimizer], [{"scheduler": scheduler, "interval": "epoch"}]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so an interrupted
    save never leaves a truncated last.ckpt behind for --RESUME to trip over."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:  # a full disk reaches torch.save as "iostream error"
            free = shutil.disk_usage(path.parent).free
            raise UserError(f"writing checkpoint {path} failed ({str(err).splitlines()[0][:120]}; "
                            f"{free / 1e6:.0f} MB free in {path.parent}); the checkpoints already there "
                            f"are kept: free some space, then continue with --RESUME=True") from None


def read_checkpoint(path) -> dict:
    """The checkpoint dict, loaded with weights_only=True (no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; train first with SSL_Train.py or pass "
                        f"--CHECKPOINT=<path to a .ckpt file>")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # not code objects: just not a checkpoint
            raise UserError(f"checkpoint {path} could not be read ({type(err).__name__}); it is damaged "
                            f"or not a PyTorch checkpoint") from None
        # torch's own message goes on to suggest weights_only=False: unsafe for a file from elsewhere.
        raise UserError(f"checkpoint {path} holds Python objects besides tensors and settings, which "
                        f"could run code when loaded, so it was refused; SSL_Train.py never writes such "
                        f"files: use a best.ckpt or last.ckpt from a run folder you trust") from None
    except Exception as err:  # torch raises many types for damaged or foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} could not be read ({reason[:200]}); it is damaged "
                        f"or not a PyTorch checkpoint") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "checkpoint_format" not in hp or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} was not written by SSL_Train.py (no model "
                        f"hyperparameters in it); pass a best.ckpt or last.ckpt from a run folder")
    if hp["checkpoint_format"] != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has format {hp['checkpoint_format']}, this code reads "
                        f"format {CHECKPOINT_FORMAT}; use the code version that trained it")
    sizes = {key: hp.get(key) for key in ("in_channels", "input_size", "patch_size", "batch_size", "max_epochs")}
    bad = {key: value for key, value in sizes.items()
           if not isinstance(value, int) or value < (0 if key == "max_epochs" else 1)}  # 0 epochs: INIT weights as they are
    if bad or hp.get("method") not in RECIPES or hp.get("backbone") not in BACKBONES:
        wrong = bad or {key: hp.get(key) for key in ("method", "backbone")}
        raise UserError(f"checkpoint {path} has impossible settings ({', '.join(f'{k}={v!r}' for k, v in wrong.items())}); "
                        f"it was altered or damaged: use another checkpoint")
    return ckpt


# torchvision's published ImageNet weights per backbone (INIT=imagenet), fetched into torch's cache.
IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1", "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
                    "resnet50": "ResNet50_Weights.IMAGENET1K_V2"}
CLASSIFIER_KEYS = ("fc.", "head.", "heads.", "classifier.")  # a supervised network's own classifier: not a backbone


def start_weights(init: str, backbone: str) -> dict:
    """The backbone state dict to start training from: "imagenet" (torchvision's weights, fetched
    once into torch's cache) or the path of a weights file (a torchvision/timm-style state dict, or
    a checkpoint of SSL_Train.py: its backbone, to continue on a new archive)."""
    if init == "imagenet":
        if backbone not in IMAGENET_WEIGHTS:
            raise UserError(f"--INIT=imagenet: torchvision publishes ImageNet weights for {', '.join(IMAGENET_WEIGHTS)} "
                            f"here; for --BACKBONE={backbone} pass the path of a weights file")
        try:
            return torchvision.models.get_weight(IMAGENET_WEIGHTS[backbone]).get_state_dict(progress=True)
        except OSError as err:  # URLError is an OSError: no network, or the download was cut
            raise UserError(f"--INIT=imagenet: could not fetch the ImageNet weights ({err}); on a machine with "
                            f"network run this once, or download {torchvision.models.get_weight(IMAGENET_WEIGHTS[backbone]).url} "
                            f"and pass --INIT=<that file>") from None
    path = Path(init)
    if not path.is_file():
        raise UserError(f"--INIT={init}: not a file; give none, imagenet or the path of a weights file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise UserError(f"--INIT={init}: could not be read as PyTorch weights ({type(err).__name__}); "
                        f"give a state dict (.pth/.pt) or a .ckpt written by SSL_Train.py") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):  # a Lightning checkpoint
        loaded = {k[len("backbone."):]: v for k, v in loaded["state_dict"].items() if k.startswith("backbone.")}
    elif isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):  # timm/DeiT training checkpoints
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise UserError(f"--INIT={init}: holds no state dict of tensors; give a backbone's state_dict() file")
    return {k.removeprefix("module."): v for k, v in loaded.items() if not k.removeprefix("module.").startswith(CLASSIFIER_KEYS)}


def adapt_input_planes(weight: torch.Tensor, planes: int) -> torch.Tensor:
    """A first convolution's RGB filters for `planes` input planes, as timm's adapt_input_conv:
    one plane sums them (a grey image seen as three equal planes gives the same response), more
    than three repeat them, scaled by 3 / planes to keep the response's size."""
    if planes == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-planes // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :planes] * (weight.shape[1] / planes)


def load_start_weights(model: "SSLModel", weights: dict, source: str) -> None:
    """Put start weights into the model's backbone (and a momentum target's copy of it). Refuses in
    one line weights whose names or shapes do not fit, naming the first mismatch."""
    own = model.backbone.state_dict()
    weights = dict(weights)
    for key, value in weights.items():
        if key in own and value.ndim == 4 and value.shape[1] == 3 and own[key].shape[1] != 3 \
                and value.shape[0] == own[key].shape[0]:
            weights[key] = adapt_input_planes(value, own[key].shape[1])
    missing = [k for k in own if k not in weights and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"--INIT={source}: the weights lack {missing[0]} (and {len(missing) - 1} more) of "
                        f"--BACKBONE={model.hparams.backbone}; were they made for another backbone?")
    for key, value in weights.items():
        if key not in own:
            raise UserError(f"--INIT={source}: {key} is not a weight of --BACKBONE={model.hparams.backbone}; "
                            f"were they made for another backbone?")
        if value.shape != own[key].shape:
            raise UserError(f"--INIT={source}: {key} has shape {tuple(value.shape)}, --BACKBONE="
                            f"{model.hparams.backbone} needs {tuple(own[key].shape)}")
    model.backbone.load_state_dict(weights, strict=False)
    target = getattr(model.objective, "backbone_momentum", None)
    if target is not None:  # BYOL's and DINO's teacher starts as a copy of the backbone
        target.load_state_dict(model.backbone.state_dict())


def load_model(path) -> SSLModel:
    """Rebuild the trained model from a checkpoint file alone, in eval mode on the CPU."""
    ckpt = read_checkpoint(path)
    try:
        hparams = dict(ckpt["hyper_parameters"])
        if "turned_search" not in hparams:  # written before checkpoints stored it (2026-12-07)
            hparams["turned_search"] = str(hparams.get("augmentation", "")).partition(":")[0] in LEGACY_TURNED
        model = SSLModel(**hparams)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match this code's model "
                        f"({first[:200]})") from None
    return model.eval()
