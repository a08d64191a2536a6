"""Exact neighbour order on hand-built unit vectors (in the spirit of lightly's test_knn.py)."""

import numpy as np
import pytest

from spacessl.errors import UserError
from spacessl.search import all_nearest, mean_query, top_k


def unit(*rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


ANGLES = np.deg2rad([0, 10, 30, 60, 90, 180])
VECTORS = unit(*[(np.cos(a), np.sin(a)) for a in ANGLES])  # rows at 0, 10, 30, 60, 90, 180 degrees


def test_order_and_cosine_distances_are_exact():
    rows, dist = top_k(VECTORS, VECTORS[0], k=6)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(dist, 1 - np.cos(ANGLES), atol=1e-6)


def test_query_between_rows():
    query = unit((np.cos(np.deg2rad(50)), np.sin(np.deg2rad(50))))[0]
    rows, _ = top_k(VECTORS, query, k=3)
    assert rows.tolist() == [3, 2, 1]  # 10, 20 and 40 degrees away


def test_excluded_rows_are_never_returned():
    rows, _ = top_k(VECTORS, VECTORS[0], k=3, exclude=[0, 2])
    assert rows.tolist() == [1, 3, 4]


def test_k_larger_than_the_data_returns_everything_else():
    rows, _ = top_k(VECTORS, VECTORS[5], k=50, exclude=[5])
    assert rows.tolist() == [4, 3, 2, 1, 0]


def test_ties_come_in_index_order():
    tied = unit((1, 0), (0, 1), (1, 0), (1, 0), (0, 1))
    rows, dist = top_k(tied, tied[0], k=4)
    assert rows.tolist() == [0, 2, 3, 1]
    assert dist[:3].tolist() == [0, 0, 0]


def test_mean_of_several_queries_is_renormalised():
    query = mean_query(VECTORS[[0, 4]])  # 0 and 90 degrees -> 45 degrees
    np.testing.assert_allclose(query, unit((1, 1))[0], atol=1e-7)
    rows, _ = top_k(VECTORS, query, k=2, exclude=[0, 4])
    assert rows.tolist() == [2, 3]  # 30 and 60 degrees, both 15 away: index order


def test_opposite_queries_cancel_with_a_clear_error():
    with pytest.raises(UserError, match="cancel out"):
        mean_query(VECTORS[[0, 5]])


def test_all_nearest_lists_each_rows_neighbours_in_order(monkeypatch):
    from spacessl import search

    monkeypatch.setattr(search, "ALL_PAIRS_CHUNK", 4)  # several blocks
    rows, sims = all_nearest(VECTORS, k=3)
    assert rows.tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 4, 1], [3, 2, 1], [4, 3, 2]]
    np.testing.assert_allclose(sims[0], np.cos(ANGLES[1:4]), atol=1e-6)
    assert (np.diff(sims, axis=1) <= 0).all()


def test_nearest_rows_streams_the_bank_in_chunks_with_exact_ties(monkeypatch):
    from spacessl import search

    rng = np.random.default_rng(0)
    bank = unit(*rng.normal(size=(40, 3)))
    bank[[5, 17, 33]] = bank[2]  # four identical rows: their order must be by index
    queries = bank[[2, 9, 30]]
    whole = search.nearest_rows(bank, queries, 6)
    monkeypatch.setattr(search, "BANK_CHUNK", 7)   # the tied rows fall in different chunks
    monkeypatch.setattr(search, "ALL_PAIRS_CHUNK", 2)
    chunked = search.nearest_rows(bank, queries, 6)
    np.testing.assert_array_equal(chunked[0], whole[0])
    assert chunked[0][0][:4].tolist() == [2, 5, 17, 33]
    brute = np.lexsort((np.broadcast_to(np.arange(40), (3, 40)), -(queries @ bank.T)), axis=1)[:, :6]
    np.testing.assert_array_equal(chunked[0], brute)
    own = search.nearest_rows(bank, bank[8:12], 3, self_offset=8)[0]
    assert not any(8 + i in row for i, row in enumerate(own))
