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

from imgrec import hardware
from imgrec.data.decode import Preprocess
from imgrec.deploy import export
from imgrec.deploy.images import batches, find_inputs, read_image
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
        cli("predict", *common(trained_classifier), f"inputs={folder}", f"output={output}", "topk=3",
            "precision=32-true")  # fp32: compared to 1e-5 below
    assert exit_code.value.code == 1  # notes.png could not be read; the others were predicted
    assert "notes.png: not an image" in capsys.readouterr().err
    rows = list(csv.DictReader(output.open()))
    report = tmp_path / "outputs" / "predict" / trained_classifier["run"].info.run_id / "predictions.csv"
    assert list(csv.DictReader(report.open())) == rows  # the report's table: the same rows
    assert [Path(r["file"]).name for r in rows] == ["array.npy", "gray.png", "rgb.bmp", "rgb.jpg"]
    assert list(rows[0]) == ["file", "pred", "prob", "pred_2", "prob_2", "pred_3", "prob_3"]
    model = load_model(trained_classifier["uri"], trained_classifier["tracking"])
    for row in rows:
        image = read_image(Path(row["file"]), model.preprocess)
        assert image.shape == trained_classifier["in_shape"] and 0 <= image.min() and image.max() <= 1
        probs = model(image[None]).softmax(1)[0]
        assert row["pred"] == model.class_names[int(probs.argmax())]
        assert float(row["prob"]) == pytest.approx(float(probs.max()), abs=1e-5)
        assert float(row["prob"]) >= float(row["prob_2"]) >= float(row["prob_3"])
    as_json = tmp_path / "preds.json"
    with pytest.raises(SystemExit):
        cli("predict", *common(trained_classifier), f"inputs={folder}/*.png", f"output={as_json}", "topk=1")
    assert [Path(r["file"]).name for r in json.loads(as_json.read_text())] == ["gray.png"]


