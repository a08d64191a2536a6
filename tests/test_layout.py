"""The house rules of the layout: the package stands on its own, scripts are recipes."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

ROOT_MODULES = {path.stem for path in ROOT.glob("*.py")}


def imported_modules(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_package_module_imports_a_root_module():
    offenders = {path.name: sorted(imported_modules(path) & ROOT_MODULES)
                 for path in (ROOT / "spacessl").glob("*.py")}
    assert {name: found for name, found in offenders.items() if found} == {}
    assert "collate" in ROOT_MODULES  # the rule is checked against the real root files


def test_the_package_imports_and_rebuilds_a_view_from_any_folder(tmp_path):
    code = ("import spacessl.embeddings, spacessl.runs, spacessl.datamodule, spacessl.model, sys; "
            "assert 'collate' not in sys.modules, 'the package loaded the root collate.py'")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_script_main_is_about_a_screen():
    for script in sorted(ROOT.glob("SSL_*.py")):
        tree = ast.parse(script.read_text())
        main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
        lines = main.end_lineno - main.lineno + 1
        assert lines <= 75, f"{script.name}: main is {lines} lines"


def test_every_result_folder_says_how_it_was_made(trained_run, tmp_path):
    import shutil

    import SSL_Evaluate
    from conftest import run_cli

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_cli(SSL_Evaluate, [f"--RUN={run}", "--NUM_WORKERS=0", "--QUERY=587722983360102542.jpg",
                                  "--EXPLAIN_TOP=0", "--THUMB_PX=32"]) == 0
    made = [folder for kind in ("queries", "maps") for folder in (run / kind).iterdir()]
    assert len(made) == 2  # the query's results and the map its report drew
    assert all((folder / "config.json").is_file() for folder in made)
    assert not [p for p in run.rglob(".*") if p.is_dir()]  # no half-written result folder left
