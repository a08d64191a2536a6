"""The explorer behind SSL_Explore.py: a local web app over a run's cached embeddings.

Pages (one HTML file, explore.html, plain JavaScript): a map of the archive (the run's newest
SSL_Map coordinates, points on a canvas, a thumbnail on hover), a query view (by name, by a
click on the map, or by an uploaded image embedded on the fly) and a hunt view: mark images
"yes" or "no" and the archive is ranked again from all marks (hunt.py), unmarked images first.

Marks live in <run>/explore/marks.csv (written atomically after every mark, under one lock, so
two browser tabs marking at once lose nothing), the current ranking in ranking.csv beside it
(written with each ranking; one ranking answers every mark that arrived while the one before was
computed); they are read back when the explorer starts again. Thumbnails are made once from the
images and cached in <run>/explore/thumbs/; the full images are never sent. Exports go to
<run>/explore/exports/hunt-<time>/: config.json, ranking.csv and contact_sheet.png.
"""

import base64
import hashlib
import io
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import uvicorn
from sklearn.decomposition import PCA
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .errors import UserError
from .files import atomic_path
from .images import UNREADABLE_ERRORS, from_stored, read_stored, sniffed_suffix, thumbnail
from .index import IndexSettings
from .maps import latest_map, unit_square
from .queries import COLUMNS, grid_figure, hunt_graph, hunt_neighbours, neighbours, resolve_query
from .runs import result_dir

PAGE = Path(__file__).with_name("explore.html")
MARKS = ("yes", "no")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STARTUP_WAIT_S = 0.05  # polling interval while a test waits for the server to start


def ranking_table(rows: list) -> pd.DataFrame:
    """The hunt's shown rows as a CSV table, with the columns of SSL_Evaluate.py's neighbours.csv."""
    return pd.DataFrame(dict(zip(COLUMNS, (range(1, len(rows) + 1), [r["filename"] for r in rows],
                                           [r["distance"] for r in rows]))))


@dataclass(frozen=True)
class ExploreSettings:
    """What the explorer shows and allows (SSL_Explore.py's settings of the same names)."""
    shown: int             # ranked images per page
    thumb_px: int          # px side of a thumbnail
    max_upload_mb: int     # largest upload accepted
    sheet_columns: int     # exported contact sheet: panels per row
    sheet_inches: float    # exported contact sheet: width of one panel
    exact_limit: int       # up to this many images exact search, above it the index
    index: IndexSettings


