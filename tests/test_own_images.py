"""Your own images (data=folder, data=hf): listing, decoding, the decode cache, bad files, splits drawn per class,
tracking, and every verb on a model trained on a 1-channel and on an RGB folder, end to end."""

import base64
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from imgrec.data.augment import random_resized_crop
from imgrec.data.cache import Settings, open_or_build
from imgrec.data.decode import Preprocess, decode, probe
from imgrec.data.folder import list_folder
from imgrec.data.hf import list_dataset, load
from imgrec.data.splits import holdout
from imgrec.errors import ConfigError, DataFileError, DataNotFoundError
from imgrec.hub import load_model
from imgrec.train import train
from tests.conftest import FAST, cli, runs
from tests.dataset_files import write_hf_dataset, write_image_folder, write_photo_folder

SMALL_NET = ["model.channels=[8,16]", "model.fc=[32]"]


# -- listing ---------------------------------------------------------------------------------------------------

def test_class_folders_are_the_classes_sorted_as_written_and_their_files_found_below_them(tmp_path):
    write_image_folder(tmp_path, classes=("zebra crossing", "Ärmel", "apple"), per_class=2)
    (tmp_path / "apple" / "nested").mkdir()
    Image.new("RGB", (5, 5)).save(tmp_path / "apple" / "nested" / "deep.webp")
    (tmp_path / "apple" / ".hidden.png").write_bytes(b"not listed")
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    listing = list_folder(tmp_path)
    assert listing.class_names == ("apple", "zebra crossing", "Ärmel")  # code points: Unicode and spaces kept
    names = dict(zip(listing.names, listing.labels.tolist()))
    assert names["apple/nested/deep.webp"] == 0 and len(names) == 7 and set(listing.parts.tolist()) == {0}


def test_split_folders_are_used_as_they_are(tmp_path):
    write_image_folder(tmp_path, per_class=3, split_folders=("train", "valid", "test"))
    listing = list_folder(tmp_path)
    assert listing.class_names == ("a", "b", "c")
    assert np.bincount(listing.parts).tolist() == [9, 9, 9]  # train, val (valid/), test
    assert all(name.startswith(("train/", "valid/", "test/")) for name in listing.names)


def test_a_csv_labels_a_flat_folder_by_class_name_or_by_index(tmp_path):
    for i in range(4):
        Image.new("L", (6, 6), 60 * i).save(tmp_path / f"{i}.png")
    (tmp_path / "names.csv").write_text("file,label\n0.png,dog\n1.png,cat\n2.png,dog\n3.png,cat\n")
    (tmp_path / "index.csv").write_text("label,file\n1,0.png\n0,1.png\n1,2.png\n0,3.png\n")
    by_name, by_index = list_folder(tmp_path, "names.csv"), list_folder(tmp_path, tmp_path / "index.csv")
    assert by_name.class_names == ("cat", "dog") and by_name.labels.tolist() == [1, 0, 1, 0]
    assert by_index.class_names == ("0", "1") and by_index.labels.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("layout, message", [
    (lambda root: Image.new("L", (4, 4)).save(root / "loose.png"), "holds images but no class folders"),
    (lambda root: (root / "a").mkdir() or (root / "b").mkdir() or Image.new("L", (4, 4)).save(root / "a" / "x.png"),
     "the class folder .*b holds no images"),
    (lambda root: write_image_folder(root, per_class=1, split_folders=("test",)), "has test/ but no train/ folder"),
    (lambda root: Image.new("L", (4, 4)).save(root / "x.png") or (root / "l.csv").write_text("file,label\ny.png,a\n"),
     "l.csv line 2 names y.png, which is not a file"),
    (lambda root: Image.new("L", (4, 4)).save(root / "x.png") or (root / "l.csv").write_text("name,class\nx.png,a\n"),
     "needs the columns file,label"),
    (lambda root: Image.new("L", (4, 4)).save(root / "x.png") or (root / "l.csv").write_text("file,label\nx.png,2\n"),
     "class 0 has no images"),
])
def test_a_folder_that_is_not_a_dataset_is_one_line(tmp_path, layout, message):
    layout(tmp_path)
    labels = "l.csv" if (tmp_path / "l.csv").exists() else None
    with pytest.raises((DataFileError, ConfigError), match=message) as error:
        list_folder(tmp_path, labels)
    assert "\n" not in str(error.value)
    with pytest.raises(DataNotFoundError, match="^data.root: no such folder .*nowhere$"):
        list_folder(tmp_path / "nowhere")


