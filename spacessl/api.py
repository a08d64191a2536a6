"""The notebook API: the same code as SSL_Evaluate.py, returning tables and figures.

    from spacessl.api import open_run
    run = open_run("checkpoints/demo-20261127-120000")   # embeds the training images once (cached)
    table = run.search("587722983360102542.jpg", k=10)    # a pandas DataFrame: rank, filename, cosine_distance, time
    run.show(table)                                       # the neighbour grid, drawn inline in Jupyter
    run.search(["a.png", "b.png"]); run.search(np.load("frame.npy")); run.search(Image.open("new.png"))
    run.search(["a.png", "b.png"], not_like=["c.png", "d.png"])  # more like these, not like those

Works from any folder once the package is installed (`pip install -e .` in the clone; make test
and make demo do it).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .queries import (grid_figure, hunt_graph, hunt_neighbours, neighbour_panels, neighbours, resolve_query,
                      with_times)
from .runs import OpenRun
from .runs import open_run as open_cached_run
from .hunt import query_vector

GRID_COLUMNS = 6    # panels per row of Run.show's grid
PANEL_INCHES = 2.2  # width of one panel


@dataclass
class Run:
    """A trained run with the embeddings of its image folder; see the module docstring."""
    opened: OpenRun
    _graph: object = field(default=None, repr=False)  # the hunt's neighbour graph, built at the first not_like

    @property
    def names(self) -> list:
        """Image files (relative to data_dir), in the order of the rows of `vectors`."""
        return self.opened.names

    @property
    def vectors(self) -> np.ndarray:
        """(n images, width) unit search vectors: the embeddings after the run's post-processing
        (whitened or centred, postprocess.py), what every search ranks by; inner products are
        cosine similarities."""
        return self.opened.vectors

    @property
    def raw_embeddings(self) -> np.ndarray:
        """(n images, width) the network's own unit embeddings, before post-processing."""
        return self.opened.embeddings

    @property
    def data_dir(self) -> Path:
        return self.opened.data_dir

    def embeddings(self, post_processed: bool = False) -> pd.DataFrame:
        """A table, one row per image indexed by file name: the network's embeddings
        (raw_embeddings), or with post_processed=True the search vectors (vectors)."""
        rows = self.vectors if post_processed else self.raw_embeddings
        return pd.DataFrame(np.asarray(rows), index=pd.Index(self.names, name="filename"))

    def embed(self, image) -> np.ndarray:
        """The search vector of a file path, a PIL image or an array (H x W or bands x H x W):
        embedded and post-processed exactly like the rows of `vectors`."""
        return self.opened.embed(image)

    def search(self, query, k: int = 10, not_like=()) -> pd.DataFrame:
        """The k images nearest to `query`: a file name in the data set (or a path), a list of them
        (searched by the mean of their embeddings), a PIL image or an array. `not_like`: images
        the results should not be like, given the same ways: then the archive is ranked as a hunt
        from query (yes) and not_like (no) over its neighbour graph (hunt.py). The given images
        themselves are never returned."""
        yes, files = self._resolve(query)
        no, _ = self._resolve(not_like)
        exclude = [m for m in yes + no if isinstance(m, int)]
        if no:
            if self._graph is None:
                self._graph = hunt_graph(self.opened)
            table, _ = hunt_neighbours(self.opened, self._graph, yes, no, k, exclude)
        else:
            table = neighbours(self.opened, query_vector(np.stack([self._vector(m) for m in yes])), k, exclude)
        table = with_times(self.opened, table)  # as SSL_Evaluate.py's neighbours.csv
        table.attrs["query_files"] = files  # for show()
        return table

    def _resolve(self, items):
        """(each image as a row of the data set or, outside it, its search vector; image files)."""
        run = self.opened
        index_of = {name: i for i, name in enumerate(run.names)}
        marks, files = [], []
        for item in items if isinstance(items, (list, tuple)) else [items]:
            found = resolve_query(str(item), run.data_dir, index_of, run.skipped) \
                if isinstance(item, (str, Path)) else item
            if isinstance(found, int):
                marks.append(found)
                files.append(run.data_dir / run.names[found])
            else:
                marks.append(self.embed(found))
                files += [found] if isinstance(found, Path) else []
        return marks, files

    def _vector(self, mark) -> np.ndarray:
        return np.asarray(self.vectors[mark] if isinstance(mark, int) else mark, dtype=np.float64)

    def show(self, table: pd.DataFrame, columns: int = GRID_COLUMNS) -> Figure:
        """The query (when it was a file) and its neighbours as a grid; a Jupyter cell shows it."""
        hp = self.opened.model.hparams
        return grid_figure(neighbour_panels(table.attrs.get("query_files", []), self.data_dir, table),
                           hp.in_channels, hp.stretch, columns, PANEL_INCHES)


def open_run(run: str, checkpoint: str = "best", data_dir: str = "", postprocess: str = "auto",
             output_dir: str = "", device: str = "auto", batch_size: int = 256, num_workers: int = 0) -> Run:
    """Open a run folder written by SSL_Train.py (as SSL_Evaluate.py's RUN, CHECKPOINT, DATA_DIR,
    POSTPROCESS, OUTPUT_DIR, DEVICE): loads the checkpoint and embeds data_dir (default: the training
    images), or reuses the cached embeddings."""
    return Run(open_cached_run(str(run), checkpoint, str(data_dir), postprocess, device, batch_size, num_workers,
                               str(output_dir)))

