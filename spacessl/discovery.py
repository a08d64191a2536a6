"""Simulated hunts: how many images of a rare kind a user finds after looking at N images.

A hunt as the explorer plays it: the user starts from one image of the kind, is shown `shown`
images at a time, marks each "yes" (of the kind) or "no", and the archive is ranked again from
all marks before the next round. The score is what a user lives through, the number of images
of the kind found among the first N viewed (the start image not counted), rather than a
precision averaged over every image, which the common classes rule. Labels stand in for the
user's marks; nothing here reads a file, so the same simulation scores any ranking on any
labelled set (bench/discovery.py) and hand-built vectors (tests).
"""

from typing import Callable

import numpy as np

# A ranking: (rows marked yes, rows marked no) -> one score per archive row, highest shown first.
Ranker = Callable[[list, list], np.ndarray]


def hunt(rank: Ranker, is_target: np.ndarray, start: int, rounds: int, shown: int,
         feedback: bool = True) -> np.ndarray:
    """Cumulative count of target rows found after each image viewed (length rounds x shown).

    Each round shows the `shown` best-scored rows not yet viewed (ties by row, so the result is
    reproducible); with `feedback` the ranking is fitted again from all marks before every round,
    without it the first round's ranking is read on (a plain query's next pages)."""
    is_target = np.asarray(is_target, dtype=bool)
    viewed = np.zeros(len(is_target), dtype=bool)
    viewed[start] = True
    yes, no, found = [start], [], []
    scores = None
    for _ in range(rounds):
        if scores is None or feedback:
            scores = np.asarray(rank(list(yes), list(no)), dtype=np.float64)
        candidates = np.flatnonzero(~viewed)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:shown]
        viewed[order] = True
        for row in order:
            (yes if is_target[row] else no).append(int(row))
            found.append(bool(is_target[row]))
    return np.cumsum(found)


def random_order(n: int, seed: int) -> Ranker:
    """A ranking that ignores the marks: a random order (what a user without the tool sees), drawn
    anew for each hunt from the seed and the hunt's start image, so hunts do not share one draw."""
    return lambda yes, no: np.random.default_rng([seed, yes[0]]).permutation(n).astype(np.float64)