# -- decoding --------------------------------------------------------------------------------------------------

def test_exif_orientation_modes_and_depths_are_decoded_to_the_channels_asked_for(tmp_path):
    tall = Image.new("RGB", (40, 20), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue: after a 90-degree turn it is on top or bottom
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: viewers turn it 90 degrees clockwise
    tall.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    assert probe(tmp_path / "turned.jpg", "turned.jpg")[:2] == (40, 20)  # height, width after the turn
    upright = decode(tmp_path / "turned.jpg", Preprocess((40, 20), 3), "turned.jpg")
    assert upright.shape == (3, 40, 20) and upright[2, :20].mean() > 200 and upright[0, 20:].mean() > 200

    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert decode(tmp_path / "white16.png", Preprocess((8, 8), 1)).min() == 255  # 65535 is white, not clipped
    Image.new("LA", (8, 8), (200, 0)).save(tmp_path / "clear.png")  # grayscale, fully transparent: black
    assert decode(tmp_path / "clear.png", Preprocess((8, 8), 1)).max() == 0
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg")
    red = decode(tmp_path / "red.jpg", Preprocess((8, 8), 3))
    assert red[0].mean() > 200 and red[1].mean() < 60
    gray = decode(tmp_path / "red.jpg", Preprocess((8, 8), 1))
    assert gray.shape == (1, 8, 8) and 60 < gray.mean() < 90  # ITU-R 601 luma of red


def test_decoding_covers_the_stored_size_and_crops_its_centre():
    image = np.zeros((30, 60), np.uint8)
    image[:, 15:45] = 255  # a bright square in the middle of a wide image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    stored = decode(buffer.getvalue(), Preprocess((20, 20), 1, crop_fraction=1.0))
    assert stored.shape == (1, 20, 20) and stored.min() > 200  # the centre square, the sides cut off
    wider = Preprocess((16, 16), 1, crop_fraction=0.5)
    assert wider.stored_size == (32, 32) and decode(buffer.getvalue(), wider).shape == (1, 32, 32)


def test_random_resized_crops_cover_the_allowed_share_and_the_whole_image_reduces_to_a_resize():
    images = torch.rand(6, 3, 24, 32)
    whole = random_resized_crop(images, (12, 16), scale=(1.0, 1.0), ratio=(32 / 24, 32 / 24))
    expected = torch.nn.functional.interpolate(images, size=(12, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(whole, expected, atol=1e-5)
    marked = torch.zeros(512, 1, 32, 32)
    marked[:, :, :16] = 1  # top half white
    torch.manual_seed(0)
    crops = random_resized_crop(marked, (8, 8), scale=(0.1, 0.3), ratio=(1.0, 1.0))
    assert crops.shape == (512, 1, 8, 8)
    means = crops.mean(dim=(1, 2, 3))
    assert (means > 0.99).any() and (means < 0.01).any()  # small crops land wholly in one half or the other


# -- the decode cache ------------------------------------------------------------------------------------------

def build(root: Path, cache: Path, workers: int = 1, size=None, channels=None):
    return open_or_build(list_folder(root), Settings(size, channels, 1.0, "bilinear"), str(root), cache, "t", workers)


def test_the_cache_is_decoded_once_and_again_when_files_change_and_it_says_so(tmp_path, caplog):
    root = tmp_path / "photos"
    write_image_folder(root, per_class=5, shape=(3, 12, 10))
    caplog.set_level(logging.INFO, "imgrec")
    first = build(root, tmp_path / "cache", size=(12, 10))
    assert first.images.shape == (15, 3, 12, 10) and isinstance(first.images, np.memmap)
    assert "decoded 15 images" in caplog.text
    caplog.clear()
    again = build(root, tmp_path / "cache", size=(12, 10))
    assert caplog.text == "" and np.array_equal(np.asarray(again.images), np.asarray(first.images))
    Image.new("RGB", (10, 12)).save(root / "a" / "new.png")
    sorted((root / "b").glob("*.png"))[0].unlink()
    Image.new("RGB", (10, 12), (9, 9, 9)).save(sorted((root / "c").glob("*.png"))[0])
    changed = build(root, tmp_path / "cache", size=(12, 10))
    assert "changed since its cache was made (1 file added, 1 changed, 1 removed): decoding again" in caplog.text
    assert changed.images.shape[0] == 15


def test_parallel_decoding_writes_what_one_process_writes(tmp_path):
    root = tmp_path / "photos"
    write_image_folder(root, per_class=40, shape=(1, 9, 9), suffix=".jpg")
    one, two = build(root, tmp_path / "one"), build(root, tmp_path / "two", workers=2)
    assert one.preprocess == two.preprocess == Preprocess((9, 9), 1)  # the size and channels found from the files
    assert np.array_equal(np.asarray(one.images), np.asarray(two.images))


def test_images_of_several_sizes_need_an_image_size_and_the_error_suggests_one(tmp_path):
    write_image_folder(tmp_path / "a", per_class=2, shape=(3, 40, 60))
    write_image_folder(tmp_path / "b", per_class=1, shape=(3, 50, 50))
    for folder in ("a", "b"):  # one folder of both
        for file in (tmp_path / folder).rglob("*.png"):
            target = tmp_path / "mixed" / file.parent.name / f"{folder}{file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            file.rename(target)
    with pytest.raises(ConfigError, match=r"data.image_size: the images differ in size \(height x width: 40x60 \(6\), "
                                          r"50x50 \(3\)\); set it, e.g. data.image_size=32"):
        build(tmp_path / "mixed", tmp_path / "cache")


def test_files_that_do_not_decode_are_left_out_named_and_can_stop_the_run(make_cfg, tmp_path, caplog):
    root = tmp_path / "photos"
    write_image_folder(root, per_class=20, shape=(1, 16, 16))
    (root / "a" / "truncated.png").write_bytes(sorted((root / "a").glob("*.png"))[0].read_bytes()[:60])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "c" / "text.png").write_text("hello")
    caplog.set_level(logging.WARNING, "imgrec")
    cfg = make_cfg("data=folder", f"data.root={root}", *SMALL_NET)
    train(cfg)
    warning = [r.getMessage() for r in caplog.records if "do not decode" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith("data: 3 of 63 images do not decode and are left out: a/trunc")
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = runs(client)
    assert run.info.status == "FINISHED"
    bad = Path(client.download_artifacts(run.info.run_id, "bad_files.txt")).read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in bad) == ["a/truncated.png", "b/empty.jpg", "c/text.png"]
    with pytest.raises(SystemExit, match=r"^error: data.bad_files=error: 3 of 63 images do not decode: a/trunc"):
        cli("train", *[f"{o}" for o in (f"paths.root={tmp_path}", *FAST, "data=folder", f"data.root={root}",
                                        "data.bad_files=error")])
    assert len(runs(client)) == 1  # no run for the refused one


# -- splits ----------------------------------------------------------------------------------------------------

def test_drawn_splits_keep_each_classs_share_and_follow_the_split_seed_alone():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = holdout(labels, 0.1, 0, stratify=True, key="data.test_size")
    assert torch.bincount(labels[held]).tolist() == [5, 3, 2] and len(kept) == 90
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))
    again, other = holdout(labels, 0.1, 0, True, "k")[1], holdout(labels, 0.1, 1, True, "k")[1]
    assert torch.equal(again, held) and not torch.equal(other, held)
    _, odd = holdout(labels, 7, 0, True, "k")  # a count: the largest remainders fill it up
    assert len(odd) == 7 and torch.bincount(labels[odd], minlength=3).tolist() == [4, 2, 1]


