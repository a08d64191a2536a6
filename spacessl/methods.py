"""The self-supervised objectives, one small class each, sharing one backbone (model.py).

Each objective owns its heads and loss and turns two augmented views (and the training step
out of the total) into (loss, outputs); the outputs (output_dim wide) feed the collapse monitor.
Embeddings for search always come from the backbone alone, so evaluation, probes and maps work
the same whatever the method.

  simclr   contrastive, NT-Xent over the batch (Chen et al. 2020, arXiv:2002.05709)
  simsiam  siamese with a predictor and stop-gradient, no negatives (Chen & He 2021,
           arXiv:2011.10566); the method the original SpaceSSL script trains
  byol     online network predicts a momentum-averaged target network (Grill et al. 2020,
           arXiv:2006.07733)
  nnclr    contrastive, but each view's positive is the nearest neighbour of the other view
           in a support set of recent embeddings (Dwibedi et al. 2021, arXiv:2104.14548), so
           similar images are pulled together beyond what one image's views share
  dino     self-distillation: the student's softmax over prototypes matches a momentum
           teacher's, centred and sharpened, for the other view (Caron et al. 2021,
           arXiv:2104.14294); two whole views, no multi-crop
  mae      masked autoencoder: a ViT encodes the visible 25 % of patches, a small decoder
           paints in the rest (He et al. 2021, arXiv:2111.06377); uses the first view only
"""

import copy
import warnings
from dataclasses import dataclass

import torch
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models import utils as lightly_utils
from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead, NNCLRPredictionHead,
                                    NNCLRProjectionHead, NNMemoryBankModule, SimCLRProjectionHead,
                                    SimSiamPredictionHead, SimSiamProjectionHead)
from lightly.models.modules.masked_autoencoder import MAEDecoder
from lightly.utils.scheduler import cosine_schedule
from torch import nn

# MAE: per-patch normalised pixel targets give better representations (MAE paper, table 1d).
MAE_NORM_EPS = 1e-6
MAE_DECODER_HEAD_DIM = 32  # decoder attention heads = decoder width / this


@dataclass(frozen=True)
class Recipe:
    """A method's published optimiser settings; the rate used is base_lr scaled by batch size."""
    optimizer: str      # lars | sgd | adamw
    base_lr: float
    lr_scaling: str     # sqrt: base * sqrt(batch) | linear: base * batch / 256
    weight_decay: float
    momentum: float     # SGD/LARS momentum, or AdamW's beta1


RECIPES = {
    # LARS, rate 0.075 sqrt(batch), decay 1e-6: SimCLR appendix B.1, the small-batch setting.
    "simclr": Recipe("lars", 0.075, "sqrt", 1e-6, 0.9),
    # SGD, rate 0.05 batch/256 (SimSiam paper, section 4), with the original SpaceSSL script's
    # momentum 0.57 and weight decay 5e-4.
    "simsiam": Recipe("sgd", 0.05, "linear", 5e-4, 0.57),
    # LARS, rate 0.2 batch/256, decay 1.5e-6: BYOL paper, appendix C.
    "byol": Recipe("lars", 0.2, "linear", 1.5e-6, 0.9),
    # LARS, rate 0.3 batch/256, decay 1e-6: the NNCLR paper's implementation details (4.8 at batch 4096).
    "nnclr": Recipe("lars", 0.3, "linear", 1e-6, 0.9),
    # SGD, rate 0.03 batch/256, decay 1e-4: the DINO reference code's ResNet-50 setting (its README).
    "dino": Recipe("sgd", 0.03, "linear", 1e-4, 0.9),
    # AdamW, rate 1.5e-4 batch/256, decay 0.05, betas (0.9, 0.95): MAE paper, table 8.
    "mae": Recipe("adamw", 1.5e-4, "linear", 0.05, 0.9),
}
ADAMW_BETA2 = 0.95  # MAE paper, table 8
# NNCLR's default support set holds an eighth of the training images: the paper's holds 98,304
# of ImageNet's 1.28M (a 13th; larger was better in its ablation); a set as large as the data would
# always hold each image's own previous embedding, its likeliest "neighbour".
NN_BANK_SHARE = 8
# DINO: prototypes in the softmax (the paper's 65,536 is for ImageNet; 2,048 is lightly's resnet18
# example), and the teacher's and student's softmax temperatures (the paper's defaults, sec. 3.1).
DINO_PROTOTYPES = 2048
DINO_TEACHER_TEMP = 0.04
DINO_STUDENT_TEMP = 0.1


