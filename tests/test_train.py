"""SSL_Train.py end to end on a few real images, and each way its input can be wrong."""

import json
import logging
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import GALAXIES, ROOT, THEMIS, TINY, copy_images, run_cli
from PIL import Image

from collate import TEMPERATURES, preset_method

import SSL_Train


def train(data_dir, runs, *extra):
    return run_cli(SSL_Train, [f"--DATA_DIR={data_dir}", f"--CHECKPOINT_DIR={runs}", *TINY, *extra])


def test_one_epoch_writes_checkpoints_config_and_logs(trained_run):
    assert (trained_run / "best.ckpt").is_file() and (trained_run / "last.ckpt").is_file()
    config = json.loads((trained_run / "config.json").read_text())
    assert config["hyperparameters"]["INPUT_SIZE"] == 32
    assert config["resolved"]["channels"] == 3  # colour cutouts
    assert config["resolved"]["n_train"] + config["resolved"]["n_val"] == 24
    metrics = pd.read_csv(trained_run / "logs" / "version_0" / "metrics.csv")
    assert len(metrics["train_loss_step"].dropna()) == 2  # 21 training images, batches of 8,
    # ragged last batch dropped, --LOG_EVERY_N_STEPS=1
    for column in ("train_loss_epoch", "val_loss", "train_output_std", "val_output_std"):
        values = metrics[column].dropna()
        assert len(values) == 1 and values.iloc[0] > 0, column
    hp = torch.load(trained_run / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["input_size"] == 32 and hp["backbone"] == "resnet18"
    # TEMPERATURE=0 (the default) trains with the preset's temperature and says which in the config.
    assert config["hyperparameters"]["TEMPERATURE"] == 0
    assert hp["temperature"] == config["resolved"]["temperature"] == TEMPERATURES["astro"] > 0
    # METHOD=auto (the default) trains with the preset's method for the archive's size: 21 training
    # images are a small archive, where astro's is SimCLR.
    assert config["hyperparameters"]["METHOD"] == "auto"
    assert hp["method"] == config["resolved"]["method"] == preset_method("astro", 21) == "simclr"
    assert not [p for p in trained_run.iterdir() if p.name.endswith(".tmp")]


def test_grey_images_train_a_one_channel_model(tmp_path):
    copy_images(THEMIS, tmp_path / "themis", 12)
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    lightning.addHandler(handler)
    try:
        assert train(tmp_path / "themis", tmp_path / "runs", "--RUN_NAME=grey", "--AUGMENTATION=allsky") == 0
    finally:
        lightning.removeHandler(handler)
    # Lightning's own messages still come through; its advertisement does not.
    assert any(m.startswith("GPU available") for m in seen) and not any("Tip:" in m for m in seen)
    ckpt = torch.load(tmp_path / "runs" / "grey" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["in_channels"] == 1
    assert ckpt["state_dict"]["backbone.conv1.weight"].shape[1] == 1


def test_resume_continues_the_run_and_keeps_the_first_config(galaxy_dir, tmp_path):
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=r", "--METHOD=dino") == 0
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=r", "--METHOD=dino", "--RESUME=True", "--MAX_EPOCHS=2") == 0
    run = tmp_path / "r"
    # With these images and seed the second epoch's validation loss does not beat the first's, so
    # best.ckpt stays at epoch 0 and last.ckpt must hold the second epoch all the same.
    assert torch.load(run / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 1
    assert json.loads((run / "config.json").read_text())["hyperparameters"]["MAX_EPOCHS"] == 1
    assert json.loads((run / "config.resume1.json").read_text())["hyperparameters"]["MAX_EPOCHS"] == 2


def test_existing_run_folder_is_never_overwritten(galaxy_dir, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("keep me")
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=r") == 2
    assert "already exists; pass --RESUME=True" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["notes.txt"]


def test_resume_without_a_previous_run(galaxy_dir, tmp_path, capsys):
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=new", "--RESUME=True") == 2
    assert "cannot resume" in capsys.readouterr().err


def test_resume_with_a_different_network_is_refused(galaxy_dir, tmp_path, capsys):
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=r") == 0
    capsys.readouterr()
    assert train(galaxy_dir, tmp_path, "--RUN_NAME=r", "--RESUME=True", "--BACKBONE=resnet34") == 2
    assert "trained with backbone='resnet18'" in capsys.readouterr().err


def test_corrupt_and_mixed_images_train_with_a_warning(tmp_path, caplog):
    data = tmp_path / "mixed"
    copy_images(GALAXIES, data / "rgb", 6)  # 80 px JPEG, RGB
    copy_images(THEMIS, data / "grey16", 6)  # 128 px PNG, 16-bit grey
    Image.open(sorted(GALAXIES.iterdir())[10]).convert("RGBA").resize((50, 70)).save(data / "rgba.png")
    Image.open(sorted(GALAXIES.iterdir())[11]).convert("L").save(data / "grey8.png")
    raw = (data / "grey16" / sorted(p.name for p in (data / "grey16").iterdir())[0]).read_bytes()
    (data / "truncated.png").write_bytes(raw[: len(raw) // 2])
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        # One batch holds every image, so the broken one is certainly read (not dropped as ragged).
        assert train(data, tmp_path / "runs", "--RUN_NAME=m", "--VAL_FRACTION=0", "--BATCH_SIZE=32") == 0
    assert any("truncated.png" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "runs" / "m" / "last.ckpt").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--DATA_DIR=/no/such/folder"], "data folder /no/such/folder does not exist"),
    (["--BATCH_SIZE=many"], "--BATCH_SIZE=many: expected a whole number"),
    (["--BATCH_SIZ=8"], "unknown hyperparameter --BATCH_SIZ; did you mean BATCH_SIZE"),
    (["--AUGMENTATION=colour"], "choose one of allsky, astro, radio, natural"),
    (["--AUGMENTATION=astro:blur=1"], "augmentation change 'blur=1': give name=number"),
    (["--AUGMENTATION=astro:min_scale=big"], "'big' is not a number"),
    (["--WARMUP_EPOCHS=-1"], "--WARMUP_EPOCHS=-1: must be >= 0"),  # longer than the run: shortened (test_init.py)
    (["--TEMPERATURE=-0.1"], "--TEMPERATURE must be >= 0"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, message):
    assert run_cli(SSL_Train, [f"--CHECKPOINT_DIR={tmp_path}", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_cli(SSL_Train, [f"--DATA_DIR={tmp_path / 'empty'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}"]) == 2
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "SSL_Train.py", f"--DATA_DIR={tmp_path}/missing"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: data folder {tmp_path}/missing does not exist; set --DATA_DIR=<folder of images> "
        f"(see data/README.md for getting OATH)"]


def test_script_is_safe_to_import():
    result = subprocess.run([sys.executable, "-c", "import SSL_Train, SSL_Evaluate"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_default_run_name_comes_from_the_data_folder_and_method_and_a_hint_names_the_preset(tmp_path, capsys):
    copy_images(THEMIS, tmp_path / "frames", 12)
    args = ["--AUGMENTATION=astro", "--METHOD=simclr", "--RUN_NAME="]
    assert train(tmp_path / "frames", tmp_path / "runs", *args) == 0
    out = capsys.readouterr().out
    assert "note: the images are grey, --AUGMENTATION=astro was made for colour pictures; for all-sky frames use allsky" in out
    assert (tmp_path / "runs" / "frames_simclr" / "last.ckpt").is_file()
    assert train(tmp_path / "frames", tmp_path / "runs", *args) == 0  # taken: a second folder, with the time
    second = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("frames_simclr-")]
    assert len(second) == 1 and (tmp_path / "runs" / second[0] / "last.ckpt").is_file()
    assert train(tmp_path / "frames", tmp_path / "runs", *args, "--RESUME=True") == 2
    assert "name the run to continue with --RUN_NAME" in capsys.readouterr().err
