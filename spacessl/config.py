"""A script's settings (its block plus `--NAME=value` overrides) and how it ends (run_main).

Each script keeps its hyperparameters as UPPER_CASE constants at its top (nanoGPT style);
`resolve_config(globals(), argv)` turns them plus `--NAME=value` arguments into one checked dict.
"""

import difflib
import logging
import sys
import warnings
from pathlib import Path

from .errors import UserError

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}
SCALAR_TYPES = (bool, int, float, str)
LIGHTNING_TIP = "\N{ELECTRIC LIGHT BULB} Tip:"


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
