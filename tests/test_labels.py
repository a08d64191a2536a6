"""Labels files: OATH's layout as is, column errors, unmatched ids, merged classes."""

import logging

import pytest

from spacessl.errors import UserError
from spacessl.labels import match_labels, read_labels

OATH = """# OATH classifications (comment header as in the original file)
# columns: class2, class6, picNum, picType, rotAng
class2,class6,picNum,picType,rotAng
0,2,1,discrete,334
1,5,42,noaurora,12
0,0,5824,arc,7
"""


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_oath_layout_works_as_is(tmp_path):
    labels = read_labels(write(tmp_path, OATH))
    assert labels.id.tolist() == ["1", "42", "5824"] and labels.label.tolist() == ["2", "5", "0"]
    files = [f"{n:05d}.png" for n in range(1, 5825)]
    rows, classes = match_labels(labels, files, "labels.csv")
    assert [files[i] for i in rows] == ["00001.png", "00042.png", "05824.png"]
    assert classes.tolist() == ["2", "5", "0"]
    assert read_labels(write(tmp_path, OATH), class_column="class2").label.tolist() == ["0", "1", "0"]


def test_ids_by_path_name_or_stem(tmp_path):
    path = write(tmp_path, "filename,class\nsub/a.png,x\nb.jpg,y\nc,z\n")
    rows, classes = match_labels(read_labels(path), ["b.jpg", "c.tif", "sub/a.png"], "labels.csv")
    assert rows.tolist() == [2, 0, 1] and classes.tolist() == ["x", "y", "z"]


def test_missing_columns_name_the_columns_there_are(tmp_path):
    path = write(tmp_path, "image,kind\na.png,x\n")
    with pytest.raises(UserError, match=r"no id a column named one of filename.*its columns are image, kind"):
        read_labels(path)
    with pytest.raises(UserError, match=r"has no class column 'morphology'"):
        read_labels(path, id_column="image", class_column="morphology")


def test_missing_labels_file(tmp_path):
    with pytest.raises(UserError, match="labels file .*nope.csv not found"):
        read_labels(tmp_path / "nope.csv")


def test_unmatched_ids_are_reported_and_skipped(tmp_path, caplog):
    labels = read_labels(write(tmp_path, "filename,class\na.png,x\nghost.png,y\nb.png,y\n"))
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        rows, _ = match_labels(labels, ["a.png", "b.png"], "labels.csv")
    assert rows.tolist() == [0, 1]
    assert "1 of 3 ids in labels.csv match no image (e.g. ghost.png); going on with the other 2" in caplog.text


def test_no_matching_id_is_an_error(tmp_path):
    labels = read_labels(write(tmp_path, "filename,class\nx.png,a\n"))
    with pytest.raises(UserError, match="none of the 1 ids .* names one of the 2 images"):
        match_labels(labels, ["a.png", "b.png"], "labels.csv")


def test_merged_classes_and_repeated_ids(tmp_path, caplog):
    path = write(tmp_path, "filename,class\na,1\nb,2\nc,0\na,0\n")
    with caplog.at_level(logging.WARNING, logger="spacessl"):
        labels = read_labels(path, merge="1+2")
    assert labels.label.tolist() == ["1+2", "1+2", "0"]
    assert "1 repeated ids" in caplog.text
