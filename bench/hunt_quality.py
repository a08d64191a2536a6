"""Does marking "no" help? Simulated hunts on a labelled set, scored by the classes.

Usage (from the repository root; a run whose images are embedded, and labels for them):
    .venv/bin/python bench/hunt_quality.py --RUN=checkpoints/demo-... --LABELS=data/sample/galaxy_labels.csv

Each trial plays a user hunting one class: a random image of the class is the first query; of
its NEAR nearest images, YES - 1 more of the class are marked "yes" and NO of other classes
"no" (the look-alikes a user would reject). The archive is then ranked, marked images left
out, three ways: by the mean of the yes images (a several-image query), by a classifier of
yes against no alone, and by the explorer's ranking from all marks (spacessl/hunt.py: the
mean plus the classifier's direction once there are MIN_EACH of each). The score is the share
of the class in the top SCORED. Printed per class and marks: the three shares over TRIALS
trials and the class's share of the archive (what random ranking gives); last, each way's
average over all lines.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spacessl.api import open_run  # noqa: E402
from spacessl.config import resolve_config, run_main, usage, wants_help  # noqa: E402
from spacessl.hunt import classifier_normal, hunt_direction  # noqa: E402
from spacessl.labels import match_labels, read_labels  # noqa: E402
from spacessl.search import mean_query  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
RUN = ""                         # run folder whose images are embedded (SSL_Evaluate.py)
LABELS = "data/sample/galaxy_labels.csv"  # CSV (id, class) of those images
CLASS_COLUMN = ""                # labels column with the class; "" = auto
MARKS = "3/2,5/5,10/10"          # yes/no mark counts simulated, comma-separated
NEAR = 40                        # the marks are chosen among the first query's NEAR nearest images
SCORED = 20                      # ranked images scored
TRIALS = 30                      # hunts per class and mark count
SEED = 0
# -----------------------------------------------------------------------------------------------


def main(argv):
    if wants_help(argv):
        print(usage(__doc__, __file__))
        return
    cfg = resolve_config(globals(), argv)
    run = open_run(cfg["RUN"])
    rows, classes = match_labels(read_labels(cfg["LABELS"], class_column=cfg["CLASS_COLUMN"]), run.names, cfg["LABELS"])
    vectors = np.asarray(run.vectors, dtype=np.float64)[rows]
    classes = np.asarray([str(c) for c in classes])
    rng = np.random.default_rng(cfg["SEED"])
    print(f"{len(rows)} labelled images; share of the class in the top {cfg['SCORED']} (mean over trials)")
    lines = []
    for target in sorted(set(classes)):
        members = np.flatnonzero(classes == target)
        for marks in cfg["MARKS"].split(","):
            n_yes, n_no = (int(n) for n in marks.split("/"))
            scores = {"mean of yes": [], "classifier alone": [], "explorer (hunt.py)": []}
            for _ in range(cfg["TRIALS"]):
                first = rng.choice(members)
                near = np.argsort(-(vectors @ vectors[first]))[1:cfg["NEAR"] + 1]
                alike, unlike = near[classes[near] == target], near[classes[near] != target]
                if len(alike) < n_yes - 1 or len(unlike) < n_no:
                    continue
                yes = np.r_[first, rng.choice(alike, n_yes - 1, replace=False)]
                no = rng.choice(unlike, n_no, replace=False)
                marked = set(yes) | set(no)
                for name, direction in (("mean of yes", mean_query(vectors[yes])),
                                        ("classifier alone", classifier_normal(vectors[yes], vectors[no])),
                                        ("explorer (hunt.py)", hunt_direction(vectors[yes], vectors[no])[0])):
                    order = [i for i in np.argsort(-(vectors @ direction)) if i not in marked][:cfg["SCORED"]]
                    scores[name].append(float(np.mean(classes[order] == target)))
            if scores["mean of yes"]:
                lines.append({name: np.mean(v) for name, v in scores.items()})
                print(f"  {target:<12} {n_yes:>2} yes / {n_no:>2} no: " +
                      ", ".join(f"{name} {np.mean(v):.3f}" for name, v in scores.items()) +
                      f"  (random {np.mean(classes == target):.3f}; {len(scores['mean of yes'])} trials)")
    print("average over the lines: " + ", ".join(f"{name} {np.mean([line[name] for line in lines]):.3f}"
                                                 for name in lines[0]))


if __name__ == "__main__":
    run_main(main)
