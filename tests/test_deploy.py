"""From a run to a deployed model: predict image files, export (ONNX, torch.export, int8) with parity checks,
register in MLflow, serve over HTTP, benchmark inference."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from imgrec.deploy import export
from imgrec.deploy.images import read_image
from imgrec.hub import load_model
from tests.conftest import cli, free_port, runs, wait_for
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
                                                                                    capsys):
    folder = image_folder(tmp_path)
    output = tmp_path / "preds.csv"
    with pytest.raises(SystemExit) as exit_code:
        cli("predict", *common(trained_classifier), f"inputs={folder}", f"output={output}", "topk=3")
    assert exit_code.value.code == 1  # notes.png could not be read; the others were predicted
    assert "notes.png: not an image" in capsys.readouterr().err
    rows = list(csv.DictReader(output.open()))
    report = tmp_path / "outputs" / "predict" / trained_classifier["run"].info.run_id / "predictions.csv"
    assert list(csv.DictReader(report.open())) == rows  # the report's table: the same rows
    assert [Path(r["file"]).name for r in rows] == ["array.npy", "gray.png", "rgb.bmp", "rgb.jpg"]
    assert list(rows[0]) == ["file", "pred", "prob", "pred_2", "prob_2", "pred_3", "prob_3"]
    model = load_model(trained_classifier["uri"], trained_classifier["tracking"])
    for row in rows:
        image = read_image(Path(row["file"]), model.spec.in_shape)
        assert image.shape == trained_classifier["in_shape"] and 0 <= image.min() and image.max() <= 1
        probs = model(image[None]).softmax(1)[0]
        assert row["pred"] == model.class_names[int(probs.argmax())]
        assert float(row["prob"]) == pytest.approx(float(probs.max()), abs=1e-5)
        assert float(row["prob"]) >= float(row["prob_2"]) >= float(row["prob_3"])
    as_json = tmp_path / "preds.json"
    with pytest.raises(SystemExit):
        cli("predict", *common(trained_classifier), f"inputs={folder}/*.png", f"output={as_json}", "topk=1")
    assert [Path(r["file"]).name for r in json.loads(as_json.read_text())] == ["gray.png"]


def test_a_command_line_without_an_image_folder_is_one_line_and_leaves_no_run(trained_classifier, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: inputs: no such file, folder or match: .*nowhere$"):
        cli("predict", *common(trained_classifier), f"inputs={tmp_path}/nowhere")
    assert [r.info.run_name for r in runs(MlflowClient(trained_classifier["tracking"]))] == [f"cnn-{trained_classifier['data']}"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pt2", "int8"])
def test_every_export_round_trips_with_its_parity_check(trained_classifier, tmp_path, kind):
    output = tmp_path / f"model.{kind}"
    cli("export", *common(trained_classifier), f"format={kind}", f"output={output}", "calibration_images=64")
    assert output.stat().st_size > 0
    (tracked,) = [r for r in runs(MlflowClient(trained_classifier["tracking"])) if r.info.run_name == f"export-{kind}"]
    metrics = tracked.data.metrics
    assert tracked.data.tags["mlflow.parentRunId"] == trained_classifier["run"].info.run_id
    assert metrics["test_images"] == trained_classifier["test_images"] and 0 <= metrics["test_acc"] <= 1
    if kind == "int8":
        assert metrics["top1_agreement"] >= 0.8  # quantized: close, not equal
    else:
        assert metrics["max_abs_logit_diff"] < 1e-4 and metrics["top1_agreement"] == 1.0
    run = export.runner(kind, output, threads=1)
    for batch in (1, 5):  # the batch dimension is dynamic
        assert run(np.random.rand(batch, *trained_classifier["in_shape"]).astype(np.float32)).shape == (batch, 10)


@pytest.mark.slow
def test_a_registered_model_loads_everywhere_and_serves_what_predict_says(trained_classifier, tmp_path):
    cli("export", *common(trained_classifier), "register=tiny-cnn", "alias=champion", "data.root=/nowhere")
    (registered,) = [r for r in runs(MlflowClient(trained_classifier["tracking"])) if r.info.run_name == "register"]
    assert registered.info.status == "FINISHED"  # without the dataset: registering reads no image
    model = load_model("models:/tiny-cnn@champion", trained_classifier["tracking"])
    images = np.random.default_rng(1).random((2, *trained_classifier["in_shape"]), dtype=np.float32)
    original = load_model(trained_classifier["uri"], trained_classifier["tracking"])
    assert torch.equal(model(torch.from_numpy(images)), original(torch.from_numpy(images)))

    port = free_port()
    if port is None:
        pytest.skip("no loopback port to bind")
    server = subprocess.Popen([Path(sys.executable).parent / "imgrec", "serve", "model=models:/tiny-cnn@champion",
                               f"port={port}", f"logger.tracking_uri={trained_classifier['tracking']}"], cwd=tmp_path,
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
    cli("bench_inference", *common(trained_classifier), "latency_calls=20", "throughput_batches=2", "batch_size=16",
           "calibration_images=32", "backends=[eager fp32,eager bf16 autocast,onnxruntime fp32]")
    out = tmp_path / "outputs" / "bench_inference" / trained_classifier["run"].info.run_id
    rows = list(csv.DictReader((out / "inference.csv").open()))
    assert [r["backend"] for r in rows] == ["eager fp32", "eager bf16 autocast", "onnxruntime fp32"]
    assert all(float(r["p50_ms"]) > 0 and float(r["img_per_s"]) > 0 for r in rows)
    assert rows[0]["test_acc"] == rows[2]["test_acc"]  # the fp32 export predicts what the eager model does
    assert "speed-up vs eager fp32" in (out / "inference.md").read_text() and (out / "inference.png").stat().st_size