# -- HuggingFace datasets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("parquet", [False, True])
def test_a_huggingface_dataset_gives_its_image_and_classlabel_columns_and_its_splits(tmp_path, parquet):
    write_hf_dataset(tmp_path / "hf", classes=("x", "y"), per_class=3, splits=("train", "test"), parquet=parquet)
    listing = list_dataset(load(str(tmp_path / "hf")), None, None)  # parquet: a folder of <split>.parquet files
    assert listing.class_names == ("x", "y") and np.bincount(listing.parts).tolist() == [6, 0, 6]
    image = listing.reader(0)
    assert isinstance(image, bytes) and decode(image, Preprocess((16, 16), 3)).shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="data.image_column: no column 'photo'; the columns are img, label"):
        list_dataset(load(str(tmp_path / "hf")), "photo", None)
    only_train = list_dataset(load(str(tmp_path / "hf" / "train.parquet")) if parquet else
                              load(str(tmp_path / "hf")), None, None)
    assert 0 in only_train.parts.tolist()


def test_a_missing_huggingface_dataset_is_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="data.path: no such folder or file .*nowhere, and data.download=false"):
        load(str(tmp_path / "nowhere"), download=False)


# -- end to end: a 1-channel folder and an RGB folder ----------------------------------------------------------

FOLDERS = {  # kind -> how its folder is written: class folders of PNGs, or split folders of JPEGs
    "gray": dict(classes=("ankle", "bag", "coat", "dress"), per_class=20, shape=(1, 20, 20), suffix=".png"),
    "rgb": dict(classes=("ant", "bee", "cat", "dog"), per_class=12, shape=(3, 24, 30), suffix=".jpg",
                split_folders=("train", "val", "test")),
}


