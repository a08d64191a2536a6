"""Archives that grow and jobs that die: an update embeds only the images added or changed, a job
killed part-way (one process or several ranks) continues from its finished batches, and either way
the cache equals one built from scratch."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import GALAXIES, ROOT, copy_images, run_cli

import SSL_Evaluate

CACHE = ("embeddings", "best__data")
# Embedding one image alone or beside others in a batch may round differently in the last bit of
# float32 (the convolution's algorithm follows the batch size), so rebuilt rows are compared closely.
CLOSE = dict(rtol=0, atol=1e-5)
# Runs a script with its shard writer killing its own process (SIGKILL: nothing is tidied up)
# once it has written KILL_AT rows; every rank a launcher starts runs this wrapper too.
KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from spacessl import shards
from spacessl.config import run_main
real = shards.ShardWriter.add
def add(self, vectors, positions):
    real(self, vectors, positions)
    if self.count >= {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
shards.ShardWriter.add = add
import {script} as script
run_main(script.main)
"""


@pytest.fixture
def run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def embed(run, data, *argv):
    return run_cli(SSL_Evaluate, [f"--RUN={run}", f"--DATA_DIR={data}", "--NUM_WORKERS=0", "--BATCH_SIZE=4",
                                  "--POSTPROCESS=none", *argv])


def cache_of(run):
    cache = run.joinpath(*CACHE)
    meta = json.loads((cache / "meta.json").read_text())
    names = pd.read_csv(cache / "filenames.csv")["filename"].tolist()
    return np.load(cache / "embeddings.npy"), names, meta


def from_scratch(trained_run, tmp_path, data, *argv):
    clean = tmp_path / "clean"
    shutil.copytree(trained_run, clean)
    assert embed(clean, data, *argv) == 0
    return cache_of(clean)


def test_added_changed_and_removed_images_are_the_only_work(run, trained_run, tmp_path):
    data = tmp_path / "data"
    names = copy_images(GALAXIES, data, 20)
    assert embed(run, data) == 0
    assert cache_of(run)[2]["last_build"] == {"reused": 0, "resumed": 0, "embedded": 20}
    extra = sorted(p.name for p in GALAXIES.iterdir())[20:23]
    for name in extra:  # a night's new frames
        shutil.copy(GALAXIES / name, data / name)
    shutil.copy(GALAXIES / extra[0], data / names[5])  # a frame reprocessed in place
    (data / names[0]).unlink()
    (data / names[1]).unlink()
    assert embed(run, data) == 0
    vectors, kept, meta = cache_of(run)
    assert meta["last_build"] == {"reused": 17, "resumed": 0, "embedded": 4}
    assert not run.joinpath(*CACHE, "work").exists()
    clean_vectors, clean_names, _ = from_scratch(trained_run, tmp_path, data)
    assert kept == clean_names == sorted(p.name for p in data.iterdir())
    np.testing.assert_allclose(vectors, clean_vectors, **CLOSE)
    assert embed(run, data) == 0 and cache_of(run)[2]["last_build"]["embedded"] == 4  # nothing new: reused


def test_an_unreadable_image_is_not_retried_until_it_changes(run, tmp_path, caplog):
    data = tmp_path / "data"
    copy_images(GALAXIES, data, 6)
    (data / "broken.png").write_bytes(b"not a png")
    assert embed(run, data) == 0
    shutil.copy(sorted(GALAXIES.iterdir())[7], data / "new.jpg")
    assert embed(run, data) == 0
    vectors, kept, meta = cache_of(run)
    assert meta["last_build"]["embedded"] == 1 and "broken.png" not in kept and len(kept) == 7
    shutil.copy(sorted(GALAXIES.iterdir())[8], data / "broken.png")  # repaired
    assert embed(run, data) == 0
    assert cache_of(run)[2]["last_build"]["embedded"] == 1 and "broken.png" in cache_of(run)[1]


