"""INIT: a training run starts from ImageNet-style weights, a weights file or another run; MAX_EPOCHS=0
saves the start as it is. Every weights file here is made by the test; nothing is downloaded."""

import pytest
import torch
import torchvision
from conftest import TINY, run_cli

import SSL_Train
from spacessl.model import load_model

TINY_NO_EPOCHS = [a for a in TINY if not a.startswith("--MAX_EPOCHS")]


def train(data_dir, runs, *extra):
    return run_cli(SSL_Train, [f"--DATA_DIR={data_dir}", f"--CHECKPOINT_DIR={runs}", *TINY_NO_EPOCHS, *extra])


def torchvision_weights(path, seed=3):
    """A torchvision resnet18's whole state dict (its ImageNet classifier included), as a user downloads it."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_weights_file_is_the_start_and_zero_epochs_saves_it_as_is(galaxy_dir, tmp_path):
    state = torchvision_weights(tmp_path / "r18.pth")
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=w", f"--INIT={tmp_path / 'r18.pth'}", "--MAX_EPOCHS=0",
                 "--METHOD=dino") == 0
    model = load_model(tmp_path / "runs" / "w" / "last.ckpt")
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(model.backbone.state_dict()[key], state[key]), key
    # DINO's teacher starts as the same network (a random teacher would distil noise).
    teacher = model.objective.backbone_momentum.state_dict()
    assert torch.equal(teacher["conv1.weight"], state["conv1.weight"])


def test_grey_data_sum_the_rgb_filters_and_training_moves_on_from_the_start(tmp_path):
    from conftest import THEMIS, copy_images

    copy_images(THEMIS, tmp_path / "grey", 12)
    state = torchvision_weights(tmp_path / "r18.pth")
    assert train(tmp_path / "grey", tmp_path / "runs", "--RUN_NAME=g", "--AUGMENTATION=allsky",
                 f"--INIT={tmp_path / 'r18.pth'}", "--MAX_EPOCHS=0") == 0
    grey = load_model(tmp_path / "runs" / "g" / "last.ckpt").backbone.state_dict()["conv1.weight"]
    assert grey.shape[1] == 1 and torch.allclose(grey, state["conv1.weight"].sum(dim=1, keepdim=True))


def test_another_runs_checkpoint_continues_on_a_new_archive(galaxy_dir, tmp_path):
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=first", "--MAX_EPOCHS=1") == 0
    first = load_model(tmp_path / "runs" / "first" / "last.ckpt").backbone.state_dict()
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=second", "--MAX_EPOCHS=0",
                 f"--INIT={tmp_path / 'runs' / 'first' / 'last.ckpt'}") == 0
    second = load_model(tmp_path / "runs" / "second" / "last.ckpt").backbone.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("make, expected", [
    (lambda p: torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, p), "lack bn1.weight"),
    (lambda p: torch.save({**torchvision.models.resnet34().state_dict()}, p), "layer1.2.conv1.weight is not a weight"),
    (lambda p: torch.save({**torchvision.models.resnet18().state_dict(), "conv1.weight": torch.zeros(32, 3, 7, 7)}, p),
     "conv1.weight has shape (32, 3, 7, 7), --BACKBONE=resnet18 needs (64, 3, 7, 7)"),
    (lambda p: p.write_text("not weights"), "could not be read as PyTorch weights"),
    (lambda p: torch.save([1, 2], p), "holds no state dict of tensors"),
])
def test_weights_that_do_not_fit_are_refused_in_one_line(galaxy_dir, tmp_path, capsys, make, expected):
    make(tmp_path / "bad.pth")
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=bad", f"--INIT={tmp_path / 'bad.pth'}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --INIT=") and expected in err and len(err.splitlines()) == 1


def test_imagenet_offline_is_one_line(galaxy_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: it must fetch

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=i", "--INIT=imagenet") == 2
    err = capsys.readouterr().err.strip()
    assert "could not fetch the ImageNet weights" in err and "resnet18-" in err and len(err.splitlines()) == 1


def test_a_warm_up_longer_than_the_run_is_shortened_with_a_note(galaxy_dir, tmp_path, capsys):
    assert train(galaxy_dir, tmp_path / "runs", "--RUN_NAME=short", "--MAX_EPOCHS=1", "--WARMUP_EPOCHS=10") == 0
    assert "--WARMUP_EPOCHS=10 is not below MAX_EPOCHS=1: warming up for 0 epoch(s)" in capsys.readouterr().out
