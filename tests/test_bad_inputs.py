"""Bad input files refused (or skipped) before a run opens, each named in one line: images over
the pixel limit, names that are not UTF-8, EXIF-rotated JPEGs, 1-bit masks, splits without any
class label, size mismatches in any split; predict goes on past a bad image, export to a
read-only place is one line."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from segexp.check import check_dataset
from segexp.data.checks import scan_split
from segexp.data.files import CorruptFileError, DataFileError, image_size, read_image, read_mask
from segexp.data.folder import load_folder
from segexp.data.layout import pair_by_stem
from segexp.data.load import class_histograms, load_dataset
from segexp.data.samples import FileProblems
from segexp.errors import SegexpError
from tests.conftest import compose_config, run_segexp
from tests.fakedata import make_folder_tree, save_image, save_mask

BAD_NAME = os.fsdecode(b"\xff.png")  # a name Linux allows but that is not UTF-8


def _command(module: str, args: list[str], cwd: Path, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", f"segexp.{module}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **(env or {})},
    )  # fmt: skip


def _folder_cfg(root: Path, *overrides: str):
    return compose_config(
        "train", "dataset=folder", f"dataset.root={root}", "dataset.num_classes=3",
        "trainer.batch_size=2", *overrides,
    )  # fmt: skip


def _rotated_jpeg(path: Path) -> None:
    """A 48x32 (w x h) JPEG, dark left and bright right, whose EXIF says: turn it 90 degrees
    clockwise (orientation 6), so it shows 32 wide and 48 tall, dark on top."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, 24:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes())


def _one_bit_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(bool)).save(path)
    assert Image.open(path).mode == "1"


def test_an_image_over_the_pixel_limit_is_named_with_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save_image(tmp_path / "warns.png", np.zeros((40, 48, 3), np.uint8))  # Pillow only warns
    save_image(tmp_path / "fails.png", np.zeros((64, 64, 3), np.uint8))  # Pillow refuses
    for name, pixels in (("warns.png", "1,920"), ("fails.png", "4,096")):
        for read in (read_image, image_size):
            with pytest.raises(CorruptFileError) as caught:
                read(tmp_path / name)
            assert caught.value.kind == "too_large"
            assert str(caught.value) == (
                f"{tmp_path / name}: {pixels} pixels is over the image size limit of 1,000 pixels"
                " (Pillow's decompression-bomb guard; set SEGEXP_MAX_IMAGE_PIXELS=<pixels> to "
                "allow larger images)"
            )


def test_training_start_refuses_a_too_large_image_or_skips_it_with_skip_corrupt(
    tmp_path, monkeypatch
):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 3, "val": 1})
    big = root / "train" / "images" / "001.png"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 48)
    save_image(big, np.zeros((41, 48, 3), np.uint8))  # one row over the limit
    dataset = load_dataset(_folder_cfg(root))
    with pytest.raises(DataFileError, match=f"^{big}: 1,968 pixels is over .* 1,920 pixels"):
        class_histograms(dataset, skip_corrupt=False, problems=FileProblems())
    problems = FileProblems()
    class_histograms(dataset, skip_corrupt=True, problems=problems)
    assert list(problems.skipped) == [big] and "image size limit" in problems.skipped[big]


def test_a_name_that_is_not_utf8_is_left_out_and_refused_in_one_line_or_skipped(tmp_path):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 3, "val": 1})
    image, mask = np.zeros((40, 48, 3), np.uint8), np.zeros((40, 48), np.uint8)
    save_image(root / "train" / "images" / BAD_NAME, image)
    save_mask(root / "train" / "masks" / BAD_NAME, mask)
    split = load_folder(str(root), 3, None, None, 255, []).split("train")
    assert len(split) == 3 and all(str(p).isprintable() for p in (*split.images, *split.masks))
    assert {p.name for p in split.bad_names} == {BAD_NAME}
    with pytest.raises(SegexpError) as caught:
        load_dataset(_folder_cfg(root))
    assert str(caught.value) == (
        f"{root / 'train' / 'images'}: file name b'\\xff.png' is not valid UTF-8: rename it "
        "(and 1 more such names), or set dataset.skip_corrupt=true to leave such files out"
    )
    dataset = load_dataset(_folder_cfg(root, "dataset.skip_corrupt=true"))
    problems = FileProblems()
    class_histograms(dataset, skip_corrupt=True, problems=problems)
    assert sorted(map(str, problems.skipped)) == [
        f"{root}/train/images/\\xff.png",
        f"{root}/train/masks/\\xff.png",
    ]


