"""The explorer under load: CLIENTS browsers marking and searching at once for SECONDS over an
archive of IMAGES cached vectors, on the loopback interface only.

Usage (from the repository root):
    .venv/bin/python bench/explore_load.py                    # 20 clients, 60 s, 100,000 vectors
    .venv/bin/python bench/explore_load.py --IMAGES=10000 --SECONDS=20

The server is the product's (spacessl/explore.make_app under uvicorn, as SSL_Explore.py starts
it) over synthetic vectors with the spread of real embeddings (bench/hunt_refresh.py). The hunt's
neighbour graph is built before the clock starts (once per run in real use, then cached). Each
client owns its own images to mark (so the final mark of each is known), and alternates at random
between POST /api/mark (yes or no; the server answers with the new ranking) and GET /api/search
(the neighbours of a random image); it stops at SECONDS or MAX_REQUESTS. Printed: requests per
second, p50 and p99 latency per kind of request, errors (anything but HTTP 200), and whether
marks.csv holds every client's last mark of every image.
"""

import json
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hunt_refresh import spectrum_vectors, synthetic_run  # noqa: E402
from spacessl.config import run_main, settings  # noqa: E402
from spacessl.explore import Explorer, ExploreSettings, make_app, serve_in_thread  # noqa: E402
from spacessl.index import EXACT_LIMIT, IndexSettings  # noqa: E402

# ---- hyperparameters --------------------------------------------------------------------------
IMAGES = 100000                  # cached vectors in the archive
DIM = 512                        # embedding width (resnet18's)
SPECTRUM = 0.8                   # eigenvalue k of the covariance ~ k^-SPECTRUM (as bench/hunt_refresh.py)
CLIENTS = 20                     # browsers at once
SECONDS = 60.0                   # how long they keep asking
MAX_REQUESTS = 5000              # per client, whichever comes first
MARK_SHARE = 0.5                 # share of requests that are marks (the rest are searches)
SHOWN = 24                       # ranked images per answer (SSL_Explore.py's default)
TIMEOUT_S = 120.0                # a request unanswered this long counts as an error
SEED = 0
# -----------------------------------------------------------------------------------------------


def client(base: str, own: list, names: list, cfg: dict, deadline: float, seed: int, out: dict) -> None:
    rng = random.Random(seed)
    for _ in range(cfg["MAX_REQUESTS"]):
        if time.monotonic() >= deadline:
            return
        if rng.random() < cfg["MARK_SHARE"]:
            kind, name, mark = "mark", rng.choice(own), rng.choice(("yes", "no"))
            request = urllib.request.Request(f"{base}/api/mark", method="POST",
                                             data=json.dumps({"filename": name, "mark": mark}).encode(),
                                             headers={"Content-Type": "application/json"})
        else:
            kind, request = "search", f"{base}/api/search?name={rng.choice(names)}&k={cfg['SHOWN']}"
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=cfg["TIMEOUT_S"]) as answer:
                answer.read()
                ok = answer.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        out[kind].append(1000 * (time.perf_counter() - start))
        if not ok:
            out["errors"] += 1
        elif kind == "mark":
            out["marks"][name] = mark


def percentile(values: list, share: float) -> float:
    return float(np.percentile(values, share)) if values else float("nan")


def main(argv):
    cfg = settings(globals(), argv)
    vectors = spectrum_vectors(cfg["IMAGES"], cfg["DIM"], cfg["SPECTRUM"], cfg["SEED"])
    with tempfile.TemporaryDirectory(dir=ROOT / "checkpoints", prefix=".bench_load-") as home:
        run = synthetic_run(Path(home), vectors)
        explorer = Explorer(run, ExploreSettings(shown=cfg["SHOWN"], thumb_px=1, max_upload_mb=1, sheet_columns=1,
                                                 sheet_inches=1.0, exact_limit=EXACT_LIMIT, index=IndexSettings()))
        start = time.perf_counter()
        explorer.mark(run.names[0], "yes")  # builds the hunt's neighbour graph
        explorer.mark(run.names[0], "clear")
        print(f"{cfg['IMAGES']:,} vectors; neighbour graph built in {time.perf_counter() - start:.1f} s "
              f"(before the clock starts)", flush=True)
        server, thread = serve_in_thread(make_app(explorer), "127.0.0.1", 0)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        results = [{"mark": [], "search": [], "errors": 0, "marks": {}} for _ in range(cfg["CLIENTS"])]
        pools = [run.names[1 + i::cfg["CLIENTS"]][:1000] for i in range(cfg["CLIENTS"])]
        deadline = time.monotonic() + cfg["SECONDS"]
        started = time.perf_counter()
        clients = [threading.Thread(target=client, args=(base, pools[i], run.names, cfg, deadline, cfg["SEED"] + i,
                                                         results[i])) for i in range(cfg["CLIENTS"])]
        for worker in clients:
            worker.start()
        for worker in clients:
            worker.join()
        elapsed = time.perf_counter() - started
        server.should_exit = True
        thread.join()
        saved = pd.read_csv(Path(home) / "explore" / "marks.csv", keep_default_na=False)
        saved = dict(zip(saved["filename"], saved["mark"]))
    expected = {name: mark for result in results for name, mark in result["marks"].items()}
    wrong = sum(saved.get(name) != mark for name, mark in expected.items())
    marks = [ms for r in results for ms in r["mark"]]
    searches = [ms for r in results for ms in r["search"]]
    errors = sum(r["errors"] for r in results)
    total = len(marks) + len(searches)
    print(f"{cfg['CLIENTS']} clients for {elapsed:.1f} s: {total} requests, {total / elapsed:.1f} requests/s, "
          f"{errors} errors")
    for kind, values in (("mark (answers with the new ranking)", marks), ("search", searches)):
        print(f"  {kind}: {len(values)} requests, p50 {percentile(values, 50):.0f} ms, "
              f"p99 {percentile(values, 99):.0f} ms" + (f", mean {statistics.mean(values):.0f} ms" if values else ""))
    print(f"marks.csv: {len(saved)} marks; each client's last mark of each of its {len(expected)} images "
          f"{'all there' if wrong == 0 else f'WRONG OR MISSING for {wrong}'}")


if __name__ == "__main__":
    run_main(main)