@pytest.fixture(scope="module", params=list(FOLDERS))
def folder_model(request, tmp_path_factory) -> dict:
    """A small CNN trained on a folder of the kind's images (classes 0-2 of its 4: the last is unseen, for few-shot
    evaluation), its run in a project of its own."""
    kind = request.param
    home = tmp_path_factory.mktemp(f"own_{kind}")
    root = home / "photos"
    write_image_folder(root, **FOLDERS[kind])
    overrides = [f"paths.root={home}", *FAST, "data=folder", f"data.root={root}", "data.image_size=16",
                 "data.val_size=0.25", "data.augment.hflip=false", "data.classes=[0,1,2]", *SMALL_NET,
                 "trainer.max_epochs=2"]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(home)
        from imgrec.config import compose

        train(compose(overrides, home / "outputs" / "run0"))
    tracking = f"sqlite:///{home}/mlruns/mlflow.db"
    (run,) = runs(MlflowClient(tracking))
    return {"kind": kind, "home": home, "root": root, "run": run, "tracking": tracking,
            "uri": f"runs:/{run.info.run_id}", "overrides": overrides,
            "args": [f"model=runs:/{run.info.run_id}", f"paths.root={home}", f"logger.tracking_uri={tracking}"]}


def test_a_folder_run_tracks_its_source_classes_and_preprocessing(folder_model):
    client, run = MlflowClient(folder_model["tracking"]), folder_model["run"]
    assert run.info.status == "FINISHED" and "perf/train_img_per_s" in run.data.metrics
    (entry,) = run.inputs.dataset_inputs
    profile = json.loads(entry.dataset.profile)
    assert entry.dataset.name == "folder" and str(folder_model["root"]) in entry.dataset.source
    assert profile["classes"] == list(FOLDERS[folder_model["kind"]]["classes"][:3])
    channels = FOLDERS[folder_model["kind"]]["shape"][0]
    assert profile["image_shape"] == [channels, 16, 16] and profile["preprocess"]["crop_fraction"] == 0.875
    balance = list(csv.reader(io.StringIO(Path(client.download_artifacts(run.info.run_id,
                                                                           "class_balance.csv")).read_text())))
    assert balance[0] == ["class", "train", "val", "test"] and [row[0] for row in balance[1:]] == profile["classes"]
    assert sum(int(row[1]) for row in balance[1:]) == profile["train"]
    model = load_model(folder_model["uri"], folder_model["tracking"])
    assert model.class_names == tuple(profile["classes"])
    assert model.preprocess == Preprocess((16, 16), channels, 0.875, "bilinear")
    assert model.spec.data_config["root"] == str(folder_model["root"]) and model.spec.data_config["val_size"] == 0.25


