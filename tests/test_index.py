"""FAISS search: exact up to a size, IVF beyond with measured recall, and a half-built index
on disk detected and rebuilt."""

import json
import logging

import numpy as np
import pytest

from spacessl.index import build_index, cached_index, search
from spacessl.search import nearest_rows


def clustered(n=3000, dim=32, clusters=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_knn_matches_brute_force():
    x = clustered(500)
    queries = x[:7]
    expected = np.argsort(-(queries @ x.T), axis=1)[:, :5]
    got, _ = nearest_rows(x, queries, 5)
    assert [set(row) for row in got] == [set(row) for row in expected]


def test_an_index_probing_every_cell_searches_exactly():
    x = clustered(500)
    index, info = build_index(x, nlist=4, nprobe=4, encoding="flat", seed=0)
    assert info["type"] == "ivf-flat" and info["recall_at_10"] == 1.0
    rows, dist = search(index, x[3], 5, exclude=[3])
    expected = [i for i in np.argsort(-(x @ x[3])) if i != 3][:5]
    assert rows.tolist() == expected
    np.testing.assert_allclose(dist, 1 - x[expected] @ x[3], atol=1e-5)


@pytest.mark.parametrize("encoding", ["flat", "sq8"])
def test_large_sets_get_an_ivf_index_with_measured_recall(encoding):
    # No cluster structure: neighbours spread over many cells, so probing fewer cells must cost recall.
    x = clustered(3000, clusters=1, seed=1)
    index, info = build_index(x, nlist=20, nprobe=20, encoding=encoding, seed=0)
    assert info["type"] == f"ivf-{encoding}" and info["nlist"] == 20
    assert info["recall_at_10"] > 0.9  # all 20 cells probed: only sq8 rounding can cost recall
    _, few = build_index(x, nlist=20, nprobe=1, encoding=encoding, seed=0)
    assert few["recall_at_10"] < info["recall_at_10"]  # probing 1 cell of 20 misses neighbours


def realistic(n, dim=64, seed=0):
    """Unit vectors from a Gaussian whose variances fall as k^-0.8 (as real embedding sets do,
    unlike tight clusters), randomly rotated."""
    rng = np.random.default_rng(seed)
    scales = np.arange(1, dim + 1) ** -0.4
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    x = (rng.normal(size=(n, dim)) * scales) @ rotation
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_nprobe_is_tuned_to_the_recall_target(caplog):
    x = realistic(20000)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        index, info = build_index(x, nlist=0, nprobe=0, encoding="flat", seed=0,
                                  recall_target=0.95)
    assert info["recall_at_10"] >= 0.95 and info["recall_target"] == 0.95
    assert 1 < info["nprobe"] < info["nlist"] and index.nprobe == info["nprobe"]
    assert "tuned" in caplog.text
    # One cell fewer falls short of the target: the fewest cells that reach it were chosen.
    fewer = dict(build_index(x, nlist=0, nprobe=info["nprobe"] - 1, encoding="flat", seed=0)[1])
    assert fewer["recall_at_10"] < 0.95


def test_a_fixed_nprobe_below_the_target_is_said(caplog):
    x = realistic(5000)
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        _, info = build_index(x, nlist=0, nprobe=1, encoding="flat", seed=0)
    assert info["recall_at_10"] < 0.95 and "below the target 0.95: raise --NPROBE" in caplog.text


def test_an_index_built_for_another_target_is_rebuilt(tmp_path, caplog):
    x = realistic(5000)
    source = {"data_sha256": "abc"}
    _, low = cached_index(x, tmp_path, source, 0, 0, "flat", 0, 0.5)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        _, high = cached_index(x, tmp_path, source, 0, 0, "flat", 0, 0.99)
    assert "reusing" not in caplog.text and high["nprobe"] > low["nprobe"] and high["recall_at_10"] >= 0.99


def test_index_is_reused_and_a_half_built_one_is_rebuilt(tmp_path, caplog):
    x = clustered(1500)
    source = {"data_sha256": "abc"}
    args = (10, 4, "flat", 0)
    _, info = cached_index(x, tmp_path, source, *args)
    assert (tmp_path / "index.faiss").is_file() and json.loads((tmp_path / "index.json").read_text())["info"] == info
    with caplog.at_level(logging.INFO, logger="spacessl"):
        cached_index(x, tmp_path, source, *args)
    assert "reusing ivf-flat index" in caplog.text
    # An interruption after the index file but before index.json: the marker is missing.
    (tmp_path / "index.json").unlink()
    (tmp_path / "index.faiss").write_bytes(b"half written")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        index, _ = cached_index(x, tmp_path, source, *args)
    assert "reusing" not in caplog.text and index.ntotal == 1500
    # New embeddings (another data digest) never reuse the old index.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        cached_index(x, tmp_path, {"data_sha256": "changed"}, *args)
    assert "reusing" not in caplog.text
