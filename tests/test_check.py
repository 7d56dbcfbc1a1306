"""`python -m segexp.check`: finds each planted fault and exits 1; a clean tree exits 0."""

import subprocess
import sys

import numpy as np
import pytest

from segexp.data.checks import dataset_digest, layout_findings, scan_split
from segexp.data.folder import load_folder
from tests.fakedata import make_folder_tree, save_image, save_mask


def run_check(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "segexp.check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def faulty_tree(tmp_path):
    """A 5-class folder dataset with one of each fault planted."""
    root = make_folder_tree(tmp_path / "data", num_classes=5, counts={"train": 6, "val": 3})
    train = root / "train"
    save_image(train / "images" / "no_mask.jpg", np.zeros((8, 8, 3), np.uint8))  # unmatched
    (train / "images" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt
    mask = np.zeros((40, 48), np.uint8)
    mask[5:9, 5:9] = 7
    save_mask(train / "masks" / "004.png", mask)  # label 7 in a 5-class set
    colored = np.zeros((40, 48, 3), np.uint8)
    colored[:, :20] = (128, 0, 0)
    save_image(root / "val" / "masks" / "001.png", colored)  # RGB mask
    save_mask(root / "val" / "masks" / "002.png", np.zeros((10, 10), np.uint8))  # wrong size
    return root


def test_checker_names_each_planted_fault_and_exits_1(tmp_path, faulty_tree):
    done = run_check(
        [
            "dataset=folder",
            f"dataset.root={faulty_tree}",
            "dataset.num_classes=5",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "unmatched_image" in out and "no_mask.jpg" in out
    assert "unreadable" in out and "003.png" in out
    assert "bad_label" in out and "004.png" in out and "label value(s) 7" in out
    assert "rgb_mask" in out and "val/masks/001.png" in out
    assert "size_mismatch" in out and "val/masks/002.png" in out
    assert "5 problem(s)" in out
    assert (tmp_path / "out" / "class_histogram.png").stat().st_size > 0


def test_checker_exits_0_on_a_clean_tree_and_prints_counts_and_histogram(tmp_path):
    root = make_folder_tree(tmp_path / "data", num_classes=3, counts={"train": 4, "val": 2})
    done = run_check(
        [
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.num_classes=3",
            "dataset.class_names=[sky,road,car]",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no problems found" in done.stdout
    assert any(line.split()[:3] == ["train", "4", "0"] for line in done.stdout.splitlines())
    # The histogram rows equal an independent count over the masks.
    data = load_folder(str(root), 3, None, None, 255, [])
    from PIL import Image

    masks = [np.asarray(Image.open(p)) for p in data.split("train").masks]
    road = sum(int((m == 1).sum()) for m in masks)
    row = next(line for line in done.stdout.splitlines() if line.split()[1:2] == ["road"])
    assert row.split()[2] == f"{road:,}"


def test_checker_reports_a_missing_root_in_one_line(tmp_path):
    done = run_check(
        [
            "dataset=folder",
            f"dataset.root={tmp_path / 'absent'}",
            "dataset.num_classes=3",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'absent'} does not exist; expected layout: "
        "ROOT/train/images/ and ROOT/train/masks/, the same under ROOT/val/; images png/jpg/"
        "jpeg/bmp/tif, masks single-channel or palette PNGs with the image's file stem"
    ]


def test_scan_histogram_matches_numpy(tmp_path):
    root = make_folder_tree(tmp_path, num_classes=4, counts={"train": 3, "val": 1})
    data = load_folder(str(root), 4, None, None, 255, [])
    scan = scan_split("train", data.split("train"), data)
    from PIL import Image

    masks = np.concatenate([np.asarray(Image.open(p)).ravel() for p in data.split("train").masks])
    assert scan.histogram.tolist() == [int((masks == c).sum()) for c in range(4)]
    assert scan.findings == [] and layout_findings(data) == []


def test_digest_changes_when_a_file_changes(tmp_path):
    root = make_folder_tree(tmp_path, num_classes=2, counts={"train": 2, "val": 1})
    before = dataset_digest(load_folder(str(root), 2, None, None, 255, []))
    assert before == dataset_digest(load_folder(str(root), 2, None, None, 255, []))
    save_mask(root / "val" / "masks" / "000.png", np.ones((40, 48), np.uint8))
    assert dataset_digest(load_folder(str(root), 2, None, None, 255, [])) != before
