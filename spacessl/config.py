"""Hyperparameter overrides, user-facing errors and atomic file writes shared by the scripts.

Each script keeps its hyperparameters as UPPER_CASE constants at its top (nanoGPT style);
`resolve_config(globals(), argv)` turns them plus `--NAME=value` arguments into one checked dict.
"""

import contextlib
import difflib
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}
SCALAR_TYPES = (bool, int, float, str)
TMP_MARK = ".tmp"  # in the name of every temporary file atomic_path writes
LIGHTNING_TIP = "\N{ELECTRIC LIGHT BULB} Tip:"


class UserError(Exception):
    """A problem with the user's input or files: reported as one line, without a traceback."""


BLOCK_START = "# ---- hyperparameters"  # a script's block of settings opens with this line ...
BLOCK_END = "# ----"                   # ... and ends at the next line that starts with this


def block_names(script) -> set:
    """The names assigned in a script's hyperparameter block (None when it has no block)."""
    names, inside = set(), False
    for line in Path(script).read_text().splitlines():
        if line.startswith(BLOCK_START):
            inside = True
        elif inside and line.startswith(BLOCK_END):
            return names
        elif inside and " = " in line and not line.startswith((" ", "#")):
            names.add(line.split(" = ")[0].strip())
    return names if inside else None


def hyperparameters(namespace: dict) -> dict:
    """The UPPER_CASE scalar constants of a script's module namespace, in definition order: those
    of its hyperparameter block only, so a constant it imports is never taken for its own."""
    own = block_names(namespace["__file__"]) if "__file__" in namespace else None
    return {name: value for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and isinstance(value, SCALAR_TYPES)
            and (own is None or name in own)}


def parse_value(name: str, text: str, kind: type):
    """Convert the text of `--NAME=text` to the type of NAME's default, or raise UserError."""
    if kind is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise UserError(f"--{name}={text}: expected True or False")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--{name}={text}: expected a whole number") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--{name}={text}: expected a number") from None
    return text


def resolve_config(namespace: dict, argv: list) -> dict:
    """Defaults from the script's constants, overridden by `--NAME=value` arguments."""
    config = hyperparameters(namespace)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"argument {arg!r} is not of the form --NAME=value "
                            f"(run with --help to list the names)")
        name, text = arg[2:].split("=", 1)
        if name not in config:
            close = difflib.get_close_matches(name.upper(), list(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown hyperparameter --{name}{hint} (run with --help to list them)")
        config[name] = parse_value(name, text, type(config[name]))
    return config


# The settings of every script that opens a run (runs.open_run's keyword arguments, upper-cased).
OPEN_RUN = ("RUN", "CHECKPOINT", "DATA_DIR", "POSTPROCESS", "DEVICE", "BATCH_SIZE", "NUM_WORKERS", "OUTPUT_DIR")


def keywords(config: dict, *names) -> dict:
    """The named settings as a library call's keyword arguments: {"RUN": r} -> {"run": r}."""
    return {name.lower(): config[name] for name in names}


def format_config(config: dict) -> str:
    width = max(map(len, config))
    return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in config.items())


def usage(doc: str, script: str) -> str:
    """The script's docstring and its hyperparameter block, comments included."""
    block, inside = [], False
    for line in Path(script).read_text().splitlines():
        if " = " in line and line.split(" = ")[0].isupper() and not line.startswith("_"):
            block.append(line)
            inside = True
        elif inside and line.startswith(" ") and line.lstrip().startswith("#"):
            block.append(line)  # a comment continued on the next line
        else:
            inside = False
    return f"{doc.strip()}\n\nHyperparameters (defaults; override as --NAME=value):\n" + "\n".join(block)


def wants_help(argv: list) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def settings(namespace: dict, argv: list) -> dict:
    """A script's opening: with -h/--help its docstring and hyperparameter block are printed and
    the script ends; else its block overridden by `--NAME=value` arguments, as one checked dict."""
    if wants_help(argv):
        print(usage(namespace["__doc__"], namespace["__file__"]))
        raise SystemExit(0)
    return resolve_config(namespace, argv)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


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


def not_a_lightning_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(LIGHTNING_TIP)


def end_open_line() -> None:
    """On a terminal, end the line a progress bar may have left open (Lightning's and tqdm's
    redraw one line with carriage returns), so a closing message starts a line of its own."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
        sys.stdout.flush()


def run_main(main, argv=None) -> None:
    """Run a script's main(argv) with progress messages (INFO) and warnings on stderr; a UserError
    ends it with one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # Lightning advertises a cloud logger on every Trainer; nothing a user of these scripts can act on.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(not_a_lightning_tip)
    # Nor on these two: a deprecation inside Lightning 2.6's own code (its _pytree.py calls torch's
    # LeafSpec), and the note that a small archive has fewer batches than LOG_EVERY_N_STEPS (the
    # epoch's row is logged all the same).
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        end_open_line()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        end_open_line()
        print("interrupted: finished files are kept, nothing half-written was left (a training run "
              "continues with --RESUME=True)", file=sys.stderr)
        sys.exit(130)
