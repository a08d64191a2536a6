"""SSL_Evaluate.py: checkpoint round trip, cached embeddings, queries and their bad inputs."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import GALAXIES, THEMIS, copy_images, run_cli
from PIL import Image
from torch.utils.data import DataLoader

import SSL_Evaluate
from collate import train_transform
from spacessl.view import eval_transform
from spacessl.embeddings import embed_image, embed_images
from spacessl.images import ImageFolder, collate_readable, find_images
from spacessl.model import AtomicCheckpointIO, SSLModel, load_model


def evaluate(run, *argv):
    """SSL_Evaluate without the HTML report unless asked (tests/test_views.py covers it)."""
    return run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False", *argv])


def training_data(run):
    return Path(json.loads((run / "config.json").read_text())["resolved"]["data_dir"])


def query_dirs(run):
    return sorted((run / "queries").iterdir()) if (run / "queries").exists() else []


def test_save_load_embed_round_trip_is_exact(tmp_path):
    """A checkpoint written by Lightning rebuilds the same network from the file alone."""
    files = find_images(GALAXIES)[:8]
    model = SSLModel(in_channels=3, input_size=32, proj_hidden_dim=32, proj_out_dim=16,
                   warmup_epochs=0, max_epochs=1, batch_size=8)
    loader = DataLoader(ImageFolder(GALAXIES, files, 3, train_transform("astro", 32, 3)),
                        batch_size=8, collate_fn=collate_readable)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, plugins=[AtomicCheckpointIO()])
    trainer.fit(model, loader)
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    images = torch.stack([ImageFolder(GALAXIES, files, 3, eval_transform(32, 3))[i][0] for i in range(8)])
    before = model.eval().embed(images)
    after = load_model(tmp_path / "model.ckpt").embed(images)
    assert torch.equal(before, after)
    np.testing.assert_allclose(after.norm(dim=1).numpy(), 1, atol=1e-6)


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the trained run, so tests do not see each other's outputs."""
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def test_embeds_the_whole_data_set_once(run, caplog):
    with caplog.at_level(logging.INFO, logger="spacessl"):
        assert evaluate(run) == 0
    cache = run / "embeddings" / "best__data"
    vectors = np.load(cache / "embeddings.npy")
    names = pd.read_csv(cache / "filenames.csv")["filename"].tolist()
    assert vectors.dtype == np.float32 and vectors.shape == (24, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert names == find_images(training_data(run))
    assert query_dirs(run) == []  # no query given: embedding only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        assert evaluate(run) == 0
    assert any("reusing embeddings" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(np.load(cache / "embeddings.npy"), vectors)


def test_changed_data_is_embedded_again(run, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(GALAXIES, data, ignore=lambda d, names: sorted(names)[10:])
    assert evaluate(run, f"--DATA_DIR={data}") == 0
    shutil.copy(sorted(GALAXIES.iterdir())[20], data / "new.jpg")
    with caplog.at_level(logging.INFO, logger="spacessl"):
        assert evaluate(run, f"--DATA_DIR={data}") == 0
    assert any("embedding again" in r.getMessage() for r in caplog.records)
    assert len(np.load(run / "embeddings" / "best__data" / "embeddings.npy")) == 11


def test_query_writes_table_and_picture(run, capsys):
    assert evaluate(run) == 0
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    query = names[3]
    assert evaluate(run, f"--QUERY={query}", "--TOP_K=5", "--GRID_DPI=50", "--PANEL_INCHES=2") == 0
    out = query_dirs(run)
    assert len(out) == 1 and out[0].name.startswith(query.rsplit(".", 1)[0])
    table = pd.read_csv(out[0] / "neighbours.csv")
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    assert query not in table["filename"].tolist()
    assert table["cosine_distance"].is_monotonic_increasing
    # Searched after the default post-processing (auto: 24 images < 512 dimensions, so centring),
    # whose vectors sit beside the embeddings.
    vectors = np.load(run / "embeddings" / "best__data" / "search_centre.npy")
    expected = 1 - vectors @ vectors[3]
    for name, dist in zip(table["filename"], table["cosine_distance"]):
        assert dist == pytest.approx(expected[names.index(name)], abs=1e-5)
    assert sorted(expected)[1:6] == pytest.approx(table["cosine_distance"].tolist(), abs=1e-5)
    saved = json.loads((out[0] / "config.json").read_text())
    assert saved["hyperparameters"]["TOP_K"] == 5 and saved["resolved"]["queries"][0].endswith(query)
    with Image.open(out[0] / "neighbours.png") as picture:
        assert picture.format == "PNG" and picture.width == 6 * 2 * 50  # query + 5 in one row
    printed = capsys.readouterr().out
    assert table["filename"][0] in printed and "neighbours.png" in printed


def test_query_file_outside_the_data_set_finds_its_twin_first(run, tmp_path, monkeypatch):
    assert evaluate(run) == 0
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    data_dir = training_data(run)
    outside = tmp_path / "elsewhere" / "event.jpg"
    outside.parent.mkdir()
    shutil.copy(data_dir / names[7], outside)
    assert evaluate(run, f"--QUERY={outside}", "--TOP_K=3") == 0
    table = pd.read_csv(query_dirs(run)[0] / "neighbours.csv")
    assert table["filename"][0] == names[7]
    assert table["cosine_distance"][0] == pytest.approx(0, abs=1e-5)
    monkeypatch.setenv("HOME", str(tmp_path))  # a "~/..." path, as typed after --QUERY=
    assert evaluate(run, "--QUERY=~/elsewhere/event.jpg", "--TOP_K=3") == 0
    assert pd.read_csv(query_dirs(run)[1] / "neighbours.csv")["filename"][0] == names[7]


def test_several_queries_search_by_their_mean(run):
    assert evaluate(run) == 0
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    assert evaluate(run, f"--QUERY={names[0]},{names[1]}", "--TOP_K=30") == 0
    table = pd.read_csv(query_dirs(run)[0] / "neighbours.csv")
    assert len(table) == 22 and not {names[0], names[1]} & set(table["filename"])
    assert query_dirs(run)[0].name.startswith(names[0].rsplit(".", 1)[0] + "+1-")


def test_unknown_query_name_suggests_close_names(run, capsys):
    assert evaluate(run) == 0
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    typo = names[5][:-6] + "xx.jpg"
    assert evaluate(run, f"--QUERY={typo}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: query '{typo}' is neither one of the 24 images")
    assert names[5] in err and err.count("\n") == 1
    assert query_dirs(run) == []


def test_unreadable_query_file(run, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert evaluate(run, f"--QUERY={bad}") == 2
    assert f"query image {bad} could not be read" in capsys.readouterr().err


def test_missing_checkpoint(tmp_path, capsys):
    assert evaluate(tmp_path / "nothing") == 2
    assert "best.ckpt not found; train first" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint at all", "could not be read"),
    ({"weights": torch.zeros(2)}, "was not written by SSL_Train.py"),
])
def test_foreign_checkpoint(tmp_path, capsys, content, message):
    path = tmp_path / "best.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert evaluate(tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_checkpoint_whose_weights_do_not_fit(trained_run, tmp_path, capsys):
    ckpt = torch.load(trained_run / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["backbone"] = "resnet34"
    torch.save(ckpt, tmp_path / "best.ckpt")
    assert evaluate(tmp_path) == 2
    assert "does not match this code's model" in capsys.readouterr().err


def test_unreadable_image_in_the_data_set_is_left_out(run, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(GALAXIES, data, ignore=lambda d, names: sorted(names)[6:])
    (data / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        assert evaluate(run, f"--DATA_DIR={data}") == 0
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    assert len(names) == 6 and "broken.jpg" not in names


@pytest.mark.parametrize("settings, said", [
    ([], "searched with a ivf-pca index, "),  # the default
    (["--INDEX_KIND=hnsw"], "searched with a hnsw index, efSearch 16 (recall@10 1.000"),
    (["--INDEX_KIND=ivf-flat", "--NLIST=4", "--NPROBE=4"], "searched with a ivf-flat index, 4 of 4 cells probed (recall@10 1.000"),
])
def test_above_the_exact_limit_search_uses_an_index(run, caplog, settings, said):
    assert evaluate(run) == 0
    names = pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()
    # 24 images: HNSW visits at least 16 of them, IVF probes all 4 cells, ivf-pca re-ranks 32 x 5: all
    # must equal exact search, distances too (recomputed from the vectors, not the 8-bit codes).
    argv = [f"--QUERY={names[0]}", "--TOP_K=5", "--EXACT_LIMIT=10", *settings]
    with caplog.at_level(logging.INFO, logger="spacessl"):
        assert evaluate(run, *argv) == 0
    assert any(said in r.getMessage() for r in caplog.records)
    assert (run / "embeddings" / "best__data" / "index.faiss").is_file()
    approx = pd.read_csv(query_dirs(run)[0] / "neighbours.csv")
    assert evaluate(run, f"--QUERY={names[0]}", "--TOP_K=5") == 0
    exact = pd.read_csv(query_dirs(run)[1] / "neighbours.csv")
    assert approx["filename"].tolist() == exact["filename"].tolist()
    np.testing.assert_allclose(approx["cosine_distance"], exact["cosine_distance"], atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--INDEX_KIND=hnsw", "--NPROBE=8"], "--NLIST and --NPROBE shape an IVF index"),
    (["--INDEX_KIND=annoy"], "--INDEX_KIND=annoy: choose auto, hnsw, ivf-flat, ivf-sq8, ivf-pca"),
    (["--RECALL_TARGET=0"], "--RECALL_TARGET=0.0: must be in (0, 1]"),
])
def test_impossible_index_settings_give_one_line_errors(run, capsys, argv, message):
    assert evaluate(run, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (run / "embeddings").exists()  # refused before any work


def test_query_skipped_as_unreadable_says_so(run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(GALAXIES, data, ignore=lambda d, names: sorted(names)[6:])
    (data / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert evaluate(run, f"--DATA_DIR={data}", "--QUERY=broken.jpg") == 2
    err = capsys.readouterr().err
    assert "'broken.jpg' is in" in err and "skipped when the data set was embedded" in err
    assert err.count("\n") == 1


def test_folder_as_query_says_so(run, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert evaluate(run, f"--QUERY={tmp_path / 'folder'}") == 2
    assert "is a folder; give one image file" in capsys.readouterr().err


def test_top_k_above_the_image_count_is_said(run, caplog):
    first = sorted(p.name for p in training_data(run).iterdir())[0]
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        assert evaluate(run, f"--QUERY={first}", "--TOP_K=100") == 0
    assert any("--TOP_K=100 but only 23 other images" in r.getMessage() for r in caplog.records)
    assert len(pd.read_csv(query_dirs(run)[0] / "neighbours.csv")) == 23


def test_file_names_with_commas_can_be_queried(run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(GALAXIES, data, ignore=lambda d, names: sorted(names)[6:])
    first = sorted(p.name for p in data.iterdir())[0]
    (data / first).rename(data / "a,b.jpg")
    for query in ('"a,b.jpg"', "a\\,b.jpg"):
        assert evaluate(run, f"--DATA_DIR={data}", f"--QUERY={query}", "--TOP_K=3") == 0
    assert evaluate(run, f"--DATA_DIR={data}", f'--QUERY="a,b.jpg",{sorted(p.name for p in data.iterdir())[0]}') == 0
    assert len(query_dirs(run)) == 3


def test_embedding_a_folder_that_mixes_8_bit_and_16_bit_images_matches_each_query(tmp_path):
    """A folder of 8-bit pictures and 16-bit frames is embedded in batches whose uint8 and float
    images meet in one batch: every row equals the embedding of that file queried alone."""
    folder = tmp_path / "mixed"
    copy_images(GALAXIES, folder, 5)
    for frame in sorted(THEMIS.iterdir())[:3]:
        shutil.copy(frame, folder / frame.name)
    files = find_images(folder)
    model = SSLModel(in_channels=3, input_size=32, proj_hidden_dim=32, proj_out_dim=16).eval()
    vectors, kept = embed_images(model, folder, files, batch_size=8, num_workers=0, device=torch.device("cpu"))
    assert kept == files
    alone = np.stack([embed_image(model, folder / name, torch.device("cpu")) for name in files])
    np.testing.assert_allclose(vectors, alone, atol=1e-6)
