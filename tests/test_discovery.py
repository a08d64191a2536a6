"""Simulated hunts (spacessl/discovery.py): exact counts on hand-built vectors."""

import numpy as np

from spacessl.discovery import hunt, random_order
from spacessl.search import mean_query


def circle(degrees):
    angles = np.radians(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def mean_ranker(vectors):
    return lambda yes, no: vectors @ mean_query(vectors[yes])


def test_nearest_images_first_and_the_start_never_counts():
    # Five targets at 0-4 degrees, 45 others from 40 degrees on: from target 0, the four others
    # come first, then only non-targets.
    vectors = circle(list(range(5)) + list(range(40, 85)))
    is_target = np.arange(50) < 5
    found = hunt(mean_ranker(vectors), is_target, start=0, rounds=2, shown=3)
    assert found.tolist() == [1, 2, 3, 4, 4, 4]


def test_feedback_follows_the_marks_where_a_plain_query_does_not():
    # Targets on a chain (0, 6, 11, 16, 21 degrees) and look-alikes on the other side of the start
    # (-5 to -9 degrees). A plain query from 0 reads on by distance from 0: -5, 6 | -6, -7 | -8, -9.
    # With feedback the mean of the yes images walks along the chain: after 0 and 6 (mean at 3
    # degrees) 11 is 8 away and -6 is 9; after 0, 6, 11 (mean near 5.7) 16 is nearer than -7.
    targets = [0, 6, 11, 16, 21]
    others = [-5, -6, -7, -8, -9, 180, 181, 182]
    vectors = circle(targets + others)
    is_target = np.arange(len(vectors)) < len(targets)
    plain = hunt(mean_ranker(vectors), is_target, start=0, rounds=3, shown=2, feedback=False)
    learned = hunt(mean_ranker(vectors), is_target, start=0, rounds=3, shown=2, feedback=True)
    assert plain.tolist() == [0, 1, 1, 1, 1, 1]
    assert learned.tolist() == [0, 1, 2, 2, 3, 3]


def test_the_ranking_is_fitted_once_per_round_with_all_marks_so_far():
    calls = []
    is_target = np.array([True, False, True, True, False, False])

    def rank(yes, no):
        calls.append((sorted(yes), sorted(no)))
        return -np.arange(6, dtype=float)  # always rows in order: ties never arise
    found = hunt(rank, is_target, start=0, rounds=3, shown=2)
    assert calls == [([0], []), ([0, 2], [1]), ([0, 2, 3], [1, 4])]
    assert found.tolist() == [0, 1, 2, 2, 2]  # only 5 unviewed rows: the last round shows one
    calls.clear()
    hunt(rank, is_target, start=0, rounds=3, shown=2, feedback=False)
    assert calls == [([0], [])]


def test_ties_are_broken_by_row_and_random_order_is_seeded():
    is_target = np.array([False, True, False, True])
    found = hunt(lambda yes, no: np.zeros(4), is_target, start=0, rounds=1, shown=2)
    assert found.tolist() == [1, 1]  # rows 1 then 2
    first = hunt(random_order(100, 7), np.arange(100) % 10 == 0, start=0, rounds=5, shown=20)
    again = hunt(random_order(100, 7), np.arange(100) % 10 == 0, start=0, rounds=5, shown=20)
    assert np.array_equal(first, again) and first[-1] == 9  # every image but the start: all 9 others found
    # Each start draws its own order: over many hunts the first page holds the class's share on average.
    is_target = np.arange(1000) % 10 == 0
    pages = [hunt(random_order(1000, 7), is_target, start=s, rounds=1, shown=20)[-1] for s in range(0, 1000, 10)]
    assert len(set(pages)) > 1 and 1.0 < np.mean(pages) < 3.0  # 99 of 999 others: 1.98 expected per 20