def test_predict_takes_images_of_any_size_and_mode_and_answers_with_the_folders_class_names(folder_model, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGBA", (50, 37), (20, 200, 20, 128)).save(inputs / "transparent.png")
    Image.new("L", (9, 31), 200).save(inputs / "narrow.bmp")
    Image.new("CMYK", (64, 64)).save(inputs / "print.jpg")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    output = tmp_path / "predictions.csv"
    with pytest.raises(SystemExit):  # the broken file is named, and the exit status says so
        cli("predict", *folder_model["args"], f"inputs={inputs}", f"output={output}")
    rows = list(csv.DictReader(output.open()))
    assert sorted(Path(r["file"]).name for r in rows) == ["narrow.bmp", "print.jpg", "transparent.png"]
    classes = FOLDERS[folder_model["kind"]]["classes"][:3]
    assert all(r["pred"] in classes for r in rows)


def test_evaluate_export_explain_attack_and_corrupt_find_the_folder_through_the_run(folder_model, tmp_path):
    run = folder_model["run"]
    report = cli("evaluate", *folder_model["args"])
    assert report.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)
    cli("export", *folder_model["args"], "format=onnx", f"output={tmp_path / 'model.onnx'}")
    assert (tmp_path / "model.onnx").stat().st_size > 0
    explained = cli("explain", *folder_model["args"], "methods=[saliency]", "n=2")
    assert any(f.name.endswith(".png") for f in explained.figures)
    attacked = cli("attack", *folder_model["args"], "attack=[fgsm]", "eps=[0,0.03]", "n=8", "examples=2")
    assert attacked.metrics and all(0 <= v <= 1 for k, v in attacked.metrics.items() if k.endswith("acc"))
    corrupted = cli("corrupt", *folder_model["args"], "corruptions=[gaussian_noise,pixelate]", "severity=[1]", "n=8")
    assert 0 <= corrupted.metrics["corrupt/mca"] <= 1


def test_fewshot_asks_about_the_folders_class_the_model_never_saw(folder_model):
    report = cli("fewshot", *folder_model["args"], "data.classes=[2,3]", "allow_seen=true", "ways=2", "shots=[1]",
                 "queries=1", "episodes=5")
    assert 0 <= report.metrics["fewshot/2way_1shot_acc"] <= 1


def test_compress_fine_tunes_on_the_runs_own_splits_and_augmentation(folder_model):
    report = cli("compress", *folder_model["args"], "prune=0.5", "finetune_epochs=1", "latency_calls=2")
    client = MlflowClient(folder_model["tracking"])
    (pruned,) = [r for r in runs(client) if r.data.tags.get("imgrec.role") == "compressed"]
    params, source = pruned.data.params, folder_model["run"].data.params
    for key in ("data.root", "data.val_size", "data.augment.hflip", "data.image_size", "data.classes",
                "data.augment.random_resized_crop.scale"):
        assert params[key] == source[key], key
    assert report.made.startswith("runs:/")


def test_cv_sweep_and_compare_train_on_the_folder(folder_model, tmp_path):
    store = f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    common = [o for o in folder_model["overrides"] if not o.startswith("paths.root")] + [f"paths.root={tmp_path}", store]
    cv = cli("cv", "folds=2", *common)
    assert "mean ± std" in cv.markdown()
    cli("sweep", "sweep=loss", "sweep.n_trials=2", "sweep.study_name=own", *common)
    compared = cli("compare", f"paths.root={tmp_path}", store, "experiment=imgrec", "group_by=recipe")
    client = MlflowClient(store.split("=", 1)[1])
    trained = [r for r in runs(client) if "test/acc" in r.data.metrics]
    assert len(trained) == 4 and all(r.data.params["data.root"] == str(folder_model["root"]) for r in trained)
    assert compared.tables[0].rows  # the groups it compared