class Explorer:
    """The state behind the app: an opened run (runs.OpenRun), its marks and map."""

    def __init__(self, run, settings: ExploreSettings):
        self.run, self.settings = run, settings
        self.folder = run.home / "explore"
        self.index_of = {name: i for i, name in enumerate(run.names)}
        self.lock = threading.Lock()        # the marks and marks.csv
        self.rank_lock = threading.Lock()   # one ranking computed at a time, and ranking.csv
        self.model_lock = threading.Lock()  # the model embeds one upload at a time
        self.marks = self._read_marks()
        self.generation = 0                 # changes made to the marks so far
        self.ranked = (-1, None)            # (generation, answer) of the newest ranking
        self.graph = None  # the hunt's neighbour graph (hunt.py)
        self.coords, self.map_source = self._map()

    def _read_marks(self) -> dict:
        path = self.folder / "marks.csv"
        if not path.is_file():
            return {}
        try:
            table = pd.read_csv(path, keep_default_na=False, dtype=str)
            marks = dict(zip(table["filename"], table["mark"]))
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"{path} cannot be read ({err}); fix it, or move it away to start without marks") from None
        wrong = sorted({mark for mark in marks.values() if mark not in MARKS})
        if wrong:
            raise UserError(f"{path}: marks must be {' or '.join(MARKS)}, found {', '.join(wrong)}; fix the file")
        return marks

    def _map(self):
        coords = latest_map(self.run.home, self.run.names)
        if coords is not None:
            return unit_square(coords), "the run's newest SSL_Map map"
        if len(self.run.names) < 2:
            return np.zeros((len(self.run.names), 2)), "one image: no map"
        projected = PCA(n_components=2, random_state=0).fit_transform(np.asarray(self.run.vectors, dtype=np.float32))
        return unit_square(projected), ("the first two principal components: no SSL_Map map of these images yet "
                                        f"(python SSL_Map.py --RUN={self.run.run_dir} makes one)")

    def missing(self, marks=None) -> list:
        """Marked images that are no longer in the run's images (kept in marks.csv, left out of ranking)."""
        return sorted(name for name in (self.marks if marks is None else marks) if name not in self.index_of)

    def row_of(self, name: str) -> int:
        try:
            found = resolve_query(name, self.run.data_dir, self.index_of, self.run.skipped)
        except UserError as err:
            raise LookupError(str(err)) from None
        if not isinstance(found, int):
            raise LookupError(f"{name!r} is a file outside the run's {len(self.index_of)} images; upload it to search with it")
        return found

    def table(self, direction: np.ndarray, k: int, exclude) -> list:
        found = neighbours(self.run, direction, min(k, len(self.index_of) - len(set(exclude))), exclude,
                           self.settings.exact_limit, self.settings.index)
        return [{"index": self.index_of[name], "filename": name, "distance": float(distance)}
                for _, name, distance in found.itertuples(index=False)]

    def search_name(self, name: str, k: int) -> dict:
        """The neighbours of an image of the run, and its row (the page shows it as the query)."""
        row = self.row_of(name)
        return {"rows": self.table(np.asarray(self.run.vectors[row], dtype=np.float64), k, [row]), "query_index": row}

    def search_upload(self, data: bytes, k: int) -> dict:
        """Neighbours of an uploaded file, read by the same code as a query file on disk
        (images.read_stored: pictures, 16-bit TIFF, FITS, .npy, PGM)."""
        with tempfile.TemporaryDirectory(prefix="spacessl-upload-") as folder:
            path = Path(folder) / f"upload{sniffed_suffix(data)}"
            path.write_bytes(data)
            hp = self.run.model.hparams
            try:
                stored = read_stored(path)
                image = from_stored(stored, hp.in_channels, hp.stretch)
            except UNREADABLE_ERRORS as err:
                raise ValueError(f"the upload is not an image that can be read ({err}); send a picture "
                                 f"(PNG, JPEG, TIFF), a FITS, .npy or PGM file") from None
        with self.model_lock:
            vector = self.run.embed(stored)  # as a query file on disk is embedded (embeddings.embed_image)
        picture = thumbnail(image, hp.in_channels, hp.stretch, self.settings.thumb_px)
        shown = io.BytesIO()
        picture.save(shown, format="PNG")
        return {"rows": self.table(vector, k, []),
                "query_thumb": "data:image/png;base64," + base64.b64encode(shown.getvalue()).decode()}

    def current(self) -> dict:
        """The hunt's ranking from every mark made so far."""
        with self.lock:
            wanted = self.generation
        return self.ranking_since(wanted)

    def ranking_since(self, wanted: int) -> dict:
        """A ranking from the marks as they were after change `wanted`, or later: clicks that
        queue while one ranking is computed are all answered by the next (a refresh takes 0.3 s
        at 100,000 images, bench/hunt_refresh.py; one each would keep the last click waiting for
        every other). ranking.csv is written with each."""
        with self.rank_lock:
            if self.ranked[0] >= wanted:
                return self.ranked[1]
            with self.lock:
                marks, generation = dict(self.marks), self.generation
            state = self.ranking(marks)
            with atomic_path(self.folder / "ranking.csv") as tmp:
                ranking_table(state["rows"]).to_csv(tmp, index=False)
            self.ranked = (generation, state)
            return state

    def ranking(self, marks: dict) -> dict:
        """The hunt's ranking from these marks: method, rows (unmarked only), the marks."""
        yes = [self.index_of[n] for n, m in marks.items() if m == "yes" and n in self.index_of]
        no = [self.index_of[n] for n, m in marks.items() if m == "no" and n in self.index_of]
        state = {"marks": marks, "missing": self.missing(marks), "rows": [], "method": ""}
        if not yes:
            state["method"] = "mark at least one image 'yes' to rank the archive"
            return state
        if self.graph is None:  # built (or read from its cache) at the first ranking, not at start-up
            self.graph = hunt_graph(self.run, self.settings.exact_limit, self.settings.index)
        found, how = hunt_neighbours(self.run, self.graph, yes, no, self.settings.shown, yes + no)
        state["method"] = how
        state["rows"] = [{"index": self.index_of[name], "filename": name, "distance": float(distance)}
                         for _, name, distance in found.itertuples(index=False)]
        return state

    def mark(self, name: str, mark: str) -> dict:
        if mark not in MARKS + ("clear",):
            raise ValueError(f"mark {mark!r}: give yes, no or clear")
        if mark != "clear":
            name = self.run.names[self.row_of(name)]
        with self.lock:
            if mark == "clear":
                self.marks.pop(name, None)
            else:
                self.marks[name] = mark
            with atomic_path(self.folder / "marks.csv") as tmp:
                pd.DataFrame({"filename": list(self.marks), "mark": list(self.marks.values())},
                             columns=["filename", "mark"]).to_csv(tmp, index=False)
            self.generation += 1
            wanted = self.generation
        return self.ranking_since(wanted)

    def thumbnail(self, index: int) -> Path:
        name = self.run.names[index]
        path = self.folder / "thumbs" / f"{hashlib.sha1(name.encode()).hexdigest()[:20]}.png"
        if not path.is_file():
            hp = self.run.model.hparams
            picture = thumbnail(self.run.data_dir / name, hp.in_channels, hp.stretch, self.settings.thumb_px)
            with atomic_path(path) as tmp:
                picture.save(tmp, format="PNG")
        return path

    def export(self, n: int) -> dict:
        state = self.current()
        rows = state["rows"][:n]
        if not rows:
            raise ValueError("nothing to export yet: mark at least one image 'yes'")
        settings = {**asdict(self.settings), "index": asdict(self.settings.index), "n": n}
        with result_dir(self.run, "explore/exports", "hunt", settings, method=state["method"],
                        marks=state["marks"]) as out:
            with atomic_path(out.path / "ranking.csv") as tmp:
                ranking_table(rows).to_csv(tmp, index=False)
            panels = [(self.run.data_dir / r["filename"], f"#{rank}  d={r['distance']:.3f}")
                      for rank, r in enumerate(rows, 1)]
            hp = self.run.model.hparams
            figure = grid_figure(panels, hp.in_channels, hp.stretch, self.settings.sheet_columns,
                                 self.settings.sheet_inches)
            with atomic_path(out.path / "contact_sheet.png") as tmp:
                figure.savefig(tmp, format="png")
        return {"folder": str(out.path), "ranking": str(out.path / "ranking.csv"),
                "sheet": str(out.path / "contact_sheet.png"), "method": state["method"], "count": len(rows)}


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def make_app(explorer: Explorer) -> Starlette:
    settings = explorer.settings

    def count(request, name, default):
        try:
            value = int(request.query_params.get(name, default))
        except ValueError:
            raise ValueError(f"{name} must be a whole number") from None
        if value < 1:
            raise ValueError(f"{name} must be at least 1")
        return value

    def answer(work):
        """Run `work`; a bad request becomes a JSON error with a one-line message."""
        try:
            return JSONResponse(work())
        except LookupError as err:
            return error(str(err.args[0]), 404)
        except (ValueError, UserError) as err:
            return error(str(err), 400)

    def page(request):
        return FileResponse(PAGE, media_type="text/html")

    def info(request):
        run = explorer.run
        with explorer.lock:
            missing = explorer.missing()
        return JSONResponse({"run": str(run.run_dir), "data_dir": str(run.data_dir), "images": len(run.names),
                             "map": explorer.map_source, "shown": settings.shown, "missing": missing})

    def map_points(request):
        return JSONResponse({"x": explorer.coords[:, 0].round(5).tolist(), "y": explorer.coords[:, 1].round(5).tolist(),
                             "names": explorer.run.names})

    def thumb(request):
        index = request.path_params["index"]
        if not 0 <= index < len(explorer.run.names):
            return error(f"no image number {index}: the run has {len(explorer.run.names)}", 404)
        try:
            return FileResponse(explorer.thumbnail(index), media_type="image/png")
        except UNREADABLE_ERRORS as err:
            return error(f"{explorer.run.names[index]} cannot be read ({err})", 410)

    def search(request):
        return answer(lambda: explorer.search_name(request.query_params.get("name", ""),
                                                   count(request, "k", settings.shown)))

    async def upload(request: Request):
        # The whole body is read (what is beyond the limit is dropped, not kept) before the answer:
        # a server that answers while the client still sends breaks the client's pipe.
        limit, received, chunks = settings.max_upload_mb * 2 ** 20, 0, []
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                chunks.append(chunk)
        if received > limit:
            return error(f"the upload is larger than {settings.max_upload_mb} MB (MAX_UPLOAD_MB)", 413)
        if not received:
            return error("the upload is empty: choose an image file", 400)
        data = b"".join(chunks)
        # The work goes to a worker thread, as Starlette does for plain endpoints: done on the event
        # loop it would stall every other request until it ends (bench/explore_load.py found it).
        return await run_in_threadpool(answer, lambda: explorer.search_upload(data, count(request, "k", settings.shown)))

    def hunt(request):
        return answer(explorer.current)

    async def mark(request: Request):
        try:
            body = await request.json()
            name, kind = str(body["filename"]), str(body["mark"])
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            return error('send JSON {"filename": ..., "mark": "yes" | "no" | "clear"}', 400)
        return await run_in_threadpool(answer, lambda: explorer.mark(name, kind))

    def export(request):
        return answer(lambda: explorer.export(count(request, "n", settings.shown)))

    return Starlette(routes=[
        Route("/", page), Route("/api/info", info), Route("/api/map", map_points),
        Route("/api/thumb/{index:int}", thumb), Route("/api/search", search),
        Route("/api/search_image", upload, methods=["POST"]), Route("/api/hunt", hunt),
        Route("/api/mark", mark, methods=["POST"]), Route("/api/export", export, methods=["POST"]),
    ])


def check_address(host: str, port: int, allow_remote: bool) -> None:
    """Refuse to serve beyond this machine unless asked, and a port that is taken."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise UserError(f"--HOST={host} would let other machines see the archive and its marks (there is no "
                        f"login); pass --ALLOW_REMOTE=True as well if that is meant")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --PORT") from None


def server(app, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))


def serve_in_thread(app, host: str, port: int):
    """(server, thread) serving in the background until server.should_exit is set (tests)."""
    background = server(app, host, port)
    thread = threading.Thread(target=background.run, daemon=True)
    thread.start()
    while not background.started and thread.is_alive():
        time.sleep(STARTUP_WAIT_S)
    return background, thread