def test_exif_rotated_jpeg_is_read_turned_and_matches_its_mask(tmp_path):
    from segexp.data.samples import PairReader

    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 2, "val": 1})
    photo, mask_path = root / "train" / "images" / "009.jpg", root / "train" / "masks" / "009.png"
    _rotated_jpeg(photo)
    save_mask(mask_path, np.ones((48, 32), np.uint8))  # the shown size: 32 wide, 48 tall
    pixels = read_image(photo)
    assert pixels.shape == (48, 32, 3) and image_size(photo) == (48, 32)
    assert pixels[:20].mean() < 30 and pixels[28:].mean() > 225  # dark on top: turned clockwise
    dataset = load_folder(str(root), 3, None, None, 255, [])
    for reads in ("decode", "header"):
        assert scan_split("train", dataset.split("train"), dataset, images=reads).findings == []
    image, mask = PairReader(3, 255, False, FileProblems()).read(photo, mask_path)
    assert image.shape[:2] == mask.shape == (48, 32)


def test_one_bit_png_masks_are_read_as_labels_0_and_1(tmp_path):
    root = make_folder_tree(tmp_path / "data", num_classes=2, counts={"train": 1, "val": 1})
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 5:30] = 1
    _one_bit_mask(root / "train" / "masks" / "000.png", mask)
    read = read_mask(root / "train" / "masks" / "000.png")
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, mask)
    dataset = load_folder(str(root), 2, None, None, 255, [])
    scan = scan_split("train", dataset.split("train"), dataset)
    assert scan.findings == [] and scan.histogram.tolist() == [40 * 48 - 250, 250]


def test_a_split_whose_masks_are_all_ignore_index_is_refused_naming_split_and_index(
    tmp_path, capsys
):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 2, "val": 2})
    for path in (root / "val" / "masks").iterdir():
        save_mask(path, np.full((40, 48), 255))
    dataset = load_dataset(_folder_cfg(root))
    with pytest.raises(SegexpError) as caught:
        class_histograms(dataset, skip_corrupt=True, problems=FileProblems())
    message = (
        "no mask pixel holds a class label 0..2: every readable pixel is the ignore index 255 "
        "(or invalid), so the split has nothing to train on or score"
    )
    assert str(caught.value) == f"dataset folder, split val: {message}"
    cfg = compose_config("check", "dataset=folder", f"dataset.root={root}", "dataset.num_classes=3")
    assert check_dataset(cfg, tmp_path / "out") == 1
    assert f"  [val] no_labels: {message}" in capsys.readouterr().out.splitlines()


def test_a_mask_one_pixel_off_is_found_at_training_start_in_every_split(tmp_path):
    root = make_folder_tree(
        tmp_path / "data", num_classes=3, counts={"train": 2, "val": 2, "test": 1}
    )
    dataset = load_folder(str(root), 3, None, None, 255, [])
    test = pair_by_stem(root / "test" / "images", root / "test" / "masks", (".png",), (".png",))
    dataset = replace(dataset, splits={**dataset.splits, "test": test})
    for split in ("val", "test"):
        off = root / split / "masks" / "000.png"
        save_mask(off, np.zeros((40, 47), np.uint8))
        with pytest.raises(DataFileError) as caught:
            class_histograms(dataset, skip_corrupt=True, problems=FileProblems())
        assert caught.value.kind == "size_mismatch"
        assert str(caught.value) == (
            f"{off}: mask is 47x40 but its image 000.png is 48x40 (width x height)"
        )
        save_mask(off, np.zeros((40, 48), np.uint8))
    class_histograms(dataset, skip_corrupt=False, problems=FileProblems())  # all fixed: passes


