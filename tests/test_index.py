"""FAISS search: exact up to a size, an HNSW or IVF index beyond it with its search effort tuned to
a recall target, the kind chosen by memory, and a half-built or outdated index on disk rebuilt."""

import json
import logging

import faiss
import numpy as np
import pytest

import spacessl.index as index_module
from spacessl.index import (RECALL_K, RECALL_QUERIES, IndexSettings, build_index, cached_index, choose_kind,
                            held_out_truth, recall_against, search)
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
    index, info = build_index(x, IndexSettings("ivf-flat", nlist=4, nprobe=4), seed=0)
    assert info["type"] == "ivf-flat" and info["recall_at_10"] == 1.0
    rows = search(index, x[3], 5, exclude=[3])
    assert rows.tolist() == [i for i in np.argsort(-(x @ x[3])) if i != 3][:5]


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-sq8", "ivf-pca"])
def test_large_sets_get_an_ivf_index_with_measured_recall(kind):
    # No cluster structure: neighbours spread over many cells, so probing fewer cells must cost recall.
    x = clustered(3000, clusters=1, seed=1)
    index, info = build_index(x, IndexSettings(kind, nlist=20, nprobe=20), seed=0)
    assert info["type"] == kind and info["nlist"] == 20
    assert info["recall_at_10"] > 0.9  # all 20 cells probed: only sq8 rounding can cost recall
    _, few = build_index(x, IndexSettings(kind, nlist=20, nprobe=1), seed=0)
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
        index, info = build_index(x, IndexSettings("ivf-flat", recall_target=0.95), seed=0)
    assert info["recall_at_10"] >= 0.95 and info["recall_target"] == 0.95
    assert 1 < info["nprobe"] < info["nlist"] and index.nprobe == info["nprobe"]
    assert "tuned" in caplog.text
    # One cell fewer falls short of the target: the fewest cells that reach it were chosen.
    fewer = dict(build_index(x, IndexSettings("ivf-flat", nprobe=info["nprobe"] - 1), seed=0)[1])
    assert fewer["recall_at_10"] < 0.95


def test_tuning_searches_exactly_once_whatever_the_efforts_tried(monkeypatch):
    # The exact pass reads every vector (20 GB from disk at 10 million): once per build, not once
    # per search effort measured.
    passes = []
    exact = index_module.nearest_rows
    monkeypatch.setattr(index_module, "nearest_rows", lambda *args, **kw: passes.append(1) or exact(*args, **kw))
    _, info = build_index(realistic(5000), IndexSettings("ivf-flat", recall_target=0.95), seed=0)
    assert info["nprobe"] > 2 and info["recall_at_10"] >= 0.95  # 1, 2, 4, ... measured before it
    assert len(passes) == 1


def test_a_fixed_nprobe_below_the_target_is_said(caplog):
    x = realistic(5000)
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        _, info = build_index(x, IndexSettings("ivf-flat", nprobe=1), seed=0)
    assert info["recall_at_10"] < 0.95 and "below the target 0.95: raise --NPROBE" in caplog.text


def test_an_index_built_for_another_target_is_rebuilt(tmp_path, caplog):
    x = realistic(5000)
    source = {"data_sha256": "abc"}
    _, low = cached_index(x, tmp_path, source, IndexSettings("ivf-flat", recall_target=0.5), 0)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        _, high = cached_index(x, tmp_path, source, IndexSettings("ivf-flat", recall_target=0.99), 0)
    assert "reusing" not in caplog.text and high["nprobe"] > low["nprobe"] and high["recall_at_10"] >= 0.99


def test_ivf_threads_share_one_query_after_build_and_reuse(tmp_path):
    # FAISS's default gives each thread whole queries, so the one query a user asks ran on one
    # core; the index is set to share its probed cells out, and the neighbours do not change.
    x = realistic(5000)
    source = {"data_sha256": "abc"}
    args = (IndexSettings("ivf-sq8", nlist=50, nprobe=10), 0)
    built, _ = cached_index(x, tmp_path, source, *args)
    reused, _ = cached_index(x, tmp_path, source, *args)
    assert built.parallel_mode == reused.parallel_mode == index_module.IVF_PARALLEL_MODE != 0
    shared = [search(reused, q, 10) for q in x[:20]]
    reused.parallel_mode = 0
    assert all(np.array_equal(a, search(reused, q, 10)) for a, q in zip(shared, x[:20]))


def test_ivf_pca_is_tuned_to_the_target_and_reused_as_built(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "PCA_DIM", 32)  # half of the test vectors' 64 dimensions
    x = realistic(20000)
    source = {"data_sha256": "abc"}
    built, info = cached_index(x, tmp_path, source, IndexSettings("ivf-pca", recall_target=0.95), 0)
    assert info["type"] == "ivf-pca" and info["recall_at_10"] >= 0.95 and 1 < info["nprobe"] < info["nlist"]
    assert faiss.downcast_index(built.base_index).chain.at(0).d_out == 32
    reused, again = cached_index(x, tmp_path, source, IndexSettings("ivf-pca", recall_target=0.95), 0)
    assert again == info and faiss.extract_index_ivf(reused).nprobe == info["nprobe"]
    assert reused.k_factor == index_module.REFINE_FACTOR
    for q in x[:5]:
        assert np.array_equal(search(built, q, 10), search(reused, q, 10))