def killed(tmp_path, script, kill_at, argv, timeout=300):
    wrapper = tmp_path / f"kill_{script}.py"
    wrapper.write_text(KILLER.format(root=str(ROOT), kill_at=kill_at, script=script))
    return subprocess.run([sys.executable, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_an_embedding_killed_part_way_continues_from_its_finished_batches(run, trained_run, tmp_path):
    data = tmp_path / "data"
    copy_images(GALAXIES, data, 24)
    argv = [f"--RUN={run}", f"--DATA_DIR={data}", "--NUM_WORKERS=0", "--BATCH_SIZE=4", "--POSTPROCESS=none"]
    result = killed(tmp_path, "SSL_Evaluate", 12, argv)
    assert result.returncode == -9, result.stderr[-2000:]
    assert not (run.joinpath(*CACHE) / "meta.json").exists()
    assert embed(run, data) == 0
    vectors, kept, meta = cache_of(run)
    assert meta["last_build"] == {"reused": 0, "resumed": 12, "embedded": 12}
    clean_vectors, clean_names, _ = from_scratch(trained_run, tmp_path, data)
    assert kept == clean_names
    np.testing.assert_allclose(vectors, clean_vectors, **CLOSE)


def shard_rows(work):
    return [json.loads(p.read_text())["rows"] for p in work.glob("*.r*.json")]


def test_a_killed_multi_rank_embedding_continues_with_its_shards(run, trained_run, tmp_path):
    data = tmp_path / "data"
    copy_images(GALAXIES, data, 24)
    argv = [f"--RUN={run}", f"--DATA_DIR={data}", "--NUM_WORKERS=0", "--BATCH_SIZE=2", "--DEVICE=cpu",
            "--DEVICES=2"]
    result = killed(tmp_path, "SSL_Embed", 4, argv)  # each rank dies after 2 of its 6 batches
    assert result.returncode == -9, result.stderr[-2000:]
    work = run.joinpath(*CACHE, "work")
    deadline = time.monotonic() + 120
    while sorted(shard_rows(work)) != [4, 4] and time.monotonic() < deadline:  # rank 1 dies on its own
        time.sleep(0.2)
    assert sorted(shard_rows(work)) == [4, 4]
    time.sleep(0.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    again = subprocess.run([sys.executable, "SSL_Embed.py", *argv], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    vectors, kept, meta = cache_of(run)
    assert meta["last_build"] == {"reused": 0, "resumed": 8, "embedded": 16}
    clean_vectors, clean_names, _ = from_scratch(trained_run, tmp_path, data)
    assert kept == clean_names
    np.testing.assert_allclose(vectors, clean_vectors, **CLOSE)


# An update's last steps: its 4 new files written (each by a rename of its temporary file), then
# the 3 renamed into place; the process dies at each in turn.
@pytest.mark.parametrize("dies_at", range(1, 8))
def test_an_update_killed_while_it_is_put_in_place_is_finished_by_the_next_reader(run, tmp_path, monkeypatch,
                                                                                 dies_at):
    from spacessl import embeddings

    data = tmp_path / "data"
    copy_images(GALAXIES, data, 12)
    assert embed(run, data) == 0
    shutil.copy(sorted(GALAXIES.iterdir())[20], data / "new.jpg")
    real, calls = os.replace, []

    def dies(source, target):
        calls.append(source)
        if ".next." in str(source) and len([c for c in calls if ".next." in str(c)]) == dies_at:
            raise KeyboardInterrupt  # the process stops here; nothing after it runs
        return real(source, target)
    monkeypatch.setattr(embeddings.os, "replace", dies)
    assert embed(run, data) == 130
    monkeypatch.undo()
    assert embed(run, data) == 0
    vectors, kept, meta = cache_of(run)
    assert len(kept) == 13 and "new.jpg" in kept
    # Finished by the next reader, or built again from the old rows and the killed build's shard:
    # either way the new image was embedded once and the old ones never again.
    assert meta["last_build"]["reused"] == 12
    assert meta["last_build"]["embedded"] + meta["last_build"]["resumed"] == 1
    assert not list(run.joinpath(*CACHE).glob("*.next*"))


def test_a_finished_cache_is_trusted_without_reading_it_whole(run, tmp_path, monkeypatch):
    from spacessl import embeddings

    data = tmp_path / "data"
    copy_images(GALAXIES, data, 6)
    assert embed(run, data) == 0

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed")  # a 2 GB table would be read on every search
    monkeypatch.setattr(embeddings, "file_digest", no_hashing)
    assert embeddings.trusted_cache(run.joinpath(*CACHE)) is not None
