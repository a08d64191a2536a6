"""Distributed runs for real on the CPU (2 gloo processes): training with NT-Xent gathered across
ranks must train like 1 process with the doubled batch, not like 1 process with the per-rank
batch; embedding on 2 ranks must give exactly the single-process embeddings."""

import logging
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import GALAXIES, ROOT, copy_images, run_cli

# SimCLR (whatever the preset's method) at temperature 0.5: at it NT-Xent stays near log(2N - 1)
# over these first steps, which the comparison below reads the number of negatives from (the
# default 0.2 spreads the loss wider).
COMMON = ["--INPUT_SIZE=32", "--MAX_EPOCHS=3", "--WARMUP_EPOCHS=0", "--NUM_WORKERS=0", "--PROJ_HIDDEN_DIM=64",
          "--PROJ_OUT_DIM=32", "--DEVICE=cpu", "--VAL_FRACTION=0", "--AUGMENTATION=astro", "--METHOD=simclr",
          "--TEMPERATURE=0.5"]


def train(data, runs, name, *extra, processes=1):
    """Run SSL_Train.py: as a command for DDP (which starts its other ranks by re-running the
    command), in this process for one (the same code, without a second start-up)."""
    argv = [f"--DATA_DIR={data}", f"--CHECKPOINT_DIR={runs}", f"--RUN_NAME={name}", *COMMON, f"--DEVICES={processes}",
            *extra]
    if processes > 1:
        result = subprocess.run([sys.executable, "SSL_Train.py", *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        import SSL_Train

        assert run_cli(SSL_Train, argv) == 0
    metrics = pd.read_csv(runs / name / "logs" / "version_0" / "metrics.csv")
    return metrics["train_loss_epoch"].dropna().to_numpy()


def test_two_processes_train_like_one_with_the_doubled_batch(tmp_path):
    copy_images(GALAXIES, tmp_path / "data", 64)
    two_ranks = train(tmp_path / "data", tmp_path / "runs", "ddp", "--BATCH_SIZE=8", processes=2)
    doubled = train(tmp_path / "data", tmp_path / "runs", "one16", "--BATCH_SIZE=16")
    per_rank = train(tmp_path / "data", tmp_path / "runs", "one8", "--BATCH_SIZE=8")
    assert len(two_ranks) == len(doubled) == len(per_rank) == 3
    # NT-Xent grows with the number of negatives (~log(2N - 1)): gathered over 2 ranks of 8 it
    # must match a single batch of 16 (log 31 = 3.43), not a single batch of 8 (log 15 = 2.71).
    gap_to_doubled = abs(two_ranks - doubled).max()
    gap_to_per_rank = abs(two_ranks - per_rank).min()
    assert gap_to_doubled < 0.1 * doubled.min(), (two_ranks, doubled)
    assert gap_to_per_rank > 2 * gap_to_doubled, (two_ranks, per_rank)
    assert (tmp_path / "runs" / "ddp" / "last.ckpt").is_file()


def test_embedding_on_two_processes_equals_one(trained_run, tmp_path, caplog):
    """SSL_Embed.py with 2 CPU ranks writes the same cache as SSL_Evaluate.py in one process,
    leaving out an unreadable image, and SSL_Evaluate.py then reuses it."""
    data = tmp_path / "data"
    copy_images(GALAXIES, data, 21)
    (data / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    for name in ("single", "multi"):
        shutil.copytree(trained_run, tmp_path / name)
    import SSL_Evaluate

    assert run_cli(SSL_Evaluate, [f"--RUN={tmp_path / 'single'}", f"--DATA_DIR={data}", "--NUM_WORKERS=0"]) == 0
    multi = subprocess.run([sys.executable, "SSL_Embed.py", f"--RUN={tmp_path / 'multi'}", f"--DATA_DIR={data}",
                            "--NUM_WORKERS=0", "--DEVICE=cpu", "--DEVICES=2", "--BATCH_SIZE=4"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "embedded 21 of 22 images on 2 process(es)" in multi.stdout
    caches = [tmp_path / name / "embeddings" / "best__data" for name in ("single", "multi")]
    names = [pd.read_csv(c / "filenames.csv")["filename"].tolist() for c in caches]
    assert names[0] == names[1] and len(names[0]) == 21 and "broken.jpg" not in names[0]
    np.testing.assert_allclose(np.load(caches[1] / "embeddings.npy"), np.load(caches[0] / "embeddings.npy"),
                               atol=1e-5)
    assert not (caches[1] / "shards").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacessl"):
        assert run_cli(SSL_Evaluate, [f"--RUN={tmp_path / 'multi'}", f"--DATA_DIR={data}", "--NUM_WORKERS=0"]) == 0
    assert "reusing embeddings" in caplog.text