def test_ivf_pca_re_ranks_more_where_every_cell_falls_short(tmp_path, monkeypatch):
    # Structureless vectors and 4 of their 32 dimensions: the few candidates scored on those miss
    # true neighbours even with every cell scanned, so the build re-ranks more and tunes again.
    monkeypatch.setattr(index_module, "PCA_DIM", 4)
    monkeypatch.setattr(index_module, "REFINE_FACTOR", 1)
    x = clustered(3000, clusters=1, seed=1)
    settings, source = IndexSettings("ivf-pca", nlist=20, recall_target=0.9), {"data_sha256": "abc"}
    built, info = cached_index(x, tmp_path, source, settings, 0)
    assert info["recall_at_10"] >= 0.9 and info["refine_factor"] > 1
    reused, again = cached_index(x, tmp_path, source, settings, 0)
    assert again == info and reused.k_factor == info["refine_factor"]
    monkeypatch.setattr(index_module, "REFINE_FACTOR_MAX", 1)  # without re-ranking more: short of the target
    _, short = build_index(x, settings, 0)
    assert short["recall_at_10"] < 0.9 and short["nprobe"] == 20


def test_the_projection_keeps_each_querys_ranking_despite_a_common_mean():
    # Vectors in an 8-d subspace of 64 plus a mean: projected onto their 8 principal axes, a
    # query's inner products must differ from the true ones by the same amount for every vector.
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 8)))[0]
    x = (3 * rng.normal(size=64) + rng.normal(size=(2000, 8)) @ basis.T).astype(np.float32)
    projected = index_module.projection(x, 8).apply(x)
    offset = x[:5] @ x.T - projected[:5] @ projected.T
    np.testing.assert_allclose(offset, np.repeat(offset[:, :1], len(x), axis=1), atol=1e-3 * np.abs(x[:5] @ x.T).max())


def test_index_is_reused_and_a_half_built_one_is_rebuilt(tmp_path, caplog):
    x = clustered(1500)
    source = {"data_sha256": "abc"}
    args = (IndexSettings("ivf-flat", nlist=10, nprobe=4), 0)
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


def test_hnsw_ef_search_is_tuned_to_the_recall_target_and_restored_on_reuse(tmp_path, caplog):
    x = realistic(5000)
    settings = IndexSettings("hnsw", recall_target=0.99)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        index, info = cached_index(x, tmp_path, {"data_sha256": "abc"}, settings, 0)
    assert info["type"] == "hnsw" and "tuned" in caplog.text
    assert info["recall_at_10"] >= 0.99 and index.hnsw.efSearch == info["ef_search"] > 16  # 16: the first tried
    # The least efSearch that reaches the target was chosen: one less falls short.
    index.hnsw.efSearch = info["ef_search"] - 1
    assert recall_against(index, held_out_truth(x, RECALL_K, RECALL_QUERIES, 0), RECALL_K) < 0.99
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        reused, again = cached_index(x, tmp_path, {"data_sha256": "abc"}, settings, 0)
    assert "reusing hnsw index" in caplog.text and again == info
    assert reused.hnsw.efSearch == info["ef_search"]  # the tuned effort, not the file's or FAISS's default
    rows = search(reused, x[7], 5, exclude=[7])
    assert 7 not in rows and len(rows) == 5 and np.all(np.diff(x[rows] @ x[7]) <= 0)


def test_an_index_of_another_kind_is_rebuilt(tmp_path, caplog):
    x = realistic(3000)
    source = {"data_sha256": "abc"}
    cached_index(x, tmp_path, source, IndexSettings("ivf-flat"), 0)
    with caplog.at_level(logging.INFO, logger="spacessl"):
        index, info = cached_index(x, tmp_path, source, IndexSettings("hnsw"), 0)
    assert "reusing" not in caplog.text and info["type"] == "hnsw" and hasattr(index, "hnsw")


def test_auto_builds_ivf_pca_and_other_kinds_are_built_as_asked():
    assert choose_kind(IndexSettings())[0] == choose_kind(IndexSettings(nprobe=8))[0] == "ivf-pca"
    assert choose_kind(IndexSettings("hnsw")) == ("hnsw", "as asked")
    _, info = build_index(realistic(2000), IndexSettings(), seed=0)
    assert info["type"] == "ivf-pca" and info["chosen"].startswith("auto")


@pytest.mark.parametrize("settings, problem", [
    (dict(kind="ivf"), "--INDEX_KIND=ivf: choose auto, hnsw, ivf-flat, ivf-sq8, ivf-pca"),
    (dict(kind="hnsw", nprobe=8), "leave them 0 with --INDEX_KIND=hnsw"),
    (dict(nlist=-1), "--NLIST and --NPROBE must be >= 0"),
    (dict(recall_target=1.5), "--RECALL_TARGET=1.5: must be in (0, 1]"),
])
def test_impossible_index_settings_are_refused(settings, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        IndexSettings(**settings)
