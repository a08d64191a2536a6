"""Maps, the HTML query report (opened in a real headless browser), Grad-CAM and anomalies."""

import builtins
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE, browser_dom, run_cli
from PIL import Image

import SSL_Anomalies
from spacessl.search import score_images
import SSL_Evaluate
import SSL_Map
from spacessl.errors import UserError
from spacessl.explain import similarity_cams
from spacessl.maps import draw_mosaic, latest_map, project
from spacessl.model import load_model

LABELS = SAMPLE / "galaxy_labels.csv"


@pytest.fixture
def run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def data_names(run):
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0"]) == 0
    return pd.read_csv(run / "embeddings" / "best__data" / "filenames.csv")["filename"].tolist()


def loaded_images(dom: str) -> dict:
    """{data-state: count} over the page's <img> elements."""
    states = re.findall(r'<img[^>]*data-state="(\w+)"', dom)
    return {state: states.count(state) for state in set(states)}


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_projection_gives_one_point_per_image(method):
    vectors = np.random.default_rng(0).normal(size=(40, 8))
    coords = project(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), method, 5, 0.1, 5.0, 0)
    assert coords.shape == (40, 2) and np.isfinite(coords).all()


@pytest.mark.parametrize("method,message", [("umap", "umap needs at least 16 images"),
                                            ("tsne", "tsne needs at least 91 images")])
def test_too_few_images_to_map(method, message):
    with pytest.raises(UserError, match=message):
        project(np.eye(10), method, 15, 0.1, 30.0, 0)


def test_missing_umap_package_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_umap(name, *args, **kwargs):
        if name == "umap":
            raise ImportError("No module named 'umap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    with pytest.raises(UserError, match="pip install umap-learn"):
        project(np.eye(20), "umap", 5, 0.1, 30.0, 0)


def test_mosaic_places_each_image_at_its_cell(tmp_path):
    colours = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255), "late.png": (9, 9, 9)}
    for name, colour in colours.items():
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    coords = np.array([[0, 0], [1, 1], [0, 1], [0.01, 0.02]])  # late.png wants red's cell too
    drawn = draw_mosaic(coords, tmp_path, list(colours), 3, 40, 10, tmp_path / "mosaic.png", stretch="auto")
    assert drawn == 4  # 4 images: a 2 x 2 grid of 20 px cells, every image shown
    mosaic = np.asarray(Image.open(tmp_path / "mosaic.png"))
    assert mosaic.shape == (40, 40, 3)
    assert mosaic[35, 5].tolist() == [255, 0, 0]    # (0, 0): bottom left
    assert mosaic[5, 35].tolist() == [0, 255, 0]    # (1, 1): top right
    assert mosaic[5, 5].tolist() == [0, 0, 255]     # (0, 1): top left
    assert mosaic[35, 35].tolist() == [9, 9, 9]     # (1, 0): the free cell nearest late.png


def test_mosaic_of_a_clumped_map_fills_its_grid(tmp_path):
    names = [f"{i}.png" for i in range(30)]
    for i, name in enumerate(names):
        Image.new("L", (4, 4), 100 + i).save(tmp_path / name)
    coords = np.concatenate([np.random.default_rng(0).normal(0, 0.01, (29, 2)), [[1, 1]]])  # one clump + one
    assert draw_mosaic(coords, tmp_path, names, 1, 600, 10, tmp_path / "mosaic.png", stretch="auto") == 30
    mosaic = np.asarray(Image.open(tmp_path / "mosaic.png"))
    assert (mosaic.reshape(-1, 3).max(axis=1) == 0).mean() < 0.2  # 30 of 36 cells hold an image
    assert draw_mosaic(coords, tmp_path, names, 1, 40, 10, tmp_path / "small.png", stretch="auto") == 16  # a 4 x 4 sample


def test_map_command_writes_coordinates_map_and_mosaic(run):
    assert run_cli(SSL_Map, [f"--RUN={run}", "--NUM_WORKERS=0", "--NEIGHBOURS=5"]) == 0
    out = next((run / "maps").iterdir())
    coords = pd.read_csv(out / "coords.csv")
    assert sorted(coords["filename"]) == sorted(data_names(run)) and list(coords.columns) == ["filename", "x", "y"]
    for picture in ("map.png", "mosaic.png"):
        assert Image.open(out / picture).format == "PNG"
    names = data_names(run)
    np.testing.assert_allclose(latest_map(run, names), coords.set_index("filename").loc[names, ["x", "y"]])


