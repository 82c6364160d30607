"""`imgrec VERB ...`: one command line for every verb, its help and its one-line errors, as a newcomer meets them."""

import subprocess
import sys
from pathlib import Path

import pytest

from imgrec.cli import MODEL, VERBS
from imgrec.config import URI_FORMS, options
from imgrec.jobs import VERB_CONFIGS, config_body
from tests.conftest import REPO, cli, model_job_args

IMGREC = Path(sys.executable).parent / "imgrec"  # the console script pip installed


def test_imgrec_without_a_verb_lists_every_verb_with_a_line_each():
    done = subprocess.run([IMGREC, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert listed == list(VERBS)
    bare = subprocess.run([IMGREC], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "usage: imgrec VERB" in bare.stdout


def test_an_unknown_verb_says_which_it_is_close_to(capsys):
    with pytest.raises(SystemExit) as done:
        from imgrec.cli import main

        main(["atack", "model=x"])
    assert done.value.code.startswith("error: no verb 'atack' (did you mean attack?); the verbs are train, sweep,")


@pytest.mark.parametrize("verb", [v for v in VERBS if v != "train"])
def test_every_verbs_help_says_what_it_does_and_lists_its_options_and_choices(verb, capsys):
    cli(verb, "--help")
    text = capsys.readouterr().out
    assert text.startswith(f"usage: imgrec {verb} ")
    body = [line.strip().split(":")[0] for line in config_body(VERB_CONFIGS / f"{verb}.yaml")
            if line.strip() and not line.strip().startswith("#")]
    assert all(f"  {key}:" in text for key in body if not key.startswith(" "))  # every default, with its comment
    assert "paths.root" in text and "logger.tracking_uri" in text
    if verb in MODEL:
        assert URI_FORMS in text and f"outputs/{verb}/<run id>/" in text


@pytest.mark.parametrize("verb, key, values", [
    ("attack", "attack", ["fgsm", "pgd", "autoattack"]), ("export", "format", ["onnx", "pt2", "int8"]),
    ("reproduce", "table", options("table")), ("sweep", "sweep", options("sweep")),
    ("bench", "mode", ["throughput", "vs_plain", "fast_recipe", "ablation", "time_to_accuracy", "profile", "decode"]),
    ("explain", "methods", ["saliency", "integrated_gradients", "gradcam", "lime", "kernel_shap", "random"]),
])
def test_the_help_lists_the_full_choices_of_a_key(verb, key, values, capsys):
    cli(verb, "--help")
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"  {key}: "))
    assert all(value in line for value in values), line


def test_train_help_says_what_training_does_where_runs_go_and_every_group(capsys):
    cli("train", "--help")
    text = capsys.readouterr().out
    assert "runs:/<run_id>" in text and "outputs/runs/" in text and "mlruns" in text and "-sc install=bash" in text
    for group in ("data", "model", "optimizer", "scheduler", "trainer", "experiment"):
        assert f"  {group}: {', '.join(options(group))}" in text
    assert "table:" not in text and "sweep:" not in text  # a verb's groups, not training's


@pytest.mark.parametrize("args, message", [
    (["attack", "model=/etc/passwd"], "error: model: /etc/passwd is not a PyTorch checkpoint (not a zip archive); "
                                      f"a model is {URI_FORMS}"),
    (["attack", "model=runs:/"], "error: model: cannot resolve 'runs:/'"),
    (["explain"], f"error: model=<uri> is required: {URI_FORMS}"),
    (["export", "model=x.ckpt", "formt=onnx"], "error: formt: no such key (did you mean format?)"),
    (["reproduce", "table=fashion_mnist", "budget=long"], "error: budget must be one of paper, quick, smoke"),
    (["sweep"], "error: sweep=... is required: a search space of conf/sweep/ (adversarial_eps, "),
    (["cv", "folds=1"], "error: folds must be an integer >= 2, got 1"),
    (["bench", "mode=fast"],
     "error: mode must be one of throughput, vs_plain, fast_recipe, ablation, time_to_accuracy, profile, decode, got "
     "'fast'"),
    (["shard", "data=mnist"], "error: out=... is required: a folder or store prefix for the shards"),
    (["serve", "model=path/to.ckpt"], "error: model: serve takes models:/<name>@<alias>, models:/<name>/<version> or"),
    (["sync"], "error: nothing to send: no spool under "),
    (["reproduce", "table=fashion_mnist", "launcher=processes", "launcher.workers=0"],
     "error: launcher.workers: a positive number of workers, got 0"),
])
def test_bad_input_to_a_verb_is_one_line_naming_what_is_wrong(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as done:
        cli(*args)
    assert isinstance(done.value.code, str) and "\n" not in done.value.code
    assert done.value.code.startswith(message), done.value.code


def test_the_scripts_are_aliases_of_the_verbs():
    aliases = sorted(p.stem for p in (REPO / "scripts").glob("*.py") if p.stem != "plain_loop")
    assert aliases == sorted(v for v in VERBS if v != "train")
    done = subprocess.run([sys.executable, REPO / "scripts" / "attack.py", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: imgrec attack model=<uri>")


@pytest.mark.slow
def test_a_verb_on_a_model_runs_as_a_console_command_and_names_where_its_report_went(gray_classifier):
    """A fresh process, as a user runs it (in this one, an earlier test may have set what a verb needs)."""
    done = subprocess.run([IMGREC, "evaluate", *model_job_args(gray_classifier)], cwd=gray_classifier["home"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *report, last = done.stdout.strip().splitlines()
    run_id = gray_classifier["run"].info.run_id
    assert last.startswith(f"{gray_classifier['home']}/outputs/evaluate/{run_id}/mnist (MLflow run ")
    assert any(line.startswith("| test/acc |") for line in report)
