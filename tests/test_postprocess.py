"""Post-processing before search (spacessl/postprocess.py): exact on hand-built vectors, cached
beside the embeddings, and applied to query files the same way as to the data set."""

import numpy as np
import pandas as pd
import pytest

from spacessl import postprocess
from spacessl.errors import UserError


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_none_keeps_unit_rows_and_centre_removes_the_mean():
    rows = unit(np.array([[1.0, 0.1], [1.0, -0.1], [1.0, 0.3]]))
    np.testing.assert_allclose(postprocess.fit(rows, "none").apply(rows), rows, atol=1e-7)
    centred = postprocess.fit(rows, "centre").apply(rows)
    expected = unit(rows - rows.mean(axis=0))
    np.testing.assert_allclose(centred, expected, atol=1e-6)


def test_whitening_equalises_the_principal_axes():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2000, 3)) * [10.0, 1.0, 0.1] @ np.linalg.qr(rng.normal(size=(3, 3)))[0] + 5
    transform = postprocess.fit(raw, "whiten")
    projected = (raw - transform.mean) @ transform.axes.T
    pca = np.sort(np.linalg.eigvalsh(np.cov(raw.T, bias=True)))[::-1]  # about 100, 1, 0.01
    # Each axis ends with variance v / (v + floor * largest): 1 where v dominates the floor.
    expected = pca / (pca + postprocess.WHITEN_FLOOR * pca[0])
    np.testing.assert_allclose(projected.var(axis=0), expected, rtol=1e-6)
    assert np.cov(projected.T, bias=True)[0, 1] == pytest.approx(0, abs=1e-9)
    out = transform.apply(raw)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    # A dominant direction no longer decides the neighbours: the nearest row to row 0 changes.
    assert np.argsort(-(unit(raw) @ unit(raw)[0]))[1] != np.argsort(-(out @ out[0]))[1]


def test_auto_whitens_only_sets_with_at_least_as_many_rows_as_dimensions():
    assert postprocess.resolve("auto", (512, 512)) == "whiten"
    assert postprocess.resolve("auto", (511, 512)) == "centre"
    rows = unit(np.random.default_rng(2).normal(size=(10, 4)))
    assert postprocess.fit(rows, "auto").kind == "whiten" and postprocess.fit(rows[:3], "auto").kind == "centre"
    assert postprocess.resolve("none", (10, 512)) == "none"


def test_unknown_kind_and_too_few_rows():
    with pytest.raises(UserError, match="choose one of auto, none, centre, whiten"):
        postprocess.fit(np.eye(3), "pca")
    with pytest.raises(UserError, match="at least two"):
        postprocess.fit(np.eye(3)[:1], "whiten")


def test_search_vectors_are_cached_and_rebuilt_when_the_embeddings_change(tmp_path, caplog):
    rows = unit(np.random.default_rng(1).normal(size=(50, 8))).astype(np.float32)
    first, transform = postprocess.search_vectors(rows, "whiten", tmp_path, {"data_sha256": "a"})
    np.testing.assert_allclose(first, transform.apply(rows), atol=1e-6)
    with caplog.at_level("INFO", logger="spacessl"):
        again, _ = postprocess.search_vectors(rows, "whiten", tmp_path, {"data_sha256": "a"})
        assert not caplog.records  # reused, not rebuilt
        np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
        postprocess.search_vectors(rows[::-1].copy(), "whiten", tmp_path, {"data_sha256": "b"})
    assert any("post-processing 50 embeddings" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob(".*.tmp*"))


def test_query_file_is_post_processed_like_the_data_set(trained_run, tmp_path):
    import shutil

    from conftest import run_cli

    import SSL_Evaluate

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    from spacessl.api import open_run

    api = open_run(run)
    name = api.names[2]
    outside = tmp_path / "copy.jpg"
    shutil.copy(api.data_dir / name, outside)
    np.testing.assert_allclose(api.embed(outside), api.vectors[2], atol=1e-5)
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False", f"--QUERY={outside}",
                                  "--TOP_K=3"]) == 0
    table = pd.read_csv(next((run / "queries").iterdir()) / "neighbours.csv")
    assert table.filename[0] == name and table.cosine_distance[0] == pytest.approx(0, abs=1e-5)
    assert (run / "embeddings" / "best__data" / "search_centre.npy").is_file()  # auto, 24 images < 512 dims
