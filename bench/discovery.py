"""Discovery of rare events: from one image of a kind, how many more does a user find after
looking at N images? Simulated hunts (spacessl/discovery.py) on a labelled set, for every ranking
under test, on features from trained runs, their random-weights twins and raw pixels.

Usage (from the repository root, with ../shared beside it):
    .venv/bin/python bench/discovery.py --SET=demo --RUNS=checkpoints/demo-.../last.ckpt
    .venv/bin/python bench/discovery.py --SET=galaxyzoo --DATA=<bench_ablation folder>/data \
        --RUNS=<folder>/runs/nocrop_s1/last.ckpt,<folder>/runs/dino_s1/last.ckpt
    .venv/bin/python bench/discovery.py --SET=mirabest --RUNS=... --RARE=FRI:0.03

Each hunt starts from one image of a hunted class (STARTS of them per class, the same for every
row), shows SHOWN images a round for ROUNDS rounds, and marks each by its label. Rankings:
  random      a seeded random order (no tool)
  nn          the start image's nearest neighbours, page after page (a plain query, no marks)
  mean        the mean of the yes images, refitted each round
  mean+classifier  the mean plus the unit normal of a logistic regression of yes against no (the
              explorer's ranking until 2026-12-07; the mean until 2 marks of each)
  classifier  a logistic regression of yes against no marks alone (the mean until 2 of each)
  svm         a linear SVM of yes against no marks alone (Tong & Chang 2001; the mean until 2 of each)
  exemplar    a logistic regression of yes against the no marks plus BACKGROUND random archive
              images as negatives (the exemplar-SVM idea, Malisiewicz et al. 2011: a rare kind is
              what the bulk is not), from the first round on
  diffusion   the marks spread over the archive's nearest-neighbour graph (label propagation,
              Zhou et al. 2004; Iscen et al. 2017; spacessl/hunt.py's graph)
  hunt        the product's ranking (spacessl/hunt.py): diffusion plus its own exemplar
              classifier, each divided by its spread over the archive
Features: pool (the backbone's output, today's search vector), l3+l4, rot8 (pool averaged over
the 8 quarter turns and mirrorings of the image), each after every post-processing in
POSTPROCESS. With INVARIANCE, each network also gets the archive plus a turned copy of every
image (a random quarter turn, maybe mirrored, brightness x 0.85-1.15): the share of copies whose
nearest image is their original. A line per result is appended to <run folder>/results.csv as it comes; the table of
found-in-N (mean over starts, with its spread) is printed per class at the end, and the mean
discovery curve of every row goes to curves.csv.

Sets: galaxyzoo and mirabest as bench/quality.py prepares them (or DATA: an earlier prepared
folder with images/ and labels.csv), demo = data/sample/galaxies (300). MiraBest's RARE class is
subsampled to the given share of the set (a new sample per seed in SEEDS), so it is rare as the
events a user hunts.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ablation import GALAXY_MERGE, feature_sets, labelled  # noqa: E402
from quality import prepare_galaxyzoo, prepare_mirabest  # noqa: E402
from spacessl import postprocess  # noqa: E402
from spacessl.baselines import raw_pixel_embeddings  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.errors import UserError  # noqa: E402
from spacessl.files import atomic_path  # noqa: E402
from spacessl.discovery import hunt, random_order  # noqa: E402
from spacessl.embeddings import eval_dataset  # noqa: E402
from spacessl.hunt import GRAPH_K, Graph, exemplar_scores, hunt_scores, seeds  # noqa: E402
from spacessl.images import collate_readable, detect_channels, unit_tensor  # noqa: E402
from spacessl.model import SSLModel, load_model, pooled_over_turns  # noqa: E402
from spacessl.runs import new_output_dir  # noqa: E402
from spacessl.search import all_nearest, mean_query  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
SET = "demo"                     # galaxyzoo | mirabest | demo
DATA = ""                        # galaxyzoo/mirabest: a folder prepared before (images/, labels.csv); "" = prepare
RUNS = ""                        # checkpoints to score, comma-separated (each also as random weights); "" = baselines only
CLASSES = ""                     # classes hunted, comma-separated; "" = the set's rare ones (HUNTED below)
RARE = "FRI:0.03"                # mirabest: class:share it is subsampled to
STARTS = 60                      # hunts per class, each from another image of the class (all if fewer)
ROUNDS = 5                       # rounds of marking per hunt
SHOWN = 20                       # images shown (and marked) per round
RANKINGS = "random,nn,mean,mean+classifier,classifier,svm,exemplar,diffusion,hunt"  # comma-separated (above)
FEATURES = "pool"                # pool | l3+l4 | rot8, comma-separated
POSTPROCESS = "none,centre,whiten"  # none | centre | whiten, comma-separated
INVARIANCE = True                # also print each network's share of turned copies found by their original (below)
BASELINES = True                 # also score random weights (of the first run's network) and raw pixels
SEEDS = "0"                      # seeds of the starts (and random weights, background, MiraBest subsample)
BACKGROUND = 1000                # exemplar: random archive images taken as negatives
OUT_DIR = "checkpoints"          # the benchmark's run folder goes here
SHARED = "../shared/data"        # the read-only archive copies
NUM_WORKERS = 2                  # loader processes (this machine has 2 cores)
GALAXY_CROP = 256                # galaxyzoo copies: px kept from the centre (as bench/quality.py)
GALAXY_STORED = 64               # galaxyzoo copies: px side
MIRABEST_STORED = 80             # mirabest copies: px side
# -----------------------------------------------------------------------------------------------

HUNTED = {"galaxyzoo": "5,3", "demo": "5,3", "mirabest": "FRI"}  # mergers and edge-on; FR I made rare
MERGE = {"galaxyzoo": GALAXY_MERGE, "demo": GALAXY_MERGE, "mirabest": ""}
INPUT_SIZE = {"galaxyzoo": 48, "demo": 64, "mirabest": 64}  # the networks' input without RUNS (bench/ablation.py's)
DEMO_IMAGES = ROOT / "data" / "sample" / "galaxies"
DEMO_LABELS = ROOT / "data" / "sample" / "galaxy_labels.csv"
MIN_EACH = 2  # classifier, svm: marks of each kind before they replace the mean (as hunt.py)


def prepare(cfg: dict, out: Path):
    """(image folder, labels CSV) of the chosen set."""
    if cfg["SET"] == "demo":
        return DEMO_IMAGES, DEMO_LABELS
    if cfg["SET"] not in HUNTED:
        raise UserError(f"--SET={cfg['SET']}: choose one of {', '.join(HUNTED)}")
    data = Path(cfg["DATA"]) if cfg["DATA"] else \
        (prepare_mirabest if cfg["SET"] == "mirabest" else prepare_galaxyzoo)(cfg, out / "data")
    if not (data / "labels.csv").is_file():
        raise UserError(f"--DATA={cfg['DATA']}: no labels.csv there; give a folder prepared by this bench or "
                        f"bench/ablation.py (<its run folder>/data), or leave DATA empty")
    return data / "images", data / "labels.csv"


@torch.no_grad()
def turned_pool(model, images: Path, names: list, workers: int) -> np.ndarray:
    """The backbone's pooled output averaged over the 8 quarter turns and mirrorings of each image
    (test-time augmentation with the symmetries the astro preset trains with), unit rows."""
    loader = DataLoader(eval_dataset(model, images, names), batch_size=256, num_workers=workers,
                        collate_fn=collate_readable)
    model.eval()
    out = []
    for batch, _ in loader:
        out.append(pooled_over_turns(model.backbone, batch))
    return torch.cat(out).numpy()


@torch.no_grad()
def invariance_share(model, images: Path, names: list, workers: int, seed: int) -> float:
    """The share of turned copies whose nearest image is their original, in an archive of the
    images plus one copy of each (a random quarter turn, mirrored or not, brightness scaled by
    0.85-1.15): does the network see through the changes the astro preset trains with?"""
    loader = DataLoader(eval_dataset(model, images, names, stored=True), batch_size=256, num_workers=workers,
                        collate_fn=collate_readable)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    originals, copies = [], []
    for batch, _ in loader:
        batch = unit_tensor(batch)
        turned = []
        for image in batch:
            image = torch.rot90(image, int(torch.randint(4, (), generator=generator)), dims=(1, 2))
            if torch.rand((), generator=generator) < 0.5:
                image = image.flip(2)
            turned.append((image * (0.85 + 0.3 * torch.rand((), generator=generator))).clamp(0, 1))
        originals.append(model.embed_stored(batch))
        copies.append(model.embed_stored(torch.stack(turned)))
    archive = torch.cat(originals + copies).numpy()
    n = len(archive) // 2
    nearest, _ = all_nearest(archive, 1)
    return float(np.mean(nearest[n:, 0] == np.arange(n)))


def model_features(model, images: Path, names: list, cfg: dict) -> dict:
    wanted = cfg["FEATURES"].split(",")
    features = {k: v for k, v in feature_sets(model, images, names, cfg["NUM_WORKERS"]).items() if k in wanted}
    if "rot8" in wanted:
        features["rot8"] = turned_pool(model, images, names, cfg["NUM_WORKERS"])
    return features


def make_rankers(vectors: np.ndarray, cfg: dict, seed: int, graph) -> dict:
    """name -> (Ranker, feedback) for every ranking in RANKINGS."""
    n = len(vectors)

    def linear(direction):
        return vectors @ direction

    def mean(yes, no):
        return linear(mean_query(vectors[yes]))

    def logistic():
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)

    def marks_only(fit, add_mean=False):
        def rank(yes, no):
            if len(yes) < MIN_EACH or len(no) < MIN_EACH:
                return mean(yes, no)
            x = np.concatenate([vectors[yes], vectors[no]])
            normal = fit().fit(x, np.r_[np.ones(len(yes)), np.zeros(len(no))]).coef_[0]
            normal = normal / max(np.linalg.norm(normal), 1e-12)
            return linear(mean_query(vectors[yes]) + normal if add_mean else normal)
        return rank

    def exemplar(yes, no):
        return exemplar_scores(vectors, yes, no, cfg["BACKGROUND"], seed)

    def diffusion(yes, no):
        return graph.diffuse(seeds(vectors, yes) - seeds(vectors, no))

    def hunt(yes, no):
        return hunt_scores(vectors, graph, yes, no)[0]

    table = {
        "random": (random_order(n, seed), False),
        "nn": (mean, False),
        "mean": (mean, True),
        "mean+classifier": (marks_only(logistic, add_mean=True), True),
        "classifier": (marks_only(logistic), True),
        "svm": (marks_only(lambda: LinearSVC(C=1.0, class_weight="balanced")), True),
        "exemplar": (exemplar, True),
        "diffusion": (diffusion, True),
        "hunt": (hunt, True),
    }
    return {name: table[name] for name in cfg["RANKINGS"].split(",")}


def rare_subset(classes: np.ndarray, rare: str, seed: int) -> np.ndarray:
    """Rows kept when class `rare` (class:share) is subsampled to that share of the set."""
    name, share = rare.split(":")
    members, others = np.flatnonzero(classes == name), np.flatnonzero(classes != name)
    keep = max(2, round(float(share) * len(others) / (1 - float(share))))
    chosen = np.random.default_rng(seed).choice(members, min(keep, len(members)), replace=False)
    return np.sort(np.r_[others, chosen])


def score(source: str, features: dict, classes: np.ndarray, hunted: list, seed: int, cfg: dict, curves: dict,
          results: Path) -> None:
    """Every hunt of every ranking on each feature and post-processing of one source; a line
    per result appended to `results` after each feature and post-processing."""
    viewed = cfg["ROUNDS"] * cfg["SHOWN"]
    for feature, vectors in features.items():
        for post in cfg["POSTPROCESS"].split(","):
            rows = []
            v = postprocess.fit(vectors, post).apply(vectors).astype(np.float64)
            graph = Graph(*all_nearest(v, min(GRAPH_K, len(v) - 1)))
            rankers = make_rankers(v, cfg, seed, graph)
            for target in hunted:
                is_target = classes == target
                members = np.flatnonzero(is_target)
                starts = np.random.default_rng(seed).choice(members, min(cfg["STARTS"], len(members)), replace=False)
                for name, (rank, feedback) in rankers.items():
                    began = time.perf_counter()
                    found = np.stack([hunt(rank, is_target, s, cfg["ROUNDS"], cfg["SHOWN"], feedback) for s in starts])
                    curves[(source, feature, post, target, name)] = found.mean(axis=0)
                    rows.append({"source": source, "feature": feature, "post": post, "seed": seed, "class": target,
                                 "members": len(members), "images": len(classes), "ranking": name,
                                 f"found@{cfg['SHOWN']}": found[:, cfg["SHOWN"] - 1].mean(),
                                 f"found@{viewed}": found[:, -1].mean(), "std": found[:, -1].std(),
                                 "starts": len(starts), "ms_per_hunt": 1000 * (time.perf_counter() - began) / len(starts)})
            append(results, rows)


def append(path: Path, rows: list) -> None:
    table = pd.concat([pd.read_csv(path), pd.DataFrame(rows)]) if path.is_file() else pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    print(pd.DataFrame(rows).drop(columns=["images", "starts"]).round(2).to_string(index=False), flush=True)


def main(argv):
    cfg = settings(globals(), argv)
    for feature in cfg["FEATURES"].split(","):
        if feature not in ("pool", "l3+l4", "rot8"):
            raise UserError(f"--FEATURES: unknown feature {feature!r} (pool, l3+l4, rot8)")
    runs = [Path(r) for r in cfg["RUNS"].split(",") if r.strip()]
    for run in runs:
        if not run.is_file():
            raise UserError(f"--RUNS: {run} is not a checkpoint file (give <run folder>/last.ckpt or best.ckpt)")
    out = new_output_dir(Path(cfg["OUT_DIR"]), f"bench_discovery_{cfg['SET']}")
    images, labels_csv = prepare(cfg, out)
    names, classes = labelled(images, labels_csv, MERGE[cfg["SET"]])
    hunted = (cfg["CLASSES"] or HUNTED[cfg["SET"]]).split(",")
    torch.set_num_threads(cfg["NUM_WORKERS"])
    results, curves = out / "results.csv", {}
    print(f"{cfg['SET']}: {len(names)} labelled images; hunting {', '.join(hunted)}; results: {results}", flush=True)
    for seed in (int(s) for s in cfg["SEEDS"].split(",")):
        keep = rare_subset(classes, cfg["RARE"], seed) if cfg["SET"] == "mirabest" else np.arange(len(names))
        kept_names, kept_classes = [names[i] for i in keep], classes[keep]
        sources = {}
        for run in runs:
            sources[f"{run.parent.name}/{run.stem}"] = load_model(run)
        if cfg["BASELINES"]:
            torch.manual_seed(seed)
            # The first run's network with random weights; without runs, a resnet18 for the set's images.
            sources["random_weights"] = SSLModel(**dict(next(iter(sources.values())).hparams)) if sources else \
                SSLModel(in_channels=detect_channels(images, kept_names), input_size=INPUT_SIZE[cfg["SET"]])
        for source, model in sources.items():
            if cfg["INVARIANCE"]:
                share = invariance_share(model, images, kept_names, cfg["NUM_WORKERS"], seed)
                print(f"{source}: share of turned copies whose nearest image is their original {share:.3f}", flush=True)
            score(source, model_features(model, images, kept_names, cfg), kept_classes, hunted, seed, cfg, curves,
                  results)
        if cfg["BASELINES"]:
            channels = sources["random_weights"].hparams.in_channels
            pixels = raw_pixel_embeddings(images, kept_names, channels, 32, 128, seed)
            score("raw_pixels", {"pool": pixels}, kept_classes, hunted, seed, cfg, curves, results)
    table = pd.read_csv(results)
    viewed = f"found@{cfg['ROUNDS'] * cfg['SHOWN']}"
    with atomic_path(out / "curves.csv") as tmp:
        pd.DataFrame([{"source": s, "feature": f, "post": p, "class": c, "ranking": r,
                       **{str(i + 1): round(float(x), 3) for i, x in enumerate(curve)}}
                      for (s, f, p, c, r), curve in curves.items()]).to_csv(tmp, index=False)
    for target in hunted:
        part = table[table["class"].astype(str) == target]
        print(f"\nclass {target} ({int(part['members'].iloc[0])} of {int(part['images'].iloc[0])} images): "
              f"{viewed}, mean over starts and seeds")
        print(part.pivot_table(index=["source", "feature", "post"], columns="ranking", values=viewed,
                               sort=False).round(1).to_string())
    print(f"\nresults: {results}\ncurves: {out / 'curves.csv'}")


if __name__ == "__main__":
    run_main(main)
