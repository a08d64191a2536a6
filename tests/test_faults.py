"""Fault injection: damaged caches, stopped runs, linked folders, races, Ctrl-C and hostile
checkpoints each end in a correct answer or a one-line error that says what to do."""

import collections
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import GALAXIES, ROOT, TINY, copy_images, run_cli

import SSL_Evaluate
import SSL_Train
from spacessl.runs import new_output_dir

CACHE = ("embeddings", "best__data")


@pytest.fixture
def run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def search(run, *argv):
    return run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False", "--POSTPROCESS=none", *argv])


def answers(run):
    """The neighbours table of the newest search."""
    return pd.read_csv(sorted((run / "queries").iterdir())[-1] / "neighbours.csv")


def damage_garbage(cache):
    (cache / "embeddings.npy").write_bytes(os.urandom(3000))


def damage_truncate(cache):
    data = (cache / "embeddings.npy").read_bytes()
    (cache / "embeddings.npy").write_bytes(data[: len(data) // 2])


def damage_empty(cache):
    (cache / "embeddings.npy").write_bytes(b"")


def damage_names(cache):
    (cache / "filenames.csv").write_text("not,a\n\"broken")


def damage_meta(cache):
    (cache / "meta.json").write_text("{ half")


def damage_wrong_shape(cache):
    np.save(cache / "embeddings.npy", np.eye(10, 512, dtype=np.float32))


def damage_nan_rows(cache):
    vectors = np.load(cache / "embeddings.npy")
    vectors[:5] = np.nan
    np.save(cache / "embeddings.npy", vectors)


def damage_shuffled_names(cache):
    names = pd.read_csv(cache / "filenames.csv")
    names.sample(frac=1, random_state=0).to_csv(cache / "filenames.csv", index=False)


@pytest.mark.parametrize("damage", [damage_garbage, damage_truncate, damage_empty, damage_names, damage_meta,
                                    damage_wrong_shape, damage_nan_rows, damage_shuffled_names])
def test_a_damaged_embedding_cache_is_rebuilt_and_answers_right(run, damage, caplog):
    assert search(run, "--QUERY=587722983360102542.jpg", "--TOP_K=5") == 0
    clean = answers(run)
    cache = run.joinpath(*CACHE)
    reference = np.load(cache / "embeddings.npy")
    damage(cache)
    assert search(run, "--QUERY=587722983360102542.jpg", "--TOP_K=5") == 0
    pd.testing.assert_frame_equal(answers(run), clean)
    np.testing.assert_array_equal(np.load(cache / "embeddings.npy"), reference)
    assert "embedding again" in caplog.text


def test_damaged_search_vectors_and_index_are_rebuilt(run, caplog):
    argv = ["--QUERY=587722983360102542.jpg", "--TOP_K=5", "--POSTPROCESS=whiten", "--EXACT_LIMIT=10", "--NLIST=4"]
    assert search(run, *argv) == 0
    clean = answers(run)
    cache = run.joinpath(*CACHE)
    (cache / "search_whiten.npy").write_bytes(b"\x93NUMPY garbage")
    (cache / "index.faiss").write_bytes(b"half written")
    assert search(run, *argv) == 0
    pd.testing.assert_frame_equal(answers(run), clean)


def test_a_run_stopped_in_its_first_epoch_can_be_started_again(tmp_path, capsys):
    copy_images(GALAXIES, tmp_path / "data", 12)
    args = [f"--DATA_DIR={tmp_path / 'data'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r", *TINY]
    stopped = tmp_path / "runs" / "r"
    (stopped / "logs" / "version_0").mkdir(parents=True)
    (stopped / "config.json").write_text("{}")  # what a run killed before its first checkpoint leaves
    assert run_cli(SSL_Train, args) == 2
    assert "holds no checkpoint yet (stopped during its first epoch?): pass --RESUME=True" in capsys.readouterr().err
    assert run_cli(SSL_Train, [*args, "--RESUME=True"]) == 0
    assert (stopped / "last.ckpt").is_file()


def test_linked_subfolders_are_searched_and_link_loops_end(tmp_path, caplog):
    from spacessl.images import find_images

    copy_images(GALAXIES, tmp_path / "elsewhere", 5)
    copy_images(GALAXIES, tmp_path / "data", 3)
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "elsewhere")
    names = find_images(tmp_path / "data")
    assert len(names) == 8 and sum(n.startswith("linked/") for n in names) == 5
    assert "a link leads back to" in caplog.text


def test_two_processes_get_two_result_folders(tmp_path):
    made, errors = [], []

    def make():
        try:
            made.append(new_output_dir(tmp_path, "q"))
        except OSError as err:
            errors.append(err)
    for _ in range(20):
        threads = [threading.Thread(target=make) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors and len(set(made)) == 40


def test_a_stale_cache_removed_by_another_process_meanwhile(run, monkeypatch):
    from spacessl import embeddings

    assert search(run) == 0
    cache = run.joinpath(*CACHE)
    real_loads = embeddings.json.loads

    def racing_loads(text):  # the other process finds the same stale cache and removes it first
        (cache / "meta.json").unlink()
        return real_loads(text)
    monkeypatch.setattr(embeddings.json, "loads", racing_loads)
    assert embeddings.read_cache(cache, {"checkpoint_sha256": "another checkpoint"}) is None


def test_ctrl_c_during_training_exits_130_with_one_line(tmp_path):
    copy_images(GALAXIES, tmp_path / "data", 24)
    args = [f"--DATA_DIR={tmp_path / 'data'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r",
            *[a for a in TINY if not a.startswith("--MAX_EPOCHS")], "--MAX_EPOCHS=1000"]
    # Ctrl-C as a terminal delivers it to a foreground job: a test suite started in the background
    # (`make test &`) runs with SIGINT ignored, which its children would inherit and never stop.
    # PYTHONFAULTHANDLER: should it hang anyway, a SIGABRT makes it print every thread's stack.
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as sink:
        process = subprocess.Popen([sys.executable, "SSL_Train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=sink, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                   preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL))
    try:
        # Generous limits: on a loaded 2-core machine the first checkpoint took 88 s.
        deadline = time.time() + 300
        while not (tmp_path / "runs" / "r" / "last.ckpt").is_file() and time.time() < deadline:
            time.sleep(0.5)
        assert (tmp_path / "runs" / "r" / "last.ckpt").is_file(), "no checkpoint within 300 s"
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            process.wait(timeout=60)
            pytest.fail("still running 300 s after Ctrl-C; its stacks:\n" + stderr.read_text()[-6000:])
    finally:
        process.kill()  # no effect once it has exited; else a 1000-epoch training would outlive the test
    err = stderr.read_text()
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: finished files are kept")
    assert "Traceback" not in err and not list((tmp_path / "runs" / "r").glob(".*.tmp*"))


class Payload:
    pass


@pytest.mark.parametrize("content,message", [
    ({"state_dict": collections.OrderedDict(), "hyper_parameters": {"x": Payload()}},
     "holds Python objects besides tensors and settings"),
])
def test_a_checkpoint_with_code_is_refused_without_unsafe_advice(tmp_path, capsys, content, message):
    torch.save(content, tmp_path / "best.ckpt")
    assert search(tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err and "weights_only=False" not in err and err.count("\n") == 1


def test_a_checkpoint_with_impossible_settings_is_refused(trained_run, tmp_path, capsys):
    ckpt = torch.load(trained_run / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["input_size"] = 0
    torch.save(ckpt, tmp_path / "best.ckpt")
    assert search(tmp_path) == 2
    err = capsys.readouterr().err
    assert "impossible settings (input_size=0)" in err and err.count("\n") == 1


def test_an_image_rewritten_with_its_old_size_and_time_is_embedded_again(run, tmp_path, caplog):
    data = tmp_path / "data"
    copy_images(GALAXIES, data, 6)
    first = sorted(p.name for p in data.iterdir())[0]
    assert search(run, f"--DATA_DIR={data}") == 0
    before = (data / first).stat()
    with open(data / first, "r+b") as handle:  # same size, other bytes
        handle.seek(before.st_size // 2)
        handle.write(b"\x00" * 64)
    os.utime(data / first, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level("INFO", logger="spacessl"):
        assert search(run, f"--DATA_DIR={data}") == 0
    assert "data or checkpoint changed" in caplog.text


def test_a_full_disk_while_caching_embeddings_is_one_line_and_leaves_nothing(run, monkeypatch, capsys):
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full)
    assert search(run) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough disk space for embeddings.npy") and err.count("\n") == 1
    cache = run.joinpath(*CACHE)
    assert not list(cache.glob(".*")) and not (cache / "meta.json").exists()
    monkeypatch.undo()
    assert search(run) == 0  # nothing was left that blocks the next run


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_run_resumable(tmp_path, monkeypatch, capsys):
    from spacessl import model as model_module

    copy_images(GALAXIES, tmp_path / "data", 12)
    args = [f"--DATA_DIR={tmp_path / 'data'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r", *TINY]
    real_save, saves = torch.save, []

    def fails_on_second(obj, path, *a, **k):  # best.ckpt is written, then the disk is full
        saves.append(path)
        if len(saves) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . basic_ios::clear: iostream error")
        return real_save(obj, path, *a, **k)
    monkeypatch.setattr(model_module.torch, "save", fails_on_second)
    assert run_cli(SSL_Train, args) == 2
    err = capsys.readouterr().err
    assert "error: writing checkpoint" in err and "continue with --RESUME=True" in err and err.count("\n") == 1
    run_dir = tmp_path / "runs" / "r"
    assert not list(run_dir.glob(".*.tmp*"))
    monkeypatch.undo()
    assert run_cli(SSL_Train, [*args, "--RESUME=True", "--MAX_EPOCHS=2"]) == 0
    assert (run_dir / "last.ckpt").is_file()


def test_a_read_only_run_is_searched_and_left_untouched(run, tmp_path, monkeypatch, capsys):
    from spacessl import runs

    assert search(run) == 0  # the owner embedded it once
    state = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    monkeypatch.setattr(runs, "writable", lambda folder: not str(folder).startswith(str(run)))
    monkeypatch.chdir(tmp_path)
    assert search(run, "--QUERY=587722983360102542.jpg", "--POSTPROCESS=whiten", "--TOP_K=3") == 0
    assert f"{run} cannot be written: results go to checkpoints/run" in capsys.readouterr().out
    assert len(pd.read_csv(next((tmp_path / "checkpoints" / "run" / "queries").iterdir()) / "neighbours.csv")) == 3
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == state  # nothing written into the run
    elsewhere = tmp_path / "mine"
    assert search(run, "--QUERY=587722983360102542.jpg", f"--OUTPUT_DIR={elsewhere}") == 0
    assert (elsewhere / "queries").is_dir()


def test_orphaned_temporary_files_of_killed_writers_are_removed(tmp_path):
    from spacessl.files import atomic_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".table.csv.{dead.pid}.abc.tmp.csv"
    live = tmp_path / ".table.csv.1.abc.tmp.csv"  # process 1 always runs: a write in progress
    orphan.write_text("half")
    live.write_text("half")
    with atomic_path(tmp_path / "table.csv") as tmp:
        tmp.write_text("whole")
    assert not orphan.exists() and live.exists() and (tmp_path / "table.csv").read_text() == "whole"


def test_an_unwritable_checkpoint_folder_is_one_line(tmp_path, capsys):
    copy_images(GALAXIES, tmp_path / "data", 4)
    (tmp_path / "file").write_text("a file where a folder should be")
    assert run_cli(SSL_Train, [f"--DATA_DIR={tmp_path / 'data'}", f"--CHECKPOINT_DIR={tmp_path / 'file'}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the run folder") and "choose a writable --CHECKPOINT_DIR" in err


@pytest.mark.parametrize("content, reason", [("x{", "not JSON"), ('{"INPUT_SIZE": -7}', "no resolved data_dir")])
def test_a_damaged_run_config_is_one_line_naming_it_and_the_way_out(run, capsys, content, reason):
    import SSL_Anomalies

    (run / "config.json").write_text(content)
    assert search(run, "--QUERY=x.png") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'config.json'} is damaged ({reason}") and "--DATA_DIR=" in err
    assert len(err.splitlines()) == 1
    assert run_cli(SSL_Anomalies, [f"--RUN={run}", "--NUM_WORKERS=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is damaged" in err and len(err.splitlines()) == 1
    data = run.parent / "data"
    copy_images(GALAXIES, data, 24)
    assert search(run, f"--DATA_DIR={data}") == 0  # the way out it names works


def test_resume_goes_on_with_the_runs_own_images(tmp_path, capsys):
    copy_images(GALAXIES, tmp_path / "mine", 16)
    args = [f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r", *TINY]
    assert run_cli(SSL_Train, [f"--DATA_DIR={tmp_path / 'mine'}", *args]) == 0
    capsys.readouterr()
    assert run_cli(SSL_Train, [*args, "--RESUME=True", "--MAX_EPOCHS=2"]) == 0  # no --DATA_DIR: not OATH's default
    resumed = json.loads((tmp_path / "runs" / "r" / "config.resume1.json").read_text())
    assert resumed["resolved"]["data_dir"] == str((tmp_path / "mine").resolve())


def test_odd_file_names_are_queried_or_said_to_be_left_out(tmp_path, caplog, capsys):
    names = copy_images(GALAXIES, tmp_path / "data", 12)
    (tmp_path / "data" / names[0]).rename(tmp_path / "data" / "two\nlines.jpg")  # a line break in a name
    shutil.copy(tmp_path / "data" / names[1], tmp_path / "data" / "..png")  # hidden: starts with a dot
    argv = [f"--DATA_DIR={tmp_path / 'data'}", f"--CHECKPOINT_DIR={tmp_path / 'runs'}", "--RUN_NAME=r", *TINY]
    with caplog.at_level("WARNING", logger="spacessl"):
        assert run_cli(SSL_Train, argv) == 0
    assert "..png: its name starts with a dot (a hidden file); rename it to include it" in caplog.text
    run = tmp_path / "runs" / "r"
    assert search(run, "--QUERY=two\nlines.jpg", "--TOP_K=3") == 0
    assert len(answers(run)) == 3 and "two\nlines.jpg" not in answers(run)["filename"].tolist()
    capsys.readouterr()
    assert search(run, "--QUERY=..png") == 2
    err = capsys.readouterr().err.strip()
    assert "'..png' is a hidden file (its name starts with a dot), left out of the embeddings" in err
    assert len(err.splitlines()) == 1


def test_a_deeply_nested_json_mark_is_a_400_not_a_crash(run):
    from test_explore import call, start

    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--REPORT=False"]) == 0
    base, server, _ = start(run)
    try:
        status, body = call(f"{base}/api/mark", b"[" * 100000 + b"]" * 100000, "POST",
                            {"Content-Type": "application/json"})
        assert status == 400 and body["error"].startswith("send JSON")
        assert call(f"{base}/api/hunt")[0] == 200  # the server is still up
    finally:
        server.should_exit = True


def test_a_full_disk_while_writing_result_pictures_is_one_line_and_leaves_no_result_folder(run, monkeypatch, capsys):
    import errno

    from matplotlib.figure import Figure

    assert search(run) == 0  # embedded; the query below only writes its results
    capsys.readouterr()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Figure, "savefig", full)
    assert search(run, "--QUERY=587722983360102542.jpg", "--REPORT=True") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the disk is full") and err.count("\n") == 1
    assert not (run / "queries").exists() or not list((run / "queries").iterdir())
    monkeypatch.undo()
    assert search(run, "--QUERY=587722983360102542.jpg") == 0 and len(list((run / "queries").iterdir())) == 1


def test_a_cache_file_swapped_with_its_old_time_put_back_is_not_trusted(run, caplog):
    assert search(run, "--QUERY=587722983360102542.jpg", "--TOP_K=5") == 0
    clean = answers(run)
    cache = run.joinpath(*CACHE)
    reference = np.load(cache / "embeddings.npy")
    before = (cache / "embeddings.npy").stat()
    np.save(cache / "embeddings.npy", reference[::-1].copy())  # same shape and size, wrong rows
    os.utime(cache / "embeddings.npy", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert search(run, "--QUERY=587722983360102542.jpg", "--TOP_K=5") == 0
    pd.testing.assert_frame_equal(answers(run), clean)
    np.testing.assert_array_equal(np.load(cache / "embeddings.npy"), reference)
    assert "changed or damaged after it was written" in caplog.text


def test_a_copied_run_reuses_its_cache(run, tmp_path, caplog):
    assert search(run) == 0
    subprocess.run(["cp", "-r", str(run), str(tmp_path / "copy")], check=True)  # new times, same bytes
    with caplog.at_level("INFO", logger="spacessl"):
        assert search(tmp_path / "copy") == 0
    assert "reusing embeddings" in caplog.text and "embedding again" not in caplog.text


def test_a_checkpoint_of_another_run_writes_into_the_given_run(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    before = sorted(p.name for p in other.iterdir())
    assert search(run, f"--CHECKPOINT={other / 'best.ckpt'}", "--QUERY=587722983360102542.jpg") == 0
    assert len(list((run / "queries").iterdir())) == 1 and (run / "embeddings").is_dir()
    assert sorted(p.name for p in other.iterdir()) == before


def test_an_error_after_a_progress_bar_starts_on_its_own_line(monkeypatch, capsys):
    import sys as system

    from spacessl.config import run_main
    from spacessl.errors import UserError

    def fails(argv):
        print("Epoch 0:  40%|████      | 2/5", end="", flush=True)  # a bar's line, not ended
        raise UserError("not enough disk space for last.ckpt")
    monkeypatch.setattr(system.stdout, "isatty", lambda: True)
    with pytest.raises(SystemExit):
        run_main(fails, [])
    captured = capsys.readouterr()
    assert captured.out.endswith("\n") and captured.err == "error: not enough disk space for last.ckpt\n"
