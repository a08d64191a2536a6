"""Hunting a rare kind of image: rank the archive from examples marked "yes" and "no" ("more
like these, not like those").

With few marks the ranking is by the mean of the positives (what a several-image query does).
Once there are MIN_EACH of each kind, a linear classifier (logistic regression, balanced
classes) is fitted on the marked search vectors, the relevance-feedback recipe of content-based
image retrieval (e.g. Tong & Chang 2001, who used an SVM), and the ranking direction is the
mean of the positives plus the classifier's unit normal, in equal parts. Measured with
bench/hunt_quality.py (simulated hunts on the demo's labelled galaxies; README "Exploring"):
the classifier alone beat the mean for the rare class (mergers) but lost for common ones, since
a few "no" marks that look like the "yes" ones give a normal nearly orthogonal to what the yes
images share; the sum kept the best of both on average. The result is one direction in the
embedding space, so the archive is ranked by the same search as any query, exact or through the
FAISS index beyond EXACT_LIMIT.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression

from .config import UserError
from .search import mean_query

MIN_EACH = 2                # marks of each kind before the classifier joins the mean of the positives
CLASSIFIER_C = 1.0          # inverse regularisation strength of the logistic regression
CLASSIFIER_MAX_ITER = 1000  # lbfgs iterations


def hunt_direction(yes: np.ndarray, no: np.ndarray):
    """(unit direction to rank the archive by, how it was made) from the search vectors of the
    images marked yes (rows of `yes`) and no (rows of `no`)."""
    yes, no = np.asarray(yes, dtype=np.float64), np.asarray(no, dtype=np.float64)
    if len(yes) == 0:
        raise UserError("mark at least one image as 'yes' (like the event you hunt) before ranking")
    if len(yes) < MIN_EACH or len(no) < MIN_EACH:
        return mean_query(yes), f"mean of {len(yes)} yes"
    normal = classifier_normal(yes, no)
    if normal is None:  # the marks cannot be told apart in the embedding: fall back, and say so
        return mean_query(yes), f"mean of {len(yes)} yes (the classifier found no direction)"
    direction = mean_query(yes) + normal
    return direction / np.linalg.norm(direction), f"mean of {len(yes)} yes + classifier on {len(yes)} yes / {len(no)} no"


def classifier_normal(yes: np.ndarray, no: np.ndarray):
    """The unit normal of a logistic regression of yes against no (balanced classes), pointing
    to yes; None when the fit finds no direction."""
    classifier = LogisticRegression(C=CLASSIFIER_C, class_weight="balanced", max_iter=CLASSIFIER_MAX_ITER)
    classifier.fit(np.concatenate([yes, no]), np.r_[np.ones(len(yes)), np.zeros(len(no))])
    weights = classifier.coef_[0]
    norm = np.linalg.norm(weights)
    return weights / norm if norm >= 1e-12 else None
