"""The hunt: ranking from yes/no marks (exact order on hand-built vectors), the same ranking from
SSL_Evaluate.py --NOT and the notebook API, and the explorer app: its bad input over HTTP, and
the real page in a real headless browser (Playwright driving Debian's chromium)."""

import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_cli
import SSL_Explore
from spacessl.config import OPEN_RUN, keywords, resolve_config
from spacessl.errors import UserError
from spacessl.hunt import Graph, exemplar_scores, hunt_scores, seeds, spread, top_scored


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ring_and_pair():
    """Images 0-7 linked in a ring (each to the one before and after), 8-9 a pair apart, weights 1."""
    rows = np.array([[(i - 1) % 8, (i + 1) % 8] for i in range(8)] + [[9, 9], [8, 8]])
    return Graph(rows, np.ones(rows.shape))


def test_marks_spread_along_the_graph_and_no_marks_push_their_side_down():
    graph, vectors = ring_and_pair(), unit(np.eye(10))
    scores = graph.diffuse(seeds(vectors, [0]))
    # The solution of (I - 0.99 S) f = y, S = D^-1/2 W D^-1/2: on the ring every degree is 2, so S = W / 2.
    ring = np.zeros((8, 8))
    for i in range(8):
        ring[i, (i + 1) % 8] = ring[i, (i - 1) % 8] = 0.5
    np.testing.assert_allclose(scores[:8], np.linalg.solve(np.eye(8) - 0.99 * ring, np.eye(8)[0]), rtol=1e-4)
    # Along the ring the score falls with the steps from the yes image; the pair apart gets none.
    assert scores[1] == pytest.approx(scores[7]) and scores[1] > scores[2] > scores[3] > scores[4] > 0
    assert scores[8] == scores[9] == 0 and top_scored(scores, 9, exclude=[0])[-2:].tolist() == [8, 9]
    scores = graph.diffuse(seeds(vectors, [0]) - seeds(vectors, [4]))
    assert scores[1] > 0 > scores[3] and top_scored(scores, 2, exclude=[0, 4]).tolist() in ([1, 7], [7, 1])


def test_the_exemplar_classifier_finds_what_the_bulk_is_not():
    # 40 images near (0, 1) (the bulk), 4 near (1, 0) (the rare kind), one of them marked yes:
    # against random archive images as negatives the other three come first, from the first mark.
    rng = np.random.default_rng(0)
    bulk = unit(np.c_[rng.normal(0, 0.3, 40), np.ones(40)])
    rare = unit(np.c_[np.ones(4), rng.normal(0, 0.3, 4)])
    vectors = np.concatenate([rare, bulk])
    assert set(top_scored(exemplar_scores(vectors, [0], []), 3, exclude=[0]).tolist()) == {1, 2, 3}


def test_the_hunt_sums_both_scores_each_over_its_spread():
    graph, vectors = ring_and_pair(), unit(np.random.default_rng(1).normal(size=(10, 4)))
    scores, how = hunt_scores(vectors, graph, [0], [4])
    assert how == "diffusion + exemplar classifier from 1 yes / 1 no"
    expected = spread(graph.diffuse(seeds(vectors, [0]) - seeds(vectors, [4]))) + \
        spread(exemplar_scores(vectors, [0], [4]))
    np.testing.assert_allclose(scores, expected)
    assert hunt_scores(vectors, graph, [0, 1], [])[1] == "diffusion + exemplar classifier from 2 yes"
    with pytest.raises(UserError, match="mark at least one image as 'yes'"):
        hunt_scores(vectors, graph, [], [4])


def test_an_image_outside_the_archive_starts_from_its_nearest_rows():
    vectors = unit([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]])
    y = seeds(vectors, [np.array([1.0, -0.05]) / np.linalg.norm([1.0, -0.05]), 2])
    assert y.sum() == pytest.approx(1) and y[2] == pytest.approx(0.5)  # a row of the archive: itself
    assert y[0] > y[1] > 0 and y[3] == 0  # the outside image: its nearest rows, by similarity cubed (none if negative)


