"""Dataset loaders on trees the tests write: CIHP, keras.io split, folder, VOC, layout errors."""

import numpy as np
import pytest

from segexp.data.cihp import load_cihp
from segexp.data.files import read_mask
from segexp.data.folder import load_folder
from segexp.data.layout import LayoutError
from segexp.data.palettes import CIHP_PALETTE
from segexp.data.registry import build_dataset
from segexp.data.voc import load_voc
from tests.fakedata import make_cihp_tree, make_folder_tree, make_voc_tree, save_image

CIHP_NAMES = [f"c{i}" for i in range(20)]
CIHP_ARGS = dict(class_names=CIHP_NAMES, colormap="cihp", ignore_index=255, flip_pairs=[])


def test_cihp_reads_training_and_validation_with_caps_and_mat_colormap(tmp_path):
    root = make_cihp_tree(tmp_path, num_train=6, num_val=4)
    data = load_cihp(str(root), max_train=5, max_val=None, val_folder="Validation", **CIHP_ARGS)
    train, val = data.split("train"), data.split("val")
    assert [p.name for p in train.images] == [f"{i:07d}.jpg" for i in range(5)]
    assert [p.parent.parent.name for p in val.masks] == ["Validation"] * 4
    assert all(i.stem == m.stem for i, m in zip(train.images, train.masks, strict=True))
    np.testing.assert_array_equal(data.colormap, np.asarray(CIHP_PALETTE, np.uint8))


def test_cihp_colormap_comes_from_the_mat_file_when_present(tmp_path):
    import scipy.io

    root = make_cihp_tree(tmp_path, num_train=2, num_val=1, mat=False)
    colors = np.random.default_rng(0).uniform(0, 1, size=(20, 3))
    scipy.io.savemat(str(root / "human_colormap.mat"), {"colormap": colors})
    data = load_cihp(str(root), None, None, "Validation", **CIHP_ARGS)
    np.testing.assert_array_equal(data.colormap, np.round(colors * 255).astype(np.uint8))
    (root / "human_colormap.mat").unlink()
    fallback = load_cihp(str(root), None, None, "Validation", **CIHP_ARGS)
    np.testing.assert_array_equal(fallback.colormap, np.asarray(CIHP_PALETTE, np.uint8))


def test_keras_io_split_takes_files_0_to_999_and_1000_to_1049(tmp_path):
    images, masks = tmp_path / "Training" / "Images", tmp_path / "Training" / "Category_ids"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(1060):  # only names matter here: the loader pairs files, it does not decode
        (images / f"{i:07d}.jpg").write_bytes(b"")
        (masks / f"{i:07d}.png").write_bytes(b"")
    data = load_cihp(str(tmp_path), 1000, 50, "Training", **CIHP_ARGS)
    assert [int(p.stem) for p in data.split("train").images] == list(range(1000))
    assert [int(p.stem) for p in data.split("val").images] == list(range(1000, 1050))
    assert [int(p.stem) for p in data.split("val").masks] == list(range(1000, 1050))


def test_folder_pairs_by_stem_reports_unmatched_and_reads_palette_masks(tmp_path):
    root = make_folder_tree(tmp_path, num_classes=3, counts={"train": 4, "val": 2})
    save_image(root / "train" / "images" / "lonely.jpg", np.zeros((4, 4, 3), np.uint8))
    (root / "val" / "masks" / "orphan.png").write_bytes(b"")
    data = load_folder(str(root), 3, None, None, 255, [])
    assert data.class_names == ("class_0", "class_1", "class_2")
    assert data.colormap.shape == (3, 3)
    train = data.split("train")
    assert len(train) == 4 and [p.name for p in train.unmatched_images] == ["lonely.jpg"]
    assert [p.name for p in data.split("val").unmatched_masks] == ["orphan.png"]
    assert set(np.unique(read_mask(train.masks[0]))) <= {0, 1, 2, 255}


def test_folder_binary_dataset_composes_through_the_registry(tmp_path, compose_train):
    make_folder_tree(tmp_path, num_classes=2, counts={"train": 3, "val": 1})
    cfg = compose_train("dataset=folder", f"dataset.root={tmp_path}", "dataset.num_classes=2")
    data = build_dataset(cfg.dataset)
    assert data.num_classes == 2 and len(data.split("train")) == 3


def test_voc_follows_split_lists_and_keeps_the_void_border(tmp_path):
    root = make_voc_tree(tmp_path, train=["2007_000032", "2007_000039"], val=["2007_000063"])
    data = load_voc(str(root), [f"v{i}" for i in range(21)], "voc", 255, [])
    assert [p.stem for p in data.split("train").images] == ["2007_000032", "2007_000039"]
    mask = read_mask(data.split("val").masks[0])
    assert set(np.unique(mask)) <= {0, 1, 15, 255} and (mask[0] == 255).all()
    assert data.colormap[15].tolist() == [192, 128, 128]  # VOC's 'person' color


def test_voc_list_naming_a_missing_file_is_reported(tmp_path):
    root = make_voc_tree(tmp_path, train=["a", "b"], val=["c"])
    (root / "SegmentationClass" / "b.png").unlink()
    data = load_voc(str(root), [f"v{i}" for i in range(21)], "voc", 255, [])
    assert len(data.split("train")) == 1
    assert [p.name for p in data.split("train").missing] == ["b.png"]


@pytest.mark.parametrize(
    ("loader", "expected"),
    [
        (lambda r: load_folder(r, 3, None, None, 255, []), "train"),
        (lambda r: load_cihp(r, None, None, "Validation", **CIHP_ARGS), "Training"),
        (lambda r: load_voc(r, [str(i) for i in range(21)], "voc", 255, []), "JPEGImages"),
    ],
)
def test_missing_folders_raise_naming_the_path_and_the_layout(tmp_path, loader, expected):
    with pytest.raises(LayoutError, match=f"{tmp_path / 'nope'} does not exist; expected layout"):
        loader(str(tmp_path / "nope"))
    tmp_path.joinpath("nope").mkdir()
    with pytest.raises(LayoutError, match=f"{expected}.* does not exist; expected layout"):
        loader(str(tmp_path / "nope"))


def test_asking_for_a_split_the_dataset_lacks_names_the_ones_it_has(tmp_path):
    from segexp.errors import SegexpError

    root = make_folder_tree(tmp_path, num_classes=2, counts={"train": 1, "val": 1})
    data = load_folder(str(root), 2, None, None, 255, [])
    with pytest.raises(SegexpError, match="split=test is not allowed: .* train, val"):
        data.split("test")
