"""Reading a labels CSV and matching its ids to the images of a data folder.

A labels file has one row per image: an id column and a class column. The id may be the
image's path relative to the data folder, its file name, its stem, or a number that matches a
zero-padded numeric stem, so OATH's classifications.csv (picNum 42 -> 00042.png) works as is.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError

log = logging.getLogger("spacessl")

# Tried in order when ID_COLUMN / CLASS_COLUMN are left empty.
ID_COLUMNS = ("filename", "file", "path", "picNum", "OBJID", "id", "name")
CLASS_COLUMNS = ("class", "label", "class6", "CLASS", "class2")
EXAMPLES_SHOWN = 5  # unmatched ids named in the warning


def read_labels(path, id_column: str = "", class_column: str = "", merge: str = "") -> pd.DataFrame:
    """DataFrame with columns id (str) and label (str), one row per distinct id.

    merge: groups of classes to treat as one, "a+b" or "a+b;c+d" (e.g. Galaxy Zoo's clockwise
    and anticlockwise spirals, "1+2").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file {path} not found; pass --LABELS=<csv with an id and a class column>")
    skip = 0  # OATH's classifications.csv starts with '#' comment lines before its header
    with open(path, errors="replace") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            skip += 1
    try:
        table = pd.read_csv(path, skiprows=skip, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"labels file {path} is not a readable CSV ({str(err).splitlines()[0]})") from None
    table.columns = [c.strip() for c in table.columns]
    id_column = id_column or next((c for c in ID_COLUMNS if c in table.columns), "")
    class_column = class_column or next((c for c in CLASS_COLUMNS if c in table.columns), "")
    for kind, name, tried in (("id", id_column, ID_COLUMNS), ("class", class_column, CLASS_COLUMNS)):
        if not name or name not in table.columns:
            wanted = f"column {name!r}" if name else f"a column named one of {', '.join(tried)}"
            raise UserError(f"labels file {path} has no {kind} {wanted}; its columns are "
                            f"{', '.join(table.columns)} (set --{kind.upper()}_COLUMN)")
    labels = pd.DataFrame({"id": table[id_column].str.strip(), "label": table[class_column].str.strip()})
    labels = labels[(labels.id != "") & (labels.label != "")]
    for group in filter(None, merge.split(";")):
        members = [m.strip() for m in group.split("+")]
        labels.loc[labels.label.isin(members), "label"] = "+".join(members)
    duplicated = labels.id.duplicated()
    if duplicated.any():
        log.warning("labels file %s: %d repeated ids, keeping the first row of each", path, duplicated.sum())
    return labels[~duplicated].reset_index(drop=True)


def file_keys(name: str):
    """The ids a label row may use for the image at relative path `name`."""
    stem = Path(name).stem
    keys = {name, Path(name).name, stem}
    if stem.isdigit():
        keys.add(str(int(stem)))  # 00042.png <- picNum 42
    return keys


def match_labels(labels: pd.DataFrame, files: list, source: str):
    """(indices into files, class labels) for the label rows whose id names one of the files.

    Ids that match no image are counted and reported; none matching is an error.
    """
    index = {}
    for i, name in enumerate(files):
        for key in file_keys(name):
            index.setdefault(key, i)
    rows = [(index[key], label) for key, label in zip(labels.id, labels.label) if key in index]
    missing = len(labels) - len(rows)
    if not rows:
        raise UserError(f"none of the {len(labels)} ids in {source} (e.g. "
                        f"{', '.join(labels.id[:EXAMPLES_SHOWN])}) names one of the {len(files)} images; "
                        f"check --DATA_DIR and --ID_COLUMN")
    if missing:
        unmatched = [key for key in labels.id if key not in index][:EXAMPLES_SHOWN]
        log.warning("%d of %d ids in %s match no image (e.g. %s); going on with the other %d",
                    missing, len(labels), source, ", ".join(unmatched), len(rows))
    indices, classes = zip(*rows)
    return np.array(indices), np.array(classes)
