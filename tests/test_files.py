"""Reading single files: palette indices not colors, RGB masks refused, errors name the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segexp.data.files import (
    CorruptFileError,
    DataFileError,
    check_labels,
    image_size,
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


def test_label_counts_of_negative_and_too_large_values_count_only_classes():
    """Signed masks (a 32-bit 'I' PNG can hold -1) take the slow path: the same counts."""
    rng = np.random.default_rng(5)
    mask = rng.choice([-1, 0, 1, 2, 3, 4, 9], size=(20, 30))  # 4 classes: 0..3
    expected = [int((mask == c).sum()) for c in range(4)]
    counts = label_counts(mask, 4)
    assert counts.dtype == np.int64 and counts.tolist() == expected
    assert label_counts(np.array([[1, 1]]), 4).tolist() == [0, 2, 0, 0]  # min 1: fast path
    assert label_counts(np.zeros((0, 0), np.int32), 3).tolist() == [0, 0, 0]


def test_each_unreadable_file_says_what_is_wrong_with_it(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    save_image(tmp_path / "full.jpg", image)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    expected = {
        "absent.png": "file does not exist",
        "junk.png": "not an image file Pillow can identify",
        "cut.jpg": "cannot decode (",
    }
    for name, detail in expected.items():
        for read in (read_image, read_mask):
            with pytest.raises(CorruptFileError) as caught:
                read(tmp_path / name)
            err = caught.value
            assert (err.path, err.kind) == (tmp_path / name, "unreadable")
            assert err.detail.startswith(detail) and str(err) == f"{tmp_path / name}: {err.detail}"
    with pytest.raises(CorruptFileError, match="file does not exist"):
        image_size(tmp_path / "absent.png")


def test_image_size_reads_the_header_as_read_image_turns_it(tmp_path):
    """(height, width) as read_image returns them: a JPEG or PNG whose EXIF turns it a quarter
    (orientation 6) reports them swapped; a plain PNG, or a half turn (3), does not."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    cases = [(".jpg", 6, (48, 32)), (".png", 6, (48, 32)), (".jpg", 3, (32, 48)),
             (".png", None, (32, 48))]  # fmt: skip
    for suffix, orientation, shown in cases:
        path = tmp_path / f"{orientation}{suffix}"
        exif = Image.Exif()
        if orientation:
            exif[0x0112] = orientation
        Image.fromarray(pixels).save(path, exif=exif.tobytes())
        assert image_size(path) == shown, path.name
        assert read_image(path).shape[:2] == shown, path.name


@pytest.mark.parametrize(
    ("name", "mode", "values"),
    [
        ("wide.png", "I;16", np.array([[0, 250], [500, 1000]], np.uint16)),
        ("dim.png", "I;16", np.array([[0, 100], [7, 200]], np.uint16)),  # under 255: kept
        ("wide_big_endian.tif", "I;16B", np.array([[0, 250], [500, 1000]], np.uint16)),
        ("signed.tif", "I", np.array([[-100, 250], [500, 1000]], np.int32)),  # -100 -> 0
        ("float.tif", "F", np.array([[0.5, 25.0], [300.0, 600.0]], np.float32)),
    ],
)
def test_wide_gray_images_are_scaled_to_8_bits_by_their_peak(tmp_path, name, mode, values):
    if mode == "I;16B":
        Image.frombytes(mode, (2, 2), values.astype(">u2").tobytes()).save(tmp_path / name)
    else:
        Image.fromarray(values).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    read = read_image(tmp_path / name)
    scale = 255 / max(float(values.max()), 255)
    expected = np.clip(values.astype(np.float64) * scale, 0, 255).astype(np.uint8)
    assert read.shape == (2, 2, 3) and read.dtype == np.uint8
    np.testing.assert_array_equal(read, np.repeat(expected[..., None], 3, axis=-1))


def test_gray_and_palette_images_read_as_three_equal_or_palette_channels(tmp_path):
    gray = np.array([[0, 80], [160, 255]], np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.dstack([gray] * 3))
    palette = bit_palette(256)
    save_mask(tmp_path / "palette.png", np.array([[0, 1], [2, 3]]), palette)
    read = read_image(tmp_path / "palette.png")
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, np.asarray(palette, np.uint8)[[[0, 1], [2, 3]]])


def test_a_label_error_shows_eight_values_at_most():
    eight, nine = np.arange(10, 18), np.arange(10, 19)
    with pytest.raises(DataFileError) as caught:
        check_labels(Path("m.png"), eight, num_classes=5, ignore_index=255)
    assert caught.value.detail == (
        "label value(s) 10, 11, 12, 13, 14, 15, 16, 17 outside the classes 0..4 and ignore "
        "index 255 (check dataset.num_classes)"
    )
    with pytest.raises(DataFileError, match=r"value\(s\) 10, 11, 12, 13, 14, 15, 16, 17, \.\.\. "):
        check_labels(Path("m.png"), nine, num_classes=5, ignore_index=255)


def test_masks_of_other_modes_are_refused_naming_the_mode(tmp_path):
    Image.new("CMYK", (4, 3)).save(tmp_path / "cmyk.jpg")
    with pytest.raises(DataFileError) as caught:
        read_mask(tmp_path / "cmyk.jpg")
    assert caught.value.kind == "rgb_mask"
    assert str(caught.value) == f"{tmp_path / 'cmyk.jpg'}: has image mode CMYK, not a class-id mask"
    gray = np.array([[0, 3], [1, 2]], np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    read = read_mask(tmp_path / "rgba.png")
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, gray)


def test_the_size_limit_message_without_a_pixel_count():
    """Pillow's error does not always give the pixel count: the message says "its size"."""
    from segexp.data.files import _too_large

    err = _too_large(Path("big.png"), None, 1000)
    assert (err.kind, err.detail) == ("too_large", (
        "its size is over the image size limit of 1,000 pixels (Pillow's decompression-bomb "
        "guard; set SEGEXP_MAX_IMAGE_PIXELS=<pixels> to allow larger images)"
    ))  # fmt: skip


@pytest.mark.parametrize("colour", [(5, 5, 9), (5, 9, 5), (9, 5, 5)])
def test_an_rgb_mask_with_any_channel_unequal_is_refused(tmp_path, colour):
    pixels = np.zeros((3, 4, 3), np.uint8)
    pixels[1, 2] = colour
    save_image(tmp_path / "m.png", pixels)
    with pytest.raises(DataFileError, match="is a color \\(RGB\\) image"):
        read_mask(tmp_path / "m.png")


def test_a_gray_mask_with_alpha_is_read_as_its_gray_values(tmp_path):
    gray = np.array([[0, 3], [1, 2]], np.uint8)
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    np.testing.assert_array_equal(read_mask(tmp_path / "la.png"), gray)


def test_label_checks_flag_num_classes_and_negative_values_and_pass_an_empty_mask():
    with pytest.raises(DataFileError, match=r"value\(s\) 5 outside the classes 0\.\.4"):
        check_labels(Path("m.png"), np.array([[0, 5], [4, 255]]), 5, 255)
    with pytest.raises(DataFileError, match=r"value\(s\) -1 outside"):
        check_labels(Path("m.png"), np.array([[0, -1], [4, 255]]), 5, 255)
    check_labels(Path("m.png"), np.zeros((0, 4), np.int32), 5, 255)  # nothing to flag
    check_labels(Path("m.png"), np.array([[0, 4], [255, 1]]), 5, 255)