def peak_lr(recipe: Recipe, base_lr: float, batch_size: int) -> float:
    return base_lr * (batch_size ** 0.5 if recipe.lr_scaling == "sqrt" else batch_size / 256)


class SimCLRObjective(nn.Module):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        self.projection_head = SimCLRProjectionHead(width, hp.proj_hidden_dim, hp.proj_out_dim)
        self.output_dim = hp.proj_out_dim
        # gather_distributed: with several GPUs each rank's positives meet every rank's negatives,
        # so the loss equals the single-device loss at the global batch size.
        self.criterion = NTXentLoss(temperature=hp.temperature, gather_distributed=True)

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        z0, z1 = self.projection_head(backbone(view0)), self.projection_head(backbone(view1))
        return self.criterion(z0, z1), z0


class SimSiamObjective(nn.Module):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        self.projection_head = SimSiamProjectionHead(width, hp.proj_hidden_dim, hp.proj_out_dim)
        self.output_dim = hp.proj_out_dim
        self.prediction_head = SimSiamPredictionHead(hp.proj_out_dim, hp.pred_hidden_dim, hp.proj_out_dim)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        z0, z1 = self.projection_head(backbone(view0)), self.projection_head(backbone(view1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        # The stop-gradient on the target branch is what prevents collapse (SimSiam, section 4.1).
        loss = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        return loss, z0


class MomentumTarget(nn.Module):
    """Base of the objectives with a target (teacher) network: untrained copies of the backbone
    and the projection head that follow the online ones by an exponential moving average whose
    momentum rises from momentum_start to 1 on a cosine over training (BYOL sec. 3.2, DINO sec. 3.1)."""

    def keep_target(self, backbone, head_copy: nn.Module, momentum_start: float) -> None:
        """Called once the online projection_head exists, with a copy of it."""
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = head_copy
        lightly_utils.deactivate_requires_grad(self.backbone_momentum)
        lightly_utils.deactivate_requires_grad(self.projection_head_momentum)
        self.momentum_start = momentum_start

    def follow(self, backbone, step: int, max_steps: int) -> None:
        """One moving-average step towards the online network; training only."""
        if self.training:
            tau = cosine_schedule(step, max_steps, self.momentum_start, 1.0)
            lightly_utils.update_momentum(backbone, self.backbone_momentum, m=tau)
            lightly_utils.update_momentum(self.projection_head, self.projection_head_momentum, m=tau)

    @torch.no_grad()
    def target(self, view):
        return self.projection_head_momentum(self.backbone_momentum(view))


class BYOLObjective(MomentumTarget):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        self.projection_head = BYOLProjectionHead(width, hp.proj_hidden_dim, hp.proj_out_dim)
        self.output_dim = hp.proj_out_dim
        self.prediction_head = BYOLPredictionHead(hp.proj_out_dim, hp.pred_hidden_dim, hp.proj_out_dim)
        self.keep_target(backbone, copy.deepcopy(self.projection_head), hp.momentum_start)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        self.follow(backbone, step, max_steps)
        z0, z1 = self.projection_head(backbone(view0)), self.projection_head(backbone(view1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        loss = 0.5 * (self.criterion(p0, self.target(view1)) + self.criterion(p1, self.target(view0)))
        return loss, z0


class NNCLRObjective(nn.Module):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        self.projection_head = NNCLRProjectionHead(width, hp.proj_hidden_dim, hp.proj_out_dim)
        self.output_dim = hp.proj_out_dim
        self.prediction_head = NNCLRPredictionHead(hp.proj_out_dim, hp.pred_hidden_dim, hp.proj_out_dim)
        # The support set: projections of the last nn_bank_size training images (a FIFO queue,
        # random unit vectors until filled). Not saved in checkpoints: it refills within
        # nn_bank_size / batch steps of a resume, and search never uses it.
        self.support = NNMemoryBankModule(size=(hp.nn_bank_size, hp.proj_out_dim))
        self.criterion = NTXentLoss(temperature=hp.temperature, gather_distributed=True)

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        z0, z1 = self.projection_head(backbone(view0)), self.projection_head(backbone(view1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        # Each view's nearest neighbour in the support set stands in for it as the other view's
        # positive; no gradient flows through the lookup (NNCLR, section 3). Only training
        # batches enter the queue, once per image.
        n0 = self.support(z0.detach().float(), update=False)
        n1 = self.support(z1.detach().float(), update=self.training)
        loss = 0.5 * (self.criterion(n0, p1) + self.criterion(n1, p0))
        return loss, z0


class DINOObjective(MomentumTarget):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm
            warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
            self.projection_head, teacher_head = (
                DINOProjectionHead(width, hp.proj_hidden_dim, hp.proj_out_dim, DINO_PROTOTYPES) for _ in range(2))
        # The teacher starts as the student: DINO's reference code loads the student's weights
        # (the head's weight-normalised last layer cannot be deep-copied).
        teacher_head.load_state_dict(self.projection_head.state_dict())
        self.output_dim = DINO_PROTOTYPES
        self.keep_target(backbone, teacher_head, hp.momentum_start)
        self.criterion = DINOLoss(DINO_PROTOTYPES, teacher_temp=DINO_TEACHER_TEMP, student_temp=DINO_STUDENT_TEMP)

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        self.follow(backbone, step, max_steps)
        teacher = [self.target(v) for v in (view0, view1)]
        student = [self.projection_head(backbone(v)) for v in (view0, view1)]
        # The centre (a moving average of the teacher's outputs, which with the sharp teacher
        # temperature keeps the outputs from collapsing, sec. 3.1) moves with training batches only.
        centre = self.criterion.center.clone()
        loss = self.criterion(teacher, student)
        if not self.training:
            self.criterion.center.copy_(centre)
        return loss, student[0]


class MAEObjective(nn.Module):
    def __init__(self, backbone, width: int, hp):
        super().__init__()
        self.patch_size, self.mask_ratio = hp.patch_size, hp.mask_ratio
        self.output_dim = width
        self.sequence_length = backbone.sequence_length  # patches + class token
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hp.decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)  # as the MAE reference code
        self.decoder = MAEDecoder(seq_length=self.sequence_length, num_layers=hp.decoder_layers,
                                  num_heads=max(1, hp.decoder_dim // MAE_DECODER_HEAD_DIM),
                                  embed_input_dim=width, hidden_dim=hp.decoder_dim, mlp_dim=4 * hp.decoder_dim,
                                  out_dim=hp.patch_size ** 2 * hp.in_channels)

    def forward(self, backbone, view0, view1, step: int, max_steps: int):
        n = len(view0)
        idx_keep, idx_mask = lightly_utils.random_token_mask(
            size=(n, self.sequence_length), mask_ratio=self.mask_ratio, device=view0.device)
        encoded = backbone.encode(images=view0, idx_keep=idx_keep)
        tokens = lightly_utils.repeat_token(self.mask_token, (n, self.sequence_length))
        tokens = lightly_utils.set_at_index(tokens, idx_keep, self.decoder.embed(encoded).type_as(tokens))
        predicted = self.decoder.predict(lightly_utils.get_at_index(self.decoder.decode(tokens), idx_mask))
        # idx_mask counts the class token as position 0; patches start at 0.
        target = lightly_utils.get_at_index(lightly_utils.patchify(view0, self.patch_size), idx_mask - 1)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + MAE_NORM_EPS).sqrt()
        loss = nn.functional.mse_loss(predicted.float(), target.float())
        return loss, encoded[:, 0]  # class token of the visible patches, for the output monitor


OBJECTIVES = {"simclr": SimCLRObjective, "simsiam": SimSiamObjective, "byol": BYOLObjective,
              "nnclr": NNCLRObjective, "dino": DINOObjective, "mae": MAEObjective}
