"""Reading single files: palette indices not colors, RGB masks refused, errors name the file."""

import numpy as np
import pytest
from PIL import Image

from segexp.data.files import (
    CorruptFileError,
    DataFileError,
    check_labels,
    label_counts,
    read_image,
    read_mask,
)
from segexp.data.palettes import bit_palette
from tests.fakedata import save_image, save_mask


def test_palette_png_mask_gives_indices_not_colors(tmp_path):
    mask = np.array([[0, 1, 2], [255, 1, 0]])
    save_mask(tmp_path / "m.png", mask, bit_palette(256))
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


def test_gray_and_16_bit_masks_keep_their_values(tmp_path):
    mask = np.array([[0, 4], [255, 2]])
    save_mask(tmp_path / "gray.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "gray.png"), mask)
    Image.fromarray(np.array([[0, 300], [2, 1]], dtype=np.uint16)).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "wide.png"), [[0, 300], [2, 1]])


def test_color_rgb_mask_is_refused_but_gray_saved_as_rgb_is_read(tmp_path):
    colored = np.zeros((4, 4, 3), np.uint8)
    colored[:2] = (128, 0, 0)
    save_image(tmp_path / "rgb.png", colored)
    with pytest.raises(DataFileError, match="rgb.png.*color") as caught:
        read_mask(tmp_path / "rgb.png")
    assert caught.value.kind == "rgb_mask"
    gray = np.repeat(np.array([[0, 1], [2, 1]], np.uint8)[..., None], 3, axis=-1)
    save_image(tmp_path / "gray_rgb.png", gray)
    np.testing.assert_array_equal(read_mask(tmp_path / "gray_rgb.png"), [[0, 1], [2, 1]])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_images_of_each_format_read_as_rgb(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    save_image(tmp_path / f"i{suffix}", image)
    read = read_image(tmp_path / f"i{suffix}")
    assert read.shape == (8, 12, 3) and read.dtype == np.uint8
    if suffix != ".jpg":
        np.testing.assert_array_equal(read, image)


def test_truncated_and_garbage_files_raise_naming_the_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    save_image(tmp_path / "full.jpg", image)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("cut.jpg", "junk.png", "absent.png"):
        with pytest.raises(CorruptFileError, match=name):
            read_image(tmp_path / name)


def test_labels_outside_the_classes_are_named_with_the_file(tmp_path):
    mask = np.array([[0, 4, 255], [7, 1, 9]])
    with pytest.raises(DataFileError, match=r"m\.png.*7, 9") as caught:
        check_labels(tmp_path / "m.png", mask, num_classes=5, ignore_index=255)
    assert caught.value.kind == "bad_label"
    check_labels(tmp_path / "m.png", np.array([[0, 4, 255]]), num_classes=5, ignore_index=255)


def test_label_counts_match_numpy_and_skip_ignored():
    mask = np.random.default_rng(3).choice([0, 1, 2, 255], size=(30, 40))
    expected = [int((mask == c).sum()) for c in range(4)]
    assert label_counts(mask, 4).tolist() == expected[:3] + [0]
