"""The --NAME=value override parser, the usage text and atomic writes."""

import os
import stat

import pytest
from conftest import ROOT

from spacessl.config import hyperparameters, resolve_config, usage
from spacessl.errors import UserError
from spacessl.files import atomic_path

DEFAULTS = {"RATE": 0.1, "EPOCHS": 3, "NAME": "run", "RESUME": False, "lower": 1, "_PRIVATE": 2,
            "TABLE": {"a": 1}}


def test_defaults_are_the_upper_case_scalars_only():
    assert hyperparameters(DEFAULTS) == {"RATE": 0.1, "EPOCHS": 3, "NAME": "run", "RESUME": False}


def test_overrides_take_the_type_of_the_default():
    cfg = resolve_config(DEFAULTS, ["--RATE=2e-3", "--EPOCHS=7", "--NAME=x=y", "--RESUME=true"])
    assert cfg == {"RATE": 0.002, "EPOCHS": 7, "NAME": "x=y", "RESUME": True}
    assert isinstance(cfg["RATE"], float) and isinstance(cfg["EPOCHS"], int)


@pytest.mark.parametrize("text,value", [("True", True), ("yes", True), ("1", True),
                                        ("False", False), ("no", False), ("0", False)])
def test_bool_words(text, value):
    assert resolve_config(DEFAULTS, [f"--RESUME={text}"])["RESUME"] is value


@pytest.mark.parametrize("arg,message", [
    ("--EPOCHS=2.5", "--EPOCHS=2.5: expected a whole number"),
    ("--RATE=fast", "--RATE=fast: expected a number"),
    ("--RESUME=maybe", "--RESUME=maybe: expected True or False"),
    ("--EPOCH=3", "unknown hyperparameter --EPOCH; did you mean EPOCHS?"),
    ("--lower=3", "unknown hyperparameter --lower"),
    ("EPOCHS=3", "is not of the form --NAME=value"),
    ("--EPOCHS", "is not of the form --NAME=value"),
])
def test_bad_overrides_are_user_errors(arg, message):
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace(".", r"\.")):
        resolve_config(DEFAULTS, [arg])


def test_usage_shows_each_hyperparameter_with_its_comment():
    text = usage("Doc line.", ROOT / "SSL_Train.py")
    assert text.startswith("Doc line.")
    assert "BATCH_SIZE = 256" in text and "# images per step" in text
    assert "_AUTO_WORKER_CAP" not in text
    # A comment continued on the following lines comes along; the code after the block does not.
    assert "| asinh (after the clip) | log (after the clip)" in text and "def check_config" not in text


def test_atomic_path_keeps_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_moves_the_file_into_place_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_only_a_scripts_own_block_are_its_settings():
    import SSL_Evaluate
    import SSL_Train

    train = resolve_config(vars(SSL_Train), [])
    assert "NN_BANK_SHARE" not in train and "INIT" in train and "LOG_EVERY_N_STEPS" in train
    evaluate = resolve_config(vars(SSL_Evaluate), [])
    assert not {"MIN_DIST", "NEIGHBOURS", "PERPLEXITY", "MAP_SEED"} & set(evaluate)
    with pytest.raises(UserError, match="unknown hyperparameter --NEIGHBOURS"):
        resolve_config(vars(SSL_Evaluate), ["--NEIGHBOURS=5"])
