"""Files written whole or not at all: atomic writes, reserved memory maps, file fingerprints.

Every output of the tool goes through `atomic_path` (or `new_memmap` for arrays larger than
RAM), so a reader never sees a half-written file and a killed writer leaves nothing behind that a
later run could mistake for a result.
"""

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError

TMP_MARK = ".tmp"  # in the name of every temporary file atomic_path writes


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Readers never see a half-written file: os.replace is atomic on one filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    # The writer's process id is in the name, so a later writer can tell an orphan from a live write.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_MARK + path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give them the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_orphans(path: Path) -> None:
    """Delete temporary files left beside `path` by writers that were killed (kill -9, power cut):
    those whose process no longer runs. Another process's write in progress is left alone."""
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_MARK}*"):
        pid = orphan.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            orphan.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def new_memmap(path: Path, dtype, shape, name: str = ""):
    """np.lib.format.open_memmap for writing, with its disk space reserved first: a full disk is a
    one-line error here (naming the file, or `name` for a part of one), not a bus error (SIGBUS)
    halfway through filling the mapped file."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
    except OSError as err:
        del array
        path = Path(path)
        free = shutil.disk_usage(path.parent).free
        target = name or (path.name[1:].split(f".{os.getpid()}.")[0] if TMP_MARK in path.name else path.name)
        raise UserError(f"not enough disk space for {target} in {path.parent} "
                        f"({os.path.getsize(path) / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free: {err.strerror}); "
                        f"free some space and run again") from None
    return array


def fingerprint(path: Path) -> list:
    """[size, modification time in ns] of a file: any rewrite, truncation or copy over it changes it."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