@pytest.fixture
def embedded_run(trained_run, tmp_path):
    """A copy of the trained run with its images embedded (SSL_Evaluate.py, cached)."""
    import SSL_Evaluate

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False"]) == 0
    return run


def test_not_like_ranks_the_same_in_the_script_and_the_notebook(embedded_run, capsys):
    import SSL_Evaluate
    from spacessl.api import open_run

    names = open_run(embedded_run).names
    yes, no = names[:2], names[2:4]
    argv = [f"--RUN={embedded_run}", f"--QUERY={','.join(yes)}", f"--NOT={','.join(no)}", "--TOP_K=6",
            "--NUM_WORKERS=0", "--REPORT=False"]
    assert run_cli(SSL_Evaluate, argv) == 0
    assert "ranked by diffusion + exemplar classifier from 2 yes / 2 no" in capsys.readouterr().out
    written = pd.read_csv(sorted((embedded_run / "queries").glob("*/neighbours.csv"))[-1])
    table = open_run(embedded_run).search(yes, k=6, not_like=no)
    assert written["filename"].tolist() == table["filename"].tolist()
    assert not set(table["filename"]) & set(yes + no)
    plain = open_run(embedded_run).search(yes, k=6)
    assert plain["filename"].tolist() != table["filename"].tolist() or set(no) & set(plain["filename"])
    assert run_cli(SSL_Evaluate, [f"--RUN={embedded_run}", f"--NOT={no[0]}"]) == 2
    assert "--NOT needs --QUERY" in capsys.readouterr().err


def explore_settings(run, *extra):
    return resolve_config(vars(SSL_Explore), [f"--RUN={run}", "--SHOWN=6", "--THUMB_PX=32", *extra])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(run, *extra):
    """(base URL, server, explorer) of an explorer on `run`, serving in a thread."""
    from spacessl.explore import Explorer, make_app, serve_in_thread
    from spacessl.runs import open_run

    cfg = explore_settings(run, *extra)
    explorer = Explorer(open_run(**keywords(cfg, *OPEN_RUN)), SSL_Explore.explore_settings(cfg))
    port = free_port()
    server, _ = serve_in_thread(make_app(explorer), "127.0.0.1", port)
    assert server.started
    return f"http://127.0.0.1:{port}", server, explorer


