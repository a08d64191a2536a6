"""Probe metrics on hand-made embeddings whose answers are known exactly."""

import logging

import numpy as np
import pytest

from spacessl.errors import UserError
from spacessl.metrics import (cross_validate, knn_accuracy, knn_predict, mean_std, per_class_sample, precision_at_k,
                              precision_per_class,
                     temporal_neighbour_fraction, usable_folds)


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def angles(*degrees):
    return unit([(np.cos(np.deg2rad(d)), np.sin(np.deg2rad(d))) for d in degrees])


def test_precision_at_k_is_exact():
    # Points on a circle at 0, 10, 20 (class a) and 90, 100, 130 (class b) degrees.
    vectors = angles(0, 10, 20, 90, 100, 130)
    labels = np.array(list("aaabbb"))
    # k=2: every point's two nearest are its own class, except 20 (10 and 0: fine) -> all 1.0
    assert precision_at_k(vectors, labels, 2) == pytest.approx(1.0)
    # k=3: 0 -> 10, 20, 90 (2/3); 10 -> 0, 20, 90 (2/3); 20 -> 10, 0, 90 (2/3);
    #      90 -> 100, 130, 20 (2/3); 100 -> 90, 130, 20 (2/3); 130 -> 100, 90, 20 (2/3)
    assert precision_at_k(vectors, labels, 3) == pytest.approx(2 / 3)
    # k=5 (everyone else): 2 of 5 share the class
    assert precision_at_k(vectors, labels, 5) == pytest.approx(2 / 5)


def test_precision_per_class_shows_a_rare_class_the_mean_hides():
    # Class a: 0, 10, 20, 30 degrees; the rare class r: 35 and 120. k=1: 0, 10 and 20 find an a,
    # 30 finds 35 (an r) -> a 3/4; 35 finds 30 (0) and 120 finds 35 (1) -> r 1/2; all rows 4/6.
    vectors = angles(0, 10, 20, 30, 35, 120)
    labels = np.array(list("aaaarr"))
    assert precision_per_class(vectors, labels, 1) == pytest.approx({"a": 0.75, "r": 0.5})
    assert precision_at_k(vectors, labels, 1) == pytest.approx(4 / 6)


def test_precision_at_k_over_several_chunks(monkeypatch):
    from spacessl import search

    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(50, 8)))
    labels = rng.integers(0, 3, size=50)
    whole = precision_at_k(vectors, labels, 4)
    monkeypatch.setattr(search, "ALL_PAIRS_CHUNK", 7)
    assert precision_at_k(vectors, labels, 4) == pytest.approx(whole)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    brute = np.mean([np.mean(labels[np.argsort(-row)[:4]] == labels[i]) for i, row in enumerate(similarity)])
    assert whole == pytest.approx(brute)


def test_knn_vote_on_known_neighbours():
    bank = angles(0, 5, 10, 90, 95, 100)
    bank_labels = np.array(list("aaabbb"))
    queries = angles(3, 40, 60, 97)  # 40 is nearest 10, 5, 0; 60 nearest 90, 95, 100
    assert knn_accuracy(bank, bank_labels, queries, np.array(list("aabb")), k=3) == 1.0
    assert knn_accuracy(bank, bank_labels, queries, np.array(list("abab")), k=3) == 0.5


def test_knn_tie_goes_to_the_nearest_class_whatever_its_name():
    bank = angles(0, 12, 33, 45)   # from a query at 20: 8 degrees to row 1, 13 to row 2, 20, 25
    query = angles(20)
    for names in (["z", "a", "z", "a"], ["a", "z", "a", "z"], [1, 0, 1, 0], [0, 1, 0, 1]):
        labels = np.array(names)
        # k=4: two votes each, so the class of the nearest row (row 1) wins, however it is named.
        assert knn_predict(bank, labels, query, k=4).tolist() == [names[1]]


def separable(n_per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3)
    vectors = unit(np.concatenate([c + 0.05 * rng.normal(size=(n_per_class, 3)) for c in centres]))
    return vectors, np.repeat(np.array(["x", "y", "z"]), n_per_class)


def test_cross_validation_on_separable_classes_is_perfect():
    vectors, labels = separable()
    scores = cross_validate(vectors, labels, folds=4, knn_k=5, shots=[2, 5], c=1.0, max_iter=500, seed=0)
    assert scores["folds"] == 4
    assert scores["knn_accuracy"] == [1.0] * 4 and scores["linear_accuracy"] == [1.0] * 4
    assert list(scores["linear_predictions"]) == list(labels)
    assert set(scores["few_shot"]) == {2, 5, None}
    assert all(len(v["knn"]) == 4 for v in scores["few_shot"].values())


def test_cross_validation_on_random_labels_is_near_chance():
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(300, 16)))
    labels = rng.integers(0, 2, size=300).astype(str)
    scores = cross_validate(vectors, labels, folds=5, knn_k=15, shots=[], c=1.0, max_iter=500, seed=0)
    assert 0.35 < mean_std(scores["knn_accuracy"])[0] < 0.65
    assert 0.35 < mean_std(scores["linear_accuracy"])[0] < 0.65


def test_few_shot_draws_n_per_class():
    labels = np.array(["a"] * 10 + ["b"] * 3)
    chosen = per_class_sample(np.arange(13), labels, 5, np.random.default_rng(0))
    assert sorted(labels[chosen].tolist()) == ["a"] * 5 + ["b"] * 3


def test_small_class_reduces_the_folds_with_a_warning(caplog):
    labels = np.array(["a"] * 10 + ["b"] * 3)
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        assert usable_folds(labels, 5) == 3
    assert "class 'b' has only 3 labelled images: using 3 folds instead of 5" in caplog.text


@pytest.mark.parametrize("labels,message", [
    (["a"] * 5 + ["b"], "class 'b' has only one labelled image"),
    (["a"] * 6, "only one class"),
])
def test_folds_impossible(labels, message):
    with pytest.raises(UserError, match=message):
        usable_folds(np.array(labels), 5)


def test_temporal_neighbour_fraction_is_exact():
    # Frames 0..4 at 0, 10, 25, 200, 45 degrees. Nearest: 0 -> 10 (row 1), 10 -> 0 (row 0),
    # 25 -> 10 (row 1), 200 -> 45 (row 4, 155 deg), 45 -> 25 (row 2: two frames away).
    vectors = angles(0, 10, 25, 200, 45)
    assert temporal_neighbour_fraction(vectors, max_gap=1) == pytest.approx(4 / 5)
    assert temporal_neighbour_fraction(vectors, max_gap=2) == pytest.approx(1.0)
    # Reversed time order changes nothing; a shuffled one does: angles 0, 25, 45, 10, 200 leave
    # only 45 -> 25 one row apart.
    assert temporal_neighbour_fraction(vectors[::-1], max_gap=1) == pytest.approx(4 / 5)
    assert temporal_neighbour_fraction(vectors[[0, 2, 4, 1, 3]], max_gap=1) == pytest.approx(1 / 5)
    with pytest.raises(UserError, match="at least two frames"):
        temporal_neighbour_fraction(vectors[:1])


def test_linear_probe_can_fit_other_vectors_than_the_knn_vote():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b"]), 40)
    noise = rng.normal(size=(80, 4))
    informative = noise.copy()
    informative[:, 0] += np.where(labels == "a", 5.0, -5.0)
    scores = cross_validate(noise, labels, 4, 5, [], 1.0, 1000, 0, linear_vectors=informative)
    assert mean_std(scores["linear_accuracy"])[0] == 1.0 and mean_std(scores["knn_accuracy"])[0] < 0.8