def test_serve_takes_image_files_and_refuses_what_does_not_decode(folder_model):
    import mlflow
    from fastapi.testclient import TestClient

    from imgrec.deploy.server import app_for
    from imgrec.verbs.serve import served_uri

    mlflow.set_tracking_uri(folder_model["tracking"])
    app = app_for(served_uri(folder_model["uri"], folder_model["tracking"]), max_body_mb=5, precision="32-true")
    client = TestClient(app)
    buffer = io.BytesIO()
    Image.new("RGB", (41, 23), (250, 10, 10)).save(buffer, "JPEG")
    answer = client.post("/invocations", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    classes = FOLDERS[folder_model["kind"]]["classes"][:3]
    assert answer.status_code == 200 and answer.json()["predictions"][0]["pred"] in classes
    batch = {"images": [base64.b64encode(buffer.getvalue()).decode()] * 2}
    answer = client.post("/invocations", json=batch)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
    refused = client.post("/invocations", content=b"GIF89a broken", headers={"Content-Type": "image/gif"})
    assert refused.status_code == 400 and "not an image Pillow can read" in refused.json()["message"]
    flat = client.post("/invocations", json={"inputs": np.random.rand(2000).tolist()})
    assert flat.status_code == 422


def test_the_logged_model_refuses_malformed_input_on_every_serving_path(folder_model):
    """The pyfunc checks its own input: MLflow's scoring app alone (as `mlflow models serve` runs it) answers 4xx."""
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    from imgrec.verbs.serve import served_uri

    mlflow.set_tracking_uri(folder_model["tracking"])
    model = mlflow.pyfunc.load_model(served_uri(folder_model["uri"], folder_model["tracking"]))
    client = TestClient(scoring_server.init(model))
    channels = FOLDERS[folder_model["kind"]]["shape"][0]
    good = client.post("/invocations", json={"inputs": np.random.rand(2, channels, 16, 16).tolist()})
    assert good.status_code == 200
    for body in ({"inputs": np.random.rand(20_000).tolist()}, {"inputs": (np.random.rand(1, channels, 16, 16) * 255).tolist()},
                 {"inputs": [[["a"]]]}):
        answer = client.post("/invocations", json=body)
        assert 400 <= answer.status_code < 500, answer.text[:200]


def test_transfer_fine_tunes_a_folder_models_backbone_on_another_folder_at_another_size(folder_model, tmp_path):
    other = tmp_path / "other"
    write_image_folder(other, classes=("p", "q"), per_class=40, shape=(3, 28, 28))
    cfg_args = [f"paths.root={folder_model['home']}", *FAST, "data=folder", f"data.root={other}", "data.image_size=20",
                "model=transfer", f"model.backbone.checkpoint={folder_model['uri']}",
                f"logger.tracking_uri={folder_model['tracking']}"]
    cli("train", *cfg_args)
    client = MlflowClient(folder_model["tracking"])
    transferred = [r for r in runs(client) if r.data.tags.get("imgrec.choice.model") == "transfer"]
    assert transferred and transferred[-1].info.status == "FINISHED"
    model = load_model(f"runs:/{transferred[-1].info.run_id}", folder_model["tracking"])
    assert model.class_names == ("p", "q") and model.spec.in_shape == (3, 20, 20)


def test_a_huggingface_dataset_trains_and_evaluates(make_cfg, tmp_path):
    write_hf_dataset(tmp_path / "hf", per_class=20, shape=(1, 16, 16), splits=("train", "test"))
    cfg = make_cfg("data=hf", f"data.path={tmp_path / 'hf'}", *SMALL_NET)
    train(cfg)
    (run,) = runs(MlflowClient(cfg.logger.tracking_uri))
    assert run.info.status == "FINISHED" and run.inputs.dataset_inputs[0].dataset.name == "hf"
    report = cli("evaluate", f"model=runs:/{run.info.run_id}", f"paths.root={tmp_path}",
                 f"logger.tracking_uri={cfg.logger.tracking_uri}")
    assert report.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("gray", [True, False])
def test_real_photographs_train_predict_and_explain(make_cfg, tmp_path, gray):
    """scikit-image's and scikit-learn's sample photos, cropped into classes at their own sizes."""
    root = tmp_path / "photos"
    classes = write_photo_folder(root, gray=gray, per_class=12, size=48)
    cfg = make_cfg("data=folder", f"data.root={root}", "data.image_size=32", *SMALL_NET, "trainer.max_epochs=3",
                   "trainer.limit_train_batches=null", "data.val_size=0.2")
    train(cfg)
    (run,) = runs(MlflowClient(cfg.logger.tracking_uri))
    args = [f"model=runs:/{run.info.run_id}", f"paths.root={tmp_path}", f"logger.tracking_uri={cfg.logger.tracking_uri}"]
    report = cli("predict", *args, f"inputs={root / classes[0]}")
    assert {row["pred"] for row in report.sections[0].table.rows} <= set(classes)
    explained = cli("explain", *args, "methods=[saliency,integrated_gradients]", "n=3")
    assert explained.figures


@pytest.mark.slow
def test_two_ddp_ranks_train_on_a_folder_from_one_cache(tmp_path):
    from tests.conftest import train_py

    root = tmp_path / "photos"
    write_image_folder(root, per_class=30, shape=(1, 16, 16))
    done = train_py("trainer=ddp_cpu", "data=folder", f"data.root={root}", *FAST, *SMALL_NET, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    assert len([p for p in (tmp_path / "data" / "cache").glob("photos-*") if p.is_dir()]) == 1  # one cache
    assert done.stderr.count("decoded 90 images") + done.stdout.count("decoded 90 images") == 1
