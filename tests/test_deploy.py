"""From a run to a deployed model: predict image files, export (ONNX, torch.export, int8) with parity checks,
register in MLflow, serve over HTTP, benchmark inference."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from imgrec.deploy import bench, export, predict
from imgrec.deploy.images import read_image
from imgrec.hub import load_model
from tests.conftest import REPO, free_port, runs, wait_for
from tests.conftest import model_job_args as common

pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime onnxscript (the deploy extra)")


def image_folder(root: Path) -> Path:
    """Tiny files in both channel layouts and every format, sizes other than the model's, and one that is not an image."""
    folder = root / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), mode="RGB").save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), mode="RGB").save(folder / "rgb.bmp")
    np.save(folder / "array.npy", rng.random((1, 28, 28), dtype=np.float32))
    (folder / "notes.png").write_text("this is not an image")
    return folder


def test_predict_reads_every_layout_names_what_it_cannot_read_and_matches_the_model(trained_classifier, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = image_folder(tmp_path)
    output = tmp_path / "preds.csv"
    with pytest.raises(SystemExit) as exit_code:
        predict.run([*common(trained_classifier), f"inputs={folder}", f"output={output}", "topk=3"])
    assert exit_code.value.code == 1  # notes.png could not be read; the others were predicted
    rows = list(csv.DictReader(output.open()))
    assert [Path(r["file"]).name for r in rows] == ["array.npy", "gray.png", "rgb.bmp", "rgb.jpg"]
    assert list(rows[0]) == ["file", "pred", "prob", "pred_2", "prob_2", "pred_3", "prob_3"]
    model = load_model(trained_classifier["uri"], trained_classifier["tracking"])
    for row in rows:
        image = read_image(Path(row["file"]), model.spec.in_shape)
        assert image.shape == (1, 28, 28) and 0 <= image.min() and image.max() <= 1
        probs = model(image[None]).softmax(1)[0]
        assert row["pred"] == model.class_names[int(probs.argmax())]
        assert float(row["prob"]) == pytest.approx(float(probs.max()), abs=1e-5)
        assert float(row["prob"]) >= float(row["prob_2"]) >= float(row["prob_3"])
    as_json = tmp_path / "preds.json"
    with pytest.raises(SystemExit):
        predict.run([*common(trained_classifier), f"inputs={folder}/*.png", f"output={as_json}", "topk=1"])
    assert [Path(r["file"]).name for r in json.loads(as_json.read_text())] == ["gray.png"]


def test_a_command_line_without_an_image_folder_is_one_line(trained_classifier, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts/predict.py"), *common(trained_classifier),
                           f"inputs={tmp_path}/nowhere"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: inputs: no such file")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pt2", "int8"])
def test_every_export_round_trips_with_its_parity_check(trained_classifier, tmp_path, kind):
    output = tmp_path / f"model.{kind}"
    export.run([*common(trained_classifier), f"format={kind}", f"output={output}", f"data.root={trained_classifier['data_root']}",
                "calibration_images=64"])
    assert output.stat().st_size > 0
    (tracked,) = [r for r in runs(MlflowClient(trained_classifier["tracking"])) if r.info.run_name == f"export-{kind}"]
    metrics = tracked.data.metrics
    assert tracked.data.tags["mlflow.parentRunId"] == trained_classifier["run"].info.run_id
    assert metrics["test_images"] == 64 and 0 <= metrics["test_acc"] <= 1
    if kind == "int8":
        assert metrics["top1_agreement"] >= 0.8  # quantized: close, not equal
    else:
        assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["top1_agreement"] == 1.0
    run = export.runner(kind, output, threads=1)
    for batch in (1, 5):  # the batch dimension is dynamic
        assert run(np.random.rand(batch, 1, 28, 28).astype(np.float32)).shape == (batch, 10)


@pytest.mark.slow
def test_a_registered_model_loads_everywhere_and_serves_what_predict_says(trained_classifier, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export.run([*common(trained_classifier), "register=tiny-cnn", "alias=champion", f"data.root={trained_classifier['data_root']}"])
    model = load_model("models:/tiny-cnn@champion", trained_classifier["tracking"])
    images = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    original = load_model(trained_classifier["uri"], trained_classifier["tracking"])
    assert torch.equal(model(torch.from_numpy(images)), original(torch.from_numpy(images)))

    port = free_port()
    if port is None:
        pytest.skip("no loopback port to bind")
    bin_dir = Path(sys.executable).parent  # mlflow starts uvicorn from PATH, as in an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained_classifier["tracking"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([bin_dir / "mlflow", "models", "serve", "-m", "models:/tiny-cnn@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import requests

        answer = wait_for(server, lambda: requests.post(f"http://127.0.0.1:{port}/invocations",
                                                        json={"inputs": images.tolist()}, timeout=5),
                          "mlflow models serve")
        assert answer.status_code == 200, answer.text
        served = answer.json()["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with torch.no_grad():
        expected = original(torch.from_numpy(images)).softmax(1)
    for row, probs in zip(served, expected):
        assert row["pred"] == original.class_names[int(probs.argmax())]
        assert [row[name] for name in original.class_names] == pytest.approx(probs.tolist(), abs=1e-5)


@pytest.mark.slow
def test_bench_inference_writes_its_table_and_logs_it(trained_classifier, tmp_path):
    bench.run([*common(trained_classifier), f"data.root={trained_classifier['data_root']}", "latency_calls=20", "throughput_batches=2",
               "batch_size=16", "calibration_images=32", "backends=[eager fp32,eager bf16 autocast,onnxruntime fp32]"])
    out = tmp_path / "outputs" / "bench_inference" / trained_classifier["run"].info.run_id
    rows = list(csv.DictReader((out / "inference.csv").open()))
    assert [r["backend"] for r in rows] == ["eager fp32", "eager bf16 autocast", "onnxruntime fp32"]
    assert all(float(r["p50_ms"]) > 0 and float(r["img_per_s"]) > 0 for r in rows)
    assert rows[0]["test_acc"] == rows[2]["test_acc"]  # the fp32 export predicts what the eager model does
    assert "speed-up vs eager fp32" in (out / "inference.md").read_text() and (out / "inference.png").stat().st_size