def call(url, data=None, method=None, headers=None):
    """(status, parsed JSON) of one request."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def mark(base, name, kind):
    return call(f"{base}/api/mark", json.dumps({"filename": name, "mark": kind}).encode(), "POST",
                {"Content-Type": "application/json"})


def test_explorer_refuses_runs_without_embeddings_and_unsafe_addresses(trained_run, tmp_path, capsys):
    import SSL_Explore

    run = tmp_path / "fresh"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("embeddings"))
    assert run_cli(SSL_Explore, [f"--RUN={run}"]) == 2
    err = capsys.readouterr().err
    assert "has no embeddings" in err and f"python SSL_Evaluate.py --RUN={run}" in err and "Traceback" not in err
    assert run_cli(SSL_Explore, [f"--RUN={run}", "--HOST=0.0.0.0"]) == 2
    assert "--ALLOW_REMOTE=True" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert run_cli(SSL_Explore, [f"--RUN={run}", f"--PORT={taken.getsockname()[1]}"]) == 2
    assert "pass another --PORT" in capsys.readouterr().err
    assert run_cli(SSL_Explore, [f"--RUN={run}", "--INDEX_KIND=annoy"]) == 2
    assert "--INDEX_KIND=annoy: choose auto, hnsw" in capsys.readouterr().err


def test_explorer_searches_with_the_index_kind_asked_for(embedded_run):
    from spacessl.explore import Explorer
    from spacessl.runs import open_run

    def search(*extra):
        cfg = explore_settings(embedded_run, *extra)
        explorer = Explorer(open_run(**keywords(cfg, *OPEN_RUN)), SSL_Explore.explore_settings(cfg))
        return [row["filename"] for row in explorer.search_name(explorer.run.names[0], 5)["rows"]]

    exact = search()
    # 24 images above an EXACT_LIMIT of 10: an IVF index of 4 cells, all probed, equals exact search.
    assert search("--EXACT_LIMIT=10", "--INDEX_KIND=ivf-flat", "--NLIST=4", "--NPROBE=4") == exact
    built = json.loads(next(embedded_run.glob("embeddings/*/index.json")).read_text())
    assert built["info"]["type"] == "ivf-flat" and built["info"]["nprobe"] == 4


@pytest.mark.parametrize("kind", ["fits", "npy", "png16", "pgm"])
def test_an_upload_is_read_as_the_same_file_on_disk_is(embedded_run, tmp_path, kind):
    # One reader everywhere: the explorer's upload, SSL_Evaluate.py's query file and the notebook
    # API give the same neighbours for a FITS, .npy, 16-bit PNG or PGM file.
    from astropy.io import fits

    import SSL_Evaluate
    from spacessl.api import open_run as api_open_run
    from spacessl.explore import Explorer
    from spacessl.runs import open_run

    rng = np.random.default_rng(5)
    if kind == "fits":
        path = tmp_path / "query.fits"
        fits.PrimaryHDU(rng.random((3, 80, 80)).astype(np.float32)).writeto(path)
    elif kind == "npy":
        path = tmp_path / "query.npy"
        np.save(path, rng.random((3, 80, 80)).astype(np.float32))
    elif kind == "png16":
        path = tmp_path / "query.png"
        Image.fromarray(rng.integers(0, 65535, (80, 80), dtype=np.uint16)).save(path)
    else:
        path = tmp_path / "query.pgm"
        pixels = rng.integers(0, 4095, (80, 80), dtype=np.uint16).astype(">u2")
        path.write_bytes(b"P5\n80 80\n4095\n" + pixels.tobytes())
    cfg = explore_settings(embedded_run)
    explorer = Explorer(open_run(**keywords(cfg, *OPEN_RUN)), SSL_Explore.explore_settings(cfg))
    answer = explorer.search_upload(path.read_bytes(), 5)
    assert answer["query_thumb"].startswith("data:image/png;base64,")
    uploaded = [row["filename"] for row in answer["rows"]]
    assert api_open_run(embedded_run).search(str(path), k=5)["filename"].tolist() == uploaded
    assert run_cli(SSL_Evaluate, [f"--RUN={embedded_run}", f"--QUERY={path}", "--TOP_K=5", "--NUM_WORKERS=0",
                                  "--REPORT=False"]) == 0
    written = pd.read_csv(sorted((embedded_run / "queries").glob("query-*/neighbours.csv"))[-1])
    assert written["filename"].tolist() == uploaded


def test_bad_requests_get_one_line_answers_and_no_mark_is_lost(embedded_run):
    explore = embedded_run / "explore"
    explore.mkdir()
    pd.DataFrame({"filename": ["gone.jpg"], "mark": ["yes"]}).to_csv(explore / "marks.csv", index=False)
    base, server, explorer = start(embedded_run, "--MAX_UPLOAD_MB=1")
    try:
        names = explorer.run.names
        status, body = call(f"{base}/api/hunt")
        assert status == 200 and body["missing"] == ["gone.jpg"] and body["rows"] == []
        assert call(f"{base}/api/search?name=nothing.png")[0] == 404
        status, body = call(f"{base}/api/search?name={names[0]}&k=0")
        assert status == 400 and body["error"] == "k must be at least 1"
        status, body = call(f"{base}/api/search_image", b"plain text, not an image", "POST")
        assert status == 400 and body["error"].startswith("the upload is not an image that can be read")
        status, body = call(f"{base}/api/search_image", bytes(2 * 2 ** 20), "POST")
        assert status == 413 and "MAX_UPLOAD_MB" in body["error"]
        assert call(f"{base}/api/search_image", b"", "POST")[0] == 400
        bomb = io.BytesIO()
        Image.new("1", (16000, 16000)).save(bomb, format="PNG")  # 256 Mpx in a few kB: PIL's bomb guard refuses it
        status, body = call(f"{base}/api/search_image", bomb.getvalue(), "POST")
        assert status == 400 and "decompression bomb" in body["error"]
        with open(explorer.run.data_dir / names[0], "rb") as image:
            status, body = call(f"{base}/api/search_image", image.read(), "POST")
        assert status == 200 and body["rows"][0]["filename"] == names[0]  # an image finds itself first
        assert call(f"{base}/api/thumb/{len(names)}")[0] == 404
        assert mark(base, names[0], "maybe")[0] == 400
        assert mark(base, "nothing.png", "yes")[0] == 404
        assert call(f"{base}/api/mark", b"{not json", "POST")[0] == 400
        assert call(f"{base}/api/export", None, "POST")[0] == 400  # nothing ranked yet

        # Two "tabs" marking at once: every mark arrives, none is lost.
        def marker(half):
            for name in half:
                assert mark(base, name, "yes" if names.index(name) % 2 else "no")[0] == 200
        tabs = [threading.Thread(target=marker, args=(names[i:20:2],)) for i in (0, 1)]
        for tab in tabs:
            tab.start()
        for tab in tabs:
            tab.join()
        saved = pd.read_csv(explore / "marks.csv", keep_default_na=False)
        assert sorted(saved["filename"]) == sorted(names[:20] + ["gone.jpg"])
        status, body = call(f"{base}/api/hunt")
        assert body["method"] == "diffusion + exemplar classifier from 10 yes / 10 no"
        assert body["missing"] == ["gone.jpg"]
        assert len(body["rows"]) == 4 and not {r["filename"] for r in body["rows"]} & set(names[:20])
    finally:
        server.should_exit = True


def test_hunting_in_a_real_browser(embedded_run):
    """Open the map, query by name, mark 3 yes and 2 no, see the ranking change, restart and find
    the marks, export."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    base, server, explorer = start(embedded_run)
    names = explorer.run.names
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(base)
            expect(page.locator("body")).to_have_attribute("data-ready", "yes", timeout=30000)
            assert page.locator("#map").bounding_box()["width"] > 0
            expect(page.locator("#mapsource")).to_contain_text("principal components")  # no SSL_Map map yet
            page.click('button[data-view="queryview"]')
            page.fill("#name", names[0])
            page.click("#search")
            results = page.locator("#queryresults .cell")
            expect(results).to_have_count(6)
            expect(page.locator("#queryname")).to_have_text(f"query: {names[0]}")  # the query is shown
            assert page.locator("#queryimg").get_attribute("src") == "/api/thumb/0"
            shown = [results.nth(i).get_attribute("data-filename") for i in range(6)]
            assert names[0] not in shown
            for name in shown[:3]:
                page.locator(f'#queryresults .cell[data-filename="{name}"] .mark-yes').click()
                expect(page.locator("#message")).to_contain_text(f"marked {name} yes")
            page.click('button[data-view="huntview"]')
            expect(page.locator("#method")).to_have_text("diffusion + exemplar classifier from 3 yes")
            ranked = page.locator("#huntresults .cell")
            expect(ranked).to_have_count(6)
            before = [ranked.nth(i).get_attribute("data-filename") for i in range(6)]
            rejected = []
            for _ in range(2):  # each "no" ranks the archive again: reject the first shown each time
                name = ranked.nth(0).get_attribute("data-filename")
                page.locator(f'#huntresults .cell[data-filename="{name}"] .mark-no').click()
                expect(page.locator("#message")).to_contain_text(f"marked {name} no")
                rejected.append(name)
            expect(page.locator("#method")).to_have_text("diffusion + exemplar classifier from 3 yes / 2 no")
            expect(page.locator("#counts")).to_have_text("3 yes, 2 no")
            after = [ranked.nth(i).get_attribute("data-filename") for i in range(ranked.count())]
            assert rejected[0] == before[0] and after != before and not set(after) & set(rejected + shown[:3])
            server.should_exit = True
            base, server, explorer = start(embedded_run)  # a new explorer process reads the marks back
            page.goto(base)
            expect(page.locator("body")).to_have_attribute("data-ready", "yes", timeout=30000)
            page.click('button[data-view="huntview"]')
            expect(page.locator("#counts")).to_have_text("3 yes, 2 no")
            expect(page.locator("#marked .cell")).to_have_count(5)
            page.fill("#exportn", "4")
            page.click("#export")
            expect(page.locator("#exported")).to_contain_text("contact_sheet.png")
            if os.environ.get("SPACESSL_SCREENSHOT"):
                page.screenshot(path=os.environ["SPACESSL_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
            server.should_exit = True
    export = sorted((embedded_run / "explore" / "exports").iterdir())[-1]
    table = pd.read_csv(export / "ranking.csv")
    assert table.columns.tolist() == ["rank", "filename", "cosine_distance"]  # as SSL_Evaluate.py's neighbours.csv
    assert table["filename"].tolist() == after[:4] and (export / "contact_sheet.png").stat().st_size > 0
    assert pd.read_csv(embedded_run / "explore" / "ranking.csv")["filename"].tolist() == after


def test_a_slow_mark_does_not_hold_up_other_requests(embedded_run):
    base, server, explorer = start(embedded_run)
    real, entered = explorer.mark, threading.Event()

    def slow(name, kind):  # a refresh at archive scale (bench/explore_load.py: seconds under load)
        entered.set()
        time.sleep(3)
        return real(name, kind)
    explorer.mark = slow
    try:
        name = explorer.run.names[0]
        marking = threading.Thread(target=mark, args=(base, name, "yes"))
        marking.start()
        assert entered.wait(30)
        started = time.monotonic()
        status, found = call(f"{base}/api/search?name={explorer.run.names[1]}&k=3")
        waited = time.monotonic() - started
        marking.join()
    finally:
        server.should_exit = True
    assert status == 200 and len(found["rows"]) == 3
    assert waited < 2, f"a search waited {waited:.1f} s behind a mark"


def test_marks_that_arrive_together_are_answered_by_one_ranking(embedded_run):
    from spacessl.explore import Explorer
    from spacessl.runs import open_run

    cfg = explore_settings(embedded_run)
    explorer = Explorer(open_run(**keywords(cfg, *OPEN_RUN)), SSL_Explore.explore_settings(cfg))
    real, rankings = explorer.ranking, []

    def slow(marks):  # a refresh at archive scale
        rankings.append(len(marks))
        time.sleep(0.5)
        return real(marks)
    explorer.ranking = slow
    names, answers = explorer.run.names[:8], {}

    def click(name):
        answers[name] = explorer.mark(name, "yes")
    clicks = [threading.Thread(target=click, args=(name,)) for name in names]
    for thread in clicks:
        thread.start()
    for thread in clicks:
        thread.join()
    assert all(answers[name]["marks"].get(name) == "yes" for name in names)  # each answer holds its own click
    assert len(rankings) < len(names) and rankings[-1] == len(names)
    saved = pd.read_csv(explorer.folder / "marks.csv")
    assert sorted(saved["filename"]) == sorted(names)
    shown = pd.read_csv(explorer.folder / "ranking.csv")["filename"].tolist()
    assert shown == [row["filename"] for row in explorer.current()["rows"]] and not set(shown) & set(names)
