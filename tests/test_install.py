"""A non-editable install is self-contained: the package carries conf/ and runs from any directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgrec.cli import VERBS
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_a_regular_install_finds_its_configs_from_another_directory(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    installed = sorted(p.relative_to(target / "imgrec" / "conf") for p in (target / "imgrec" / "conf").rglob("*.yaml"))
    shipped = sorted(p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml"))
    assert installed == shipped and not (target / "imgrec" / "conf").is_symlink()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable checkout
    where = subprocess.run([sys.executable, "-c", "import imgrec.config as c; print(c.CONF_DIR)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=120, check=True)
    assert Path(where.stdout.strip()) == target / "imgrec" / "conf"
    script = target / "bin" / "imgrec"  # the console script: every verb
    verbs = subprocess.run([sys.executable, str(script), "--help"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=120)
    assert verbs.returncode == 0 and all(f"  {verb} " in verbs.stdout for verb in VERBS), verbs.stdout
    helped = subprocess.run([sys.executable, str(script), "train", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    models = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    assert f"model: {', '.join(models)}" in helped.stdout and "data: cifar10, cifar100, digits" in helped.stdout
    composed = subprocess.run([sys.executable, str(script), "train", "model=resnet20", "--cfg", "job"], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=120)
    assert composed.returncode == 0 and "depth: 20" in composed.stdout