def hostile_folder(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Files from the wild: (the folder, the 8-bit gray or RGB pixels each readable file should give)."""
    folder = root / "wild"
    folder.mkdir()
    gray16 = (np.arange(28 * 28).reshape(28, 28) * 83).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    Image.new("CMYK", (28, 28), (0, 255, 0, 0)).save(folder / "cmyk.jpg")
    palette = Image.new("P", (28, 28), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 14, 28))  # left half red, right half the transparent colour (green)
    palette.save(folder / "palette.png", transparency=1)
    frames = [Image.new("L", (28, 28), value) for value in (40, 200)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.png")
    (folder / "truncated.png").write_bytes((folder / "whole.png").read_bytes()[:400])  # of about 850
    (folder / "empty.png").write_bytes(b"")
    Image.new("L", (100, 100)).save(folder / "bomb.png")  # a bomb under the test's MAX_IMAGE_PIXELS
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "loop.png").symlink_to(folder / "loop.png")
    red_left = np.zeros((28, 28, 3), np.uint8)
    red_left[:, :14, 0] = 255  # the transparent half composited over black
    expected = {"gray16.png": np.round(gray16 / 257), "cmyk.jpg": np.asarray(Image.open(folder / "cmyk.jpg").convert("RGB")),
                "palette.png": red_left, "animated.gif": np.full((28, 28), 40), "whole.png": noise}
    return folder, expected


def test_files_from_the_wild_are_read_or_named_one_line_each(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # Pillow refuses images above twice its limit
    folder, expected = hostile_folder(tmp_path)
    paths = find_inputs(str(folder))
    for channels in (1, 3):
        ((good, images, errors),) = list(batches(paths, Preprocess((28, 28), channels), size=len(paths)))
        assert sorted(p.name for p in good) == sorted(expected)
        named = {line.split(":")[0].rsplit("/", 1)[-1]: line for line in errors}
        assert sorted(named) == ["bomb.png", "empty.png", "loop.png", "pickled.npy", "truncated.png"]
        assert "decompression bomb" in named["bomb.png"] and all("\n" not in line for line in errors)
        for path, image in zip(good, images):
            pixels = expected[path.name]
            if channels == 3 and pixels.ndim == 2:
                pixels = np.repeat(pixels[..., None], 3, axis=2)
            if channels == 1 and pixels.ndim == 3:
                pixels = np.asarray(Image.fromarray(pixels.astype(np.uint8), "RGB").convert("L"))
            want = torch.from_numpy(pixels.astype(np.float32) / 255).reshape(28, 28, channels).permute(2, 0, 1)
            assert torch.allclose(image, want, atol=1 / 255 + 1e-6), path.name


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
                               f"port={port}", f"logger.tracking_uri={trained_classifier['tracking']}",
                               "precision=32-true"], cwd=tmp_path,  # fp32: compared to 1e-5 below
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


def bad_requests(shape: tuple[int, ...]) -> dict[str, tuple[object, int]]:
    """name: (the body, as JSON-able or raw bytes, and the status it must get)."""
    good = np.full((2, *shape), 0.5).tolist()
    return {"a wrong shape": ({"inputs": np.full((2, shape[0], 5, 5), 0.5).tolist()}, 422),
            "NaN": (json.dumps({"inputs": np.full((1, *shape), np.nan).tolist()}).encode(), 400),
            "infinity": (json.dumps({"inputs": np.full((1, *shape), np.inf).tolist()}).encode(), 400),
            "strings": ({"inputs": [["a"] * 3]}, 400),
            "no inputs key": ({"instances_of_nothing": good}, 400),
            "an empty batch": ({"inputs": []}, 400),
            "values above 1": ({"inputs": (np.array(good) * 255).tolist()}, 400),
            "not JSON": (b"{inputs", 400),
            "12 MB": (b" " * (12 * 2**20), 413)}


@pytest.mark.slow
def test_the_server_answers_a_burst_and_refuses_bad_requests_one_line_each(trained_classifier, tmp_path):
    import requests

    from imgrec.deploy.load import hammer

    cli("export", *common(trained_classifier), "register=tiny", "alias=champion", "data.root=/nowhere")
    port, shape = free_port(), trained_classifier["in_shape"]
    if port is None:
        pytest.skip("no loopback port to bind")
    url = f"http://127.0.0.1:{port}/invocations"
    good = {"inputs": np.full((2, *shape), 0.5).tolist()}
    server = subprocess.Popen([Path(sys.executable).parent / "imgrec", "serve", "model=models:/tiny@champion",
                               f"port={port}", f"logger.tracking_uri={trained_classifier['tracking']}"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(server, lambda: requests.post(url, json=good, timeout=5), "imgrec serve")
        load = hammer(url, shape, requests=200, clients=8)
        print(json.dumps(load))  # p50 / p99 for the record (-s shows it); not asserted: speed belongs in benchmarks
        assert load["ok"] == 200 and load["other_statuses"] == {}
        for name, (body, status) in bad_requests(shape).items():
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            answer = requests.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=30)
            message = answer.json()["message"]
            assert answer.status_code == status and "\n" not in message and len(message) < 300, (name, answer.text)
            assert requests.post(url, json=good, timeout=10).status_code == 200, f"no answer after {name}"
        chunked = requests.post(url, data=(b" " * 2**20 for _ in range(12)), timeout=30,
                                headers={"Content-Type": "application/json"})  # no Content-Length: counted
        assert chunked.status_code == 413 and requests.post(url, json=good, timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_bench_inference_writes_its_table_and_logs_it(trained_classifier, tmp_path):
    cli("bench_inference", *common(trained_classifier), "latency_calls=20", "throughput_batches=2", "batch_size=16",
           "calibration_images=32", "backends=[eager fp32,eager bf16 autocast,eager auto,onnxruntime fp32]")
    out = tmp_path / "outputs" / "bench_inference" / trained_classifier["run"].info.run_id
    rows = list(csv.DictReader((out / "inference.csv").open()))
    assert [r["backend"] for r in rows] == ["eager fp32", "eager bf16 autocast", "eager auto", "onnxruntime fp32"]
    assert all(float(r["p50_ms"]) > 0 and float(r["img_per_s"]) > 0 for r in rows)
    assert rows[0]["test_acc"] == rows[3]["test_acc"]  # the fp32 export predicts what the eager model does
    if hardware.cpu_has_native_bf16():  # eager auto timed both precisions per batch size, and says which it runs
        per_batch = list(csv.DictReader((out / "precision_per_batch.csv").open()))
        assert [int(r["batch"]) for r in per_batch] == [1, 8, 64, 256]
        chosen = [r["chosen"] for r in per_batch]
        assert chosen == sorted(chosen, key=lambda c: c == "bf16")  # fp32 below a batch size, bf16 from it
        assert all(float(r["bf16_ms"]) < float(r["fp32_ms"]) for r in per_batch if r["chosen"] == "bf16")
    assert "speed-up vs eager fp32" in (out / "inference.md").read_text() and (out / "inference.png").stat().st_size
