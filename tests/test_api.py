"""The notebook API (spacessl.api): the README's example, run as written, and its answers
against SSL_Evaluate.py's."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from matplotlib.figure import Figure
from PIL import Image

import SSL_Evaluate
from spacessl.api import open_run
from spacessl.errors import UserError


@pytest.fixture
def run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def test_search_by_name_matches_the_script(run):
    api = open_run(run)
    assert len(api.names) == 24 and api.vectors.shape == (24, 512)
    assert api.embeddings().index.tolist() == api.names
    # Both under clear names: the network's embeddings, and the search vectors made from them.
    np.testing.assert_array_equal(api.embeddings().to_numpy(), api.raw_embeddings)
    np.testing.assert_array_equal(api.embeddings(post_processed=True).to_numpy(), api.vectors)
    assert not np.allclose(api.raw_embeddings, api.vectors)  # centred (24 images < 512 dimensions)
    table = api.search(api.names[3], k=5)
    assert list(table.columns) == ["rank", "filename", "cosine_distance", "time"] and len(table) == 5
    assert api.names[3] not in table.filename.tolist()
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False",
                                  f"--QUERY={api.names[3]}", "--TOP_K=5"]) == 0
    script = pd.read_csv(next((run / "queries").iterdir()) / "neighbours.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), script)
    assert isinstance(api.show(table), Figure)


def test_search_by_array_equals_search_by_its_file(run):
    api = open_run(run)
    name = api.names[0]
    with Image.open(api.data_dir / name) as img:
        picture = img.convert("RGB")
    by_picture = api.search(picture, k=4)
    by_array = api.search(np.asarray(picture).transpose(2, 0, 1), k=4)
    np.testing.assert_allclose(api.embed(picture), api.vectors[0], atol=1e-5)
    # The file itself is excluded when searched by name, not when given as pixels.
    assert by_picture.filename.tolist()[0] == name and by_array.filename.tolist() == by_picture.filename.tolist()
    by_name = api.search(name, k=3)
    assert by_name.filename.tolist() == by_picture.filename.tolist()[1:]


def test_several_names_and_bad_names(run):
    api = open_run(run)
    table = api.search([api.names[0], api.names[1]], k=30)
    assert len(table) == 22
    with pytest.raises(UserError, match="neither one of the 24 images"):
        api.search("no-such-image.jpg")
    with pytest.raises(UserError, match="expected 2-D"):
        api.search(np.zeros(5))


def test_the_package_imports_from_any_folder(tmp_path):
    # `pip install -e .` (the Makefile's install step): a notebook elsewhere needs no sys.path edit.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", "import spacessl.api, spacessl.explore; print(spacessl.api.open_run.__name__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "open_run", done.stderr[-500:]
