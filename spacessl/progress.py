"""Progress of long steps (embedding, decoding, maps, index and graph builds): tqdm's bar with its
time estimate on a terminal, nothing when the output goes to a file or a pipe (a batch job's log
stays readable), so a step of hours on a large archive is never silent."""

from tqdm.auto import tqdm


def progress(iterable=None, total=None, desc: str = "", unit: str = "images"):
    """An iterable (or, without one, a bar to update by hand) showing progress on a terminal."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True,
                unit_scale=True)
