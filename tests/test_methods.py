"""Every METHOD trains for one epoch and embeds through the unchanged evaluation path; each
method's own mechanics (optimiser recipe, BYOL's momentum target, NNCLR's support set, DINO's
centred teacher, MAE's masking) behave."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import GALAXIES, TINY, copy_images, run_cli

import SSL_Evaluate
import SSL_Train
from collate import preset_turned
from lightly.loss import NTXentLoss

from spacessl.methods import DINO_STUDENT_TEMP, DINO_TEACHER_TEMP, NN_BANK_SHARE, RECIPES
from spacessl.model import SSLModel, load_model

# A ViT small enough for the CPU: 32 px images in 8 px patches = 16 tokens.
VIT = ["--BACKBONE=vit_tiny", "--PATCH_SIZE=8", "--DECODER_DIM=32", "--DECODER_LAYERS=1"]
SETTINGS = {"simclr": [], "simsiam": ["--PRED_HIDDEN_DIM=8"], "byol": ["--PRED_HIDDEN_DIM=8"],
            "nnclr": ["--PRED_HIDDEN_DIM=8"], "dino": [], "mae": VIT}


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    data = tmp_path_factory.mktemp("methods") / "galaxies"
    copy_images(GALAXIES, data, 12)
    return data


@pytest.mark.parametrize("method", list(SETTINGS))
def test_each_method_trains_one_epoch_and_embeds(method, galaxies, tmp_path):
    assert run_cli(SSL_Train, [f"--DATA_DIR={galaxies}", f"--CHECKPOINT_DIR={tmp_path}", f"--RUN_NAME={method}",
                               f"--METHOD={method}", *TINY, *SETTINGS[method]]) == 0
    run = tmp_path / method
    metrics = pd.read_csv(run / "logs" / "version_0" / "metrics.csv")
    assert np.isfinite(metrics["train_loss_epoch"].dropna()).all() and len(metrics["val_loss"].dropna()) == 1
    hp = torch.load(run / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["method"] == method and hp["lr"] == RECIPES[method].base_lr
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    # NNCLR's support set defaults to a share of the training images, recorded with the run.
    assert hp["nn_bank_size"] == resolved["nn_bank_size"] == max(1, resolved["n_train"] // NN_BANK_SHARE)

    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--BATCH_SIZE=8",
                                  f"--QUERY={sorted(p.name for p in galaxies.iterdir())[0]}", "--TOP_K=3",
                                  "--REPORT=False"]) == 0
    cache = next((run / "embeddings").iterdir())
    vectors = np.load(cache / "embeddings.npy")
    assert vectors.shape[0] == 12 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    table = pd.read_csv(next((run / "queries").iterdir()) / "neighbours.csv")
    assert len(table) == 3


@pytest.mark.parametrize("method", list(SETTINGS))
def test_each_method_declares_the_width_of_its_monitored_outputs(method):
    # The collapse monitor's healthy level, 1/sqrt(width), must use the width the outputs have.
    model = SSLModel(method=method, backbone="vit_tiny" if method == "mae" else "resnet18", input_size=32,
                     patch_size=8, proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=8, decoder_dim=32,
                     decoder_layers=1)
    views = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    _, outputs = model.objective(model.backbone, *views, 0, 1)
    assert outputs.shape == (4, model.objective.output_dim)


@pytest.mark.parametrize("method,optimizer", [("simclr", "LARS"), ("simsiam", "SGD"), ("byol", "LARS"),
                                              ("nnclr", "LARS"), ("dino", "SGD"), ("mae", "AdamW")])
def test_each_method_uses_its_published_optimiser(method, optimizer):
    recipe = RECIPES[method]
    model = SSLModel(method=method, backbone="vit_tiny" if method == "mae" else "resnet18", input_size=32,
                     patch_size=8, batch_size=512, lr=recipe.base_lr, weight_decay=recipe.weight_decay)
    [opt], _ = model.configure_optimizers()
    assert type(opt).__name__ == optimizer
    expected_lr = recipe.base_lr * (512 ** 0.5 if method == "simclr" else 512 / 256)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(expected_lr)
    assert opt.param_groups[0]["weight_decay"] == recipe.weight_decay and opt.param_groups[1]["weight_decay"] == 0
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    assert all(p.requires_grad for p in model.parameters() if id(p) in trained)
    if method == "simsiam":  # the original SpaceSSL script's settings
        assert opt.param_groups[0]["momentum"] == 0.57 and recipe.weight_decay == 5e-4


def test_byol_target_follows_the_online_network_by_its_momentum():
    torch.manual_seed(0)
    views = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    for start, follows in ((1.0, False), (0.0, True)):
        model = SSLModel(method="byol", input_size=32, proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=8,
                         momentum_start=start).train()
        with torch.no_grad():
            for p in model.backbone.parameters():  # the online network moves away from the target
                p.add_(0.1)
        model.objective(model.backbone, *views, step=0, max_steps=10)
        online = model.backbone.conv1.weight
        target = model.objective.backbone_momentum.conv1.weight
        assert torch.equal(online, target) is follows
        assert not target.requires_grad


def test_nnclr_contrasts_each_view_with_the_nearest_support_vector_of_the_other():
    torch.manual_seed(0)
    model = SSLModel(method="nnclr", input_size=32, proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=8,
                     nn_bank_size=6, temperature=0.2).train()
    objective = model.objective
    support = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    objective.support.bank.copy_(support)
    views = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, _ = objective(model.backbone, *views, step=0, max_steps=1)

    # The same loss by hand: each projection's most cosine-similar support vector is the positive
    # for the other view's prediction (NNCLR, eq. 1), symmetrised.
    with torch.no_grad():
        z = [objective.projection_head(model.backbone(v)) for v in views]
        p = [objective.prediction_head(zi) for zi in z]
        nearest = [support[(torch.nn.functional.normalize(zi, dim=1) @ support.T).argmax(dim=1)] for zi in z]
        ntxent = NTXentLoss(temperature=0.2)
        expected = 0.5 * (ntxent(nearest[0], p[1]) + ntxent(nearest[1], p[0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # Training enqueued the second view's 4 projections into the queue's first 4 slots (it fills
    # from slot 0); the other 2 support vectors are still there.
    assert torch.allclose(objective.support.bank[:4], z[1], atol=1e-5)
    assert torch.equal(objective.support.bank[4:], support[4:])

    model.eval()  # validation looks up neighbours but leaves the support set alone
    before = objective.support.bank.clone()
    objective(model.backbone, *views, step=0, max_steps=1)
    assert torch.equal(objective.support.bank, before)


def test_dino_matches_the_centred_sharpened_teacher_of_the_other_view():
    torch.manual_seed(0)
    model = SSLModel(method="dino", input_size=32, proj_hidden_dim=32, proj_out_dim=16).train()
    objective = model.objective
    objective.criterion.center.normal_()  # a centre away from zero, as during training
    centre = objective.criterion.center.clone()
    views = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, _ = objective(model.backbone, *views, step=0, max_steps=10)

    # The same loss by hand (DINO, algorithm 1): cross-entropy between the teacher's softmax of
    # one view, centred and at temperature 0.04, and the student's at 0.1 of the other view.
    with torch.no_grad():
        teacher = [objective.projection_head_momentum(objective.backbone_momentum(v)) for v in views]
        student = [objective.projection_head(model.backbone(v)) for v in views]

        def h(t, s):
            return -(torch.softmax((t - centre[0]) / DINO_TEACHER_TEMP, 1) * torch.log_softmax(s / DINO_STUDENT_TEMP, 1)).sum(1).mean()
        expected = 0.5 * (h(teacher[0], student[1]) + h(teacher[1], student[0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # Training moved the centre towards the teacher's mean output (momentum 0.9) ...
    torch.testing.assert_close(objective.criterion.center[0, 0], 0.9 * centre[0, 0] + 0.1 * torch.cat(teacher).mean(0))
    assert not any(p.requires_grad for p in objective.projection_head_momentum.parameters())
    model.eval()  # ... validation does not
    before = objective.criterion.center.clone()
    objective(model.backbone, *views, step=0, max_steps=10)
    assert torch.equal(objective.criterion.center, before)


@pytest.mark.parametrize("method", ["nnclr", "byol", "dino"])
def test_methods_with_heads_round_trip_through_a_checkpoint(method, tmp_path):
    model = SSLModel(method=method, input_size=32, proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=8,
                     nn_bank_size=5).eval()
    for buffer in model.buffers():  # away from their initial values: BN statistics, DINO's centre
        buffer.add_(1)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, tmp_path / "m.ckpt")
    images = torch.randn(3, 3, 32, 32)
    loaded = load_model(tmp_path / "m.ckpt")
    assert loaded.hparams.method == method and torch.equal(loaded.embed(images), model.embed(images))
    saved = model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())


def test_mae_masks_while_training_but_embeds_every_patch():
    torch.manual_seed(0)
    model = SSLModel(method="mae", backbone="vit_tiny", in_channels=1, input_size=32, patch_size=8,
                     decoder_dim=32, decoder_layers=1, mask_ratio=0.75)
    images = torch.randn(2, 1, 32, 32)
    first, second = model.objective(model.backbone, images, images, 0, 1), model.objective(model.backbone, images, images, 0, 1)
    assert not torch.equal(first[0], second[0])  # a new random mask each step
    model.eval()
    assert torch.equal(model.embed(images), model.embed(images))  # no mask: deterministic


def test_mae_round_trips_through_a_checkpoint(tmp_path):
    model = SSLModel(method="mae", backbone="vit_tiny", in_channels=5, input_size=16, patch_size=8,
                     decoder_dim=32, decoder_layers=1).eval()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, tmp_path / "m.ckpt")
    images = torch.randn(3, 5, 16, 16)
    assert torch.equal(load_model(tmp_path / "m.ckpt").embed(images), model.embed(images))


@pytest.mark.parametrize("argv,message", [
    (["--METHOD=mae"], "--METHOD=mae masks patches, so it needs a ViT"),
    (["--METHOD=swav"], "--METHOD=swav: choose auto, simclr, simsiam, byol, nnclr, dino, mae"),
    (["--METHOD=nnclr", "--NN_BANK_SIZE=-1"], "--NN_BANK_SIZE=-1: 0 (auto) or a number of embeddings"),
    (["--BACKBONE=vit_tiny", "--PATCH_SIZE=7"], "--PATCH_SIZE=7 must divide --INPUT_SIZE=32"),
    (["--METHOD=mae", *VIT, "--MASK_RATIO=1"], "--MASK_RATIO=1.0: must be in (0, 1)"),
])
def test_method_settings_are_checked(galaxies, tmp_path, capsys, argv, message):
    assert run_cli(SSL_Train, [f"--DATA_DIR={galaxies}", f"--CHECKPOINT_DIR={tmp_path}", *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_astro_search_vectors_do_not_turn_with_the_image():
    # collate.TURNED_SEARCH: a galaxy's search vector pools the 8 quarter turns and mirrorings, so
    # any of them gives the same vector; a preset without it (natural photographs) keeps "up".
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    turned = SSLModel(augmentation="astro", input_size=32, turned_search=preset_turned("astro")).eval()
    for view in (torch.rot90(images, 1, dims=(2, 3)), images.flip(3), torch.rot90(images.flip(2), 3, dims=(2, 3))):
        torch.testing.assert_close(turned.embed(view), turned.embed(images), atol=1e-5, rtol=0)
    plain = SSLModel(augmentation="natural", input_size=32, turned_search=preset_turned("natural")).eval()
    assert not torch.allclose(plain.embed(torch.rot90(images, 1, dims=(2, 3))), plain.embed(images), atol=1e-3)
