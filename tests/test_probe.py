"""SSL_Probe.py end to end on a tiny trained run, and the online kNN monitor in SSL_Train.py."""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE, TINY, run_cli
from PIL import Image

import SSL_Probe
import SSL_Train
from collate import preset_method

LABELS = SAMPLE / "galaxy_labels.csv"  # 300 rows; the tiny run's 24 images are among them


def probe(run, *argv):
    return run_cli(SSL_Probe, [f"--RUN={run}", f"--LABELS={LABELS}", "--CLASS_COLUMN=class_name",
                               "--NUM_WORKERS=0", "--FOLDS=3", "--SHOTS=2,5", "--RAW_PIXELS=8", *argv])


@pytest.fixture
def run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def test_probe_scores_model_and_baselines(run, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        assert probe(run, "--MERGE_CLASSES=spiral_cw+spiral_acw") == 0
    assert "276 of 300 ids" in caplog.text  # the rest of the sample is not in this run's data
    out = sorted((run / "probe").iterdir())
    assert len(out) == 1 and out[0].name.startswith("galaxy_labels-")
    results = json.loads((out[0] / "results.json").read_text())
    assert results["n_labelled"] == 24 and results["folds"] == 3
    assert results["class_counts"] == {"spiral_cw+spiral_acw": 10, "edge_on": 8, "elliptical": 6}
    assert results["majority_class_accuracy"] == pytest.approx(10 / 24)
    summary = pd.read_csv(out[0] / "summary.csv")
    assert summary["method"].tolist() == [preset_method("astro", 21), "random_weights", "raw_pixels"]  # the run's method
    for column in ("knn_accuracy", "linear_accuracy", "precision_at_k"):
        assert summary[column].between(0, 1).all()
    # Each class's own precision@10, and their mean: a rare class is not hidden by the common ones.
    per_class = summary[[f"precision_at_k_{c}" for c in ("edge_on", "elliptical", "spiral_cw+spiral_acw")]]
    assert per_class.to_numpy().mean(axis=1) == pytest.approx(summary["precision_at_k_class_mean"].to_numpy())
    counts = np.array([8, 6, 10])  # the overall score weighs each class by its images
    assert (per_class.to_numpy() @ counts / 24) == pytest.approx(summary["precision_at_k"].to_numpy())
    few_shot = pd.read_csv(out[0] / "few_shot.csv")
    assert len(few_shot) == 3 * 2 * 3  # methods x classifiers x (2, 5, all)
    assert set(few_shot["shots"].astype(str)) == {"2", "5", "all"}
    for picture in ("confusion_matrix.png", "few_shot.png"):
        with Image.open(out[0] / picture) as img:
            assert img.format == "PNG"
    printed = capsys.readouterr().out
    assert "random_weights" in printed and "precision@10" in printed and "precision@10 per class" in printed


def test_probe_without_baselines(run):
    assert probe(run, "--BASELINES=False", "--MERGE_CLASSES=spiral_cw+spiral_acw") == 0
    out = sorted((run / "probe").iterdir())[0]
    assert pd.read_csv(out / "summary.csv")["method"].tolist() == [preset_method("astro", 21)]


def test_labels_that_match_no_image(run, tmp_path, capsys):
    labels = tmp_path / "other.csv"
    labels.write_text("filename,class\nnot_here.png,a\nnor_here.png,b\n")
    assert run_cli(SSL_Probe, [f"--RUN={run}", f"--LABELS={labels}", "--NUM_WORKERS=0"]) == 2
    assert "none of the 2 ids" in capsys.readouterr().err
    assert not (run / "probe").exists()


def test_labels_without_a_class_column(run, tmp_path, capsys):
    labels = tmp_path / "other.csv"
    labels.write_text("filename,notes\na.png,blue\n")
    assert run_cli(SSL_Probe, [f"--RUN={run}", f"--LABELS={labels}"]) == 2
    assert "its columns are filename, notes (set --CLASS_COLUMN)" in capsys.readouterr().err


def test_knn_monitor_logs_accuracy_each_epoch(galaxy_dir, tmp_path):
    argv = [f"--DATA_DIR={galaxy_dir}", f"--CHECKPOINT_DIR={tmp_path}", "--RUN_NAME=knn", *TINY,
            "--MAX_EPOCHS=2", f"--LABELS={LABELS}", "--CLASS_COLUMN=class_name", "--KNN_K=3",
            "--VAL_FRACTION=0.25"]
    assert run_cli(SSL_Train, argv) == 0
    metrics = pd.read_csv(tmp_path / "knn" / "logs" / "version_0" / "metrics.csv")
    accuracy = metrics["val_knn_accuracy"].dropna()
    assert len(accuracy) == 2 and accuracy.between(0, 1).all()
