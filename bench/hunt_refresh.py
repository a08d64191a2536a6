"""How long the explorer takes to rank the archive again after a mark, at archive scale.

Usage (from the repository root):
    .venv/bin/python bench/hunt_refresh.py                      # 100,000 vectors
    .venv/bin/python bench/hunt_refresh.py --IMAGES=1000000 --EXACT_LIMIT=200000

Synthetic unit vectors with the spread of real embeddings (a Gaussian whose k-th eigenvalue is
proportional to k^-SPECTRUM, randomly rotated) stand in for a run's embeddings; marks go to
random images. The first mark builds the hunt's neighbour graph (hunt.py; once per run, then
cached): its time is printed apart. Each timed refresh is what one later click on "yes" or "no"
costs the server (spacessl/explore.Explorer.mark): spread all marks over the graph, take the
SHOWN best unmarked images, write marks.csv and ranking.csv. Printed: ms per refresh (median
and slowest of REPEATS).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spacessl.config import run_main, settings  # noqa: E402
from spacessl.explore import Explorer, ExploreSettings  # noqa: E402
from spacessl.index import EXACT_LIMIT as LIBRARY_EXACT_LIMIT, IndexSettings  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
IMAGES = 100000                  # synthetic archive size
DIM = 512                        # embedding width (resnet18's)
SPECTRUM = 0.8                   # eigenvalue k of the covariance ~ k^-SPECTRUM (issue 14's realistic spread)
MARKS = 20                       # marks made, alternating yes and no
REPEATS = 10                     # timed refreshes (the last REPEATS marks)
SHOWN = 24                       # ranked images returned per refresh (SSL_Explore.py's default)
EXACT_LIMIT = LIBRARY_EXACT_LIMIT  # above: the FAISS index (built once, before timing)
SEED = 0
# -----------------------------------------------------------------------------------------------


def spectrum_vectors(n: int, dim: int, power: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.arange(1, dim + 1) ** (-power / 2)
    vectors = (rng.normal(size=(n, dim)).astype(np.float32) * scales.astype(np.float32)) @ rotation.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_run(home: Path, vectors: np.ndarray) -> SimpleNamespace:
    """What the explorer needs of an opened run (runs.OpenRun), over synthetic vectors."""
    names = [f"{i:08d}.png" for i in range(len(vectors))]
    run = SimpleNamespace(names=names, vectors=vectors, home=home, run_dir=home, data_dir=home, skipped=[],
                          cache_dir=home / "index", transform=SimpleNamespace(kind="none"))
    (home / "index").mkdir()
    (home / "index" / "meta.json").write_text('{"synthetic": true}')
    return run


def main(argv):
    cfg = settings(globals(), argv)
    vectors = spectrum_vectors(cfg["IMAGES"], cfg["DIM"], cfg["SPECTRUM"], cfg["SEED"])
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_hunt-") as home:
        run = synthetic_run(Path(home), vectors)
        names = run.names
        explorer = Explorer(run, ExploreSettings(shown=cfg["SHOWN"], thumb_px=1, max_upload_mb=1, sheet_columns=1,
                                                 sheet_inches=1.0, exact_limit=cfg["EXACT_LIMIT"], index=IndexSettings()))
        rng = np.random.default_rng(cfg["SEED"] + 1)
        marked = rng.choice(cfg["IMAGES"], cfg["MARKS"], replace=False)
        start = time.perf_counter()
        explorer.mark(names[marked[0]], "yes")
        first = time.perf_counter() - start
        times = []
        for i, row in enumerate(marked[1:], 1):
            start = time.perf_counter()
            explorer.mark(names[row], "yes" if i % 2 == 0 else "no")
            if i >= cfg["MARKS"] - cfg["REPEATS"]:
                times.append(1000 * (time.perf_counter() - start))
    print(f"{cfg['IMAGES']:,} vectors of {cfg['DIM']}, graph from "
          f"{'exact search' if cfg['IMAGES'] <= cfg['EXACT_LIMIT'] else 'the FAISS index'}, {cfg['SHOWN']} shown")
    print(f"  first mark (builds the neighbour graph once): {first:.1f} s")
    print(f"  ms per refresh (median / slowest of {len(times)}): {statistics.median(times):.1f} / {max(times):.1f}")


if __name__ == "__main__":
    run_main(main)
