"""The layers hold: lower packages never import what stands above them, and networks and datamodules never
import MLflow (what they build on arrives built, through imgrec.hub)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "imgrec"
UPPER = ("imgrec.tasks", "imgrec.train", "imgrec.jobs", "imgrec.verbs", "imgrec.cli", "imgrec.sweep", "imgrec.tables")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


# Every package and module below the tasks. deploy is not yet: its logged_model callback imports the classification
# task (it belongs with the other callbacks, above the tasks).
LOWER = ["data", "models", "tracking", "robust", "explain", "hub.py", "pictures.py", "stats.py", "report.py",
         "config.py", "console.py", "cost.py", "errors.py", "hardware.py", "inference_precision.py", "optimizers.py",
         "validation.py", "fewshot.py", "profiling.py", "progress.py", "repeating.py", "tuning.py"]


@pytest.mark.parametrize("package", LOWER)
def test_lower_layers_import_nothing_above_them(package):
    files = [SRC / package] if package.endswith(".py") else sorted((SRC / package).rglob("*.py"))
    for path in files:
        upward = {name for name in imported_modules(path) if name.startswith(UPPER)}
        assert not upward, f"{path.relative_to(SRC)} imports {sorted(upward)}"


def test_networks_and_datamodules_load_without_mlflow():
    code = ("import importlib, pkgutil, sys, imgrec.models, imgrec.data\n"
            "for pkg in (imgrec.models, imgrec.data):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] == 'mlflow'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