def test_labelled_map_has_a_class_per_point(run):
    argv = [f"--RUN={run}", "--NUM_WORKERS=0", "--MAP_METHOD=tsne", "--PERPLEXITY=5",
            f"--LABELS={LABELS}", "--CLASS_COLUMN=class_name"]
    assert run_cli(SSL_Map, argv) == 0
    coords = pd.read_csv(next((run / "maps").iterdir()) / "coords.csv")
    assert len(coords) == 24 and set(coords["label"]) == {"edge_on", "elliptical", "spiral_cw", "spiral_acw"}


def test_map_with_too_few_images(run, capsys):
    assert run_cli(SSL_Map, [f"--RUN={run}", "--NUM_WORKERS=0", "--NEIGHBOURS=30"]) == 2
    assert "umap needs at least 31 images with these settings, got 24" in capsys.readouterr().err
    assert not (run / "maps").exists()


def test_report_lists_query_neighbours_map_and_explanations_and_renders(run, tmp_path):
    names = data_names(run)
    argv = [f"--RUN={run}", "--NUM_WORKERS=0", f"--QUERY={names[2]}", "--TOP_K=4", "--EXPLAIN_TOP=2",
            "--REPORT=True", "--THUMB_PX=64"]
    assert run_cli(SSL_Evaluate, argv) == 0
    out = next((run / "queries").iterdir())
    page = (out / "report.html").read_text()
    table = pd.read_csv(out / "neighbours.csv")
    assert page.count('class="neighbour"') == 4 and page.count('class="query"') == 1
    assert all(name in page for name in table["filename"])
    assert page.count('class="map"') == 1 and page.count('class="explanation"') == 2
    assert "src=\"data:image/png;base64," in page and "file://" not in page  # self-contained
    assert (out / "explain_1.png").is_file() and (out / "explain_2.png").is_file()
    assert (run / "maps").is_dir()  # the map made for the report is kept for the next one
    dom = browser_dom(out / "report.html", tmp_path / "profile")
    assert loaded_images(dom) == {"loaded": 1 + 4 + 1 + 2}


def test_similarity_maps_are_normalised_and_symmetric(trained_run):
    model = load_model(trained_run / "best.ckpt")
    files = sorted((trained_run.parent.parent / "data").iterdir())
    a, b = Image.open(files[0]).convert("RGB"), Image.open(files[1]).convert("RGB")
    similarity, cam_a, cam_b = similarity_cams(model, a, b, "layer3")
    size = model.hparams.input_size
    assert cam_a.shape == cam_b.shape == (size, size)
    assert -1 <= similarity <= 1
    for cam in (cam_a, cam_b):
        assert cam.min() >= 0 and cam.max() == pytest.approx(1)
    swapped = similarity_cams(model, b, a, "layer3")
    np.testing.assert_allclose(swapped[2], cam_a, atol=1e-5)
    np.testing.assert_allclose(swapped[1], cam_b, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_anomaly_score_ranks_the_odd_one_out_first():
    angles = np.deg2rad([0, 1, 2, 3, 4, 5, 60])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    score, nearest, distance = score_images(vectors, 2)
    assert int(np.argmax(score)) == 6
    assert score[6] == pytest.approx(1 - np.cos(np.deg2rad(56)))  # its 2nd nearest is at 4 degrees
    assert nearest[6] == 5 and distance[6] == pytest.approx(1 - np.cos(np.deg2rad(55)))


def test_anomaly_caption_keeps_rank_and_score_apart():
    from spacessl.report import caption

    assert caption(1, 0.104) == "#1  d=0.104" and caption(10, 0.1) == "#10  d=0.100"


def test_anomaly_command_writes_ranked_table_and_gallery(run, tmp_path):
    assert run_cli(SSL_Anomalies, [f"--RUN={run}", "--NUM_WORKERS=0", "--TOP=6", "--K=3", "--THUMB_PX=32"]) == 0
    out = next((run / "anomalies").iterdir())
    table = pd.read_csv(out / "anomalies.csv")
    assert len(table) == 24 and table["rank"].tolist() == list(range(1, 25))
    assert table["score"].is_monotonic_decreasing
    assert (table["nearest_distance"] <= table["score"] + 1e-6).all()
    assert Image.open(out / "anomalies.png").size == (5 * 64, 2 * (32 + 16))
    dom = browser_dom(out / "anomalies.html", tmp_path / "profile")
    assert loaded_images(dom) == {"loaded": 6 * 2 + 1}