@pytest.mark.subprocess
def test_check_cli_names_bad_inputs_in_one_line_each_and_exits_1(tmp_path):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 3, "val": 2})
    train = root / "train"
    save_image(train / "images" / BAD_NAME, np.zeros((40, 48, 3), np.uint8))
    save_mask(train / "masks" / BAD_NAME, np.zeros((40, 48), np.uint8))
    _rotated_jpeg(train / "images" / "rot.jpg")
    save_mask(train / "masks" / "rot.png", np.ones((48, 32), np.uint8))
    _one_bit_mask(train / "masks" / "000.png", np.ones((40, 48), np.uint8))
    save_image(train / "images" / "big.png", np.zeros((60, 60, 3), np.uint8))
    save_mask(train / "masks" / "big.png", np.zeros((60, 60), np.uint8))
    for path in (root / "val" / "masks").iterdir():
        save_mask(path, np.full((40, 48), 255))
    done = _command(
        "check",
        ["dataset=folder", f"dataset.root={root}", "dataset.num_classes=3",
         f"hydra.run.dir={tmp_path / 'out'}"],
        tmp_path, env={"SEGEXP_MAX_IMAGE_PIXELS": "2500"},
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "Traceback" not in done.stderr and "DecompressionBomb" not in done.stderr
    assert "5 problem(s): 2 bad_name, 2 too_large, 1 no_labels" in out
    lines = out.splitlines()
    assert (
        f"  [train] bad_name: {train / 'images'}: file name b'\\xff.png' is not valid "
        "UTF-8: rename it" in lines
    )
    assert (
        f"  [train] too_large: {train / 'images' / 'big.png'}: 3,600 pixels is over the "
        "image size limit of 2,500 pixels (Pillow's decompression-bomb guard; set "
        "SEGEXP_MAX_IMAGE_PIXELS=<pixels> to allow larger images)" in lines
    )
    assert any(line.startswith("  [val] no_labels: no mask pixel") for line in lines)
    assert "rot." not in out and "000.png" not in out  # EXIF-turned JPEG and 1-bit mask: fine


@pytest.mark.slow
def test_training_stops_before_any_run_on_a_val_mask_one_pixel_off(tmp_path):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 2, "val": 2})
    off = root / "val" / "masks" / "001.png"
    save_mask(off, np.zeros((39, 48), np.uint8))
    done = run_segexp(
        ["backbone=tiny", "image_size=64", "aspp.filters=16", "trainer.epochs=1",
         "trainer.batch_size=2", "dataset=folder", f"dataset.root={root}",
         "dataset.num_classes=3", "tracking.experiment=off", f"hydra.run.dir={tmp_path / 'o'}"],
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {off}: mask is 48x39 but its image 001.png is 48x40 (width x height)"
    ]
    assert "Traceback" not in done.stderr and "Epoch 1" not in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("off")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


@pytest.mark.subprocess
def test_predict_names_each_bad_image_goes_on_and_exits_1(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(20, 1)])
    model.save(tmp_path / "m.keras")
    images = tmp_path / "in"
    images.mkdir()
    save_image(images / "a.png", np.zeros((40, 48, 3), np.uint8))
    (images / "b.png").write_bytes(b"not an image")
    save_image(images / "c.jpg", np.zeros((33, 41, 3), np.uint8))
    save_image(images / BAD_NAME, np.zeros((40, 48, 3), np.uint8))
    out = tmp_path / "out"
    done = _command(
        "predict",
        [f"model={tmp_path / 'm.keras'}", f"input={images}", f"output={out}", "image_size=32",
         f"hydra.run.dir={tmp_path / 'h'}"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {images / 'b.png'}: not an image file Pillow can identify",
        f"error: {images}/\\xff.png: file name b'\\xff.png' is not valid UTF-8: rename it",
        f"error: 2 of 4 image(s) could not be read (named above); the other 2 were written "
        f"to {out}",
    ]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}_{kind}.png"
        for stem in "ac"
        for kind in ("color", "confidence", "label", "overlay")
    ]


@pytest.mark.subprocess
def test_export_to_a_read_only_place_is_one_error_line(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"never loaded: the output is checked first")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    # root writes into a mode-555 folder anyway; sysfs refuses new entries even to root
    target = (Path("/sys") if os.geteuid() == 0 else read_only) / "segexp-export" / "m.keras"
    try:
        done = _command(
            "export",
            [
                f"model={tmp_path / 'm.keras'}",
                f"output={target}",
                f"hydra.run.dir={tmp_path / 'h'}",
            ],
            tmp_path,
        )
    finally:
        read_only.chmod(0o755)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: output={target} cannot be written: ")
    assert errors[0].endswith(f"({target.parent})") and not target.parent.exists()
