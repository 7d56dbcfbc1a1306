"""tf.data pipeline: content-based decoding, nearest-neighbour masks, per-epoch seeded shuffle."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from segexp.data.dataset import Split
from segexp.data.pipeline import make_dataset, resize_pair


def _write_pairs(folder, count, rng, labels=(0, 3, 7, 255), image_ext=".png"):
    images, masks = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(20, 60, size=2))
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = rng.choice(np.asarray(labels, dtype=np.uint8), size=(h, w))
        image_path, mask_path = folder / f"{i:03d}{image_ext}", folder / f"{i:03d}_mask.png"
        cv2.imwrite(str(image_path), image)
        cv2.imwrite(str(mask_path), mask)
        images.append(image_path)
        masks.append(mask_path)
    return Split(images=tuple(images), masks=tuple(masks))


@pytest.mark.parametrize("size", [32, 64, 96])
def test_nearest_resize_only_produces_input_labels(size):
    rng = np.random.default_rng(size)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(37, 53, 1))
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    resized_image, resized_mask = resize_pair(tf.constant(image), tf.constant(mask), size)
    assert resized_image.shape == (size, size, 3) and resized_image.dtype == tf.float32
    assert resized_mask.shape == (size, size) and resized_mask.dtype == tf.int32
    assert set(np.unique(resized_mask.numpy())) <= {0, 3, 7, 255}
    # Nearest neighbour sampled at pixel centres, as OpenCV's exact nearest computes it.
    expected = cv2.resize(mask[..., 0], (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(resized_mask.numpy(), expected)


def test_pipeline_batches_decode_by_content_and_keep_labels(tmp_path):
    rng = np.random.default_rng(0)
    split = _write_pairs(tmp_path / "png", 5, rng)
    # A JPEG under a .png name still decodes: the decoder looks at the bytes, not the name.
    jpeg_split = _write_pairs(tmp_path / "jpg", 2, rng, image_ext=".jpg")
    renamed = jpeg_split.images[0].with_name("jpeg_bytes.png")
    jpeg_split.images[0].rename(renamed)
    mixed = Split(
        images=split.images + (renamed,) + jpeg_split.images[1:],
        masks=split.masks + jpeg_split.masks,
    )
    batches = list(make_dataset(mixed, 32, 3, training=False, seed=0))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]  # evaluation keeps the partial batch
    labels = np.concatenate([b[1].numpy().ravel() for b in batches])
    assert set(np.unique(labels)) <= {0, 3, 7, 255}
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255


def test_training_order_is_reshuffled_each_epoch_and_reproducible(tmp_path):
    rng = np.random.default_rng(1)
    split = _write_pairs(tmp_path, 12, rng, labels=(0, 1))

    # Tag each sample by its mean image value to read the order back.
    def order(dataset):
        return [round(float(v), 3) for b in dataset for v in tf.reduce_mean(b[0], axis=[1, 2, 3])]

    data = make_dataset(split, 32, 4, training=True, seed=7)
    epoch1, epoch2 = order(data), order(data)
    assert len(epoch1) == 12 and sorted(epoch1) == sorted(epoch2)
    assert epoch1 != epoch2, "the training set must be reshuffled every epoch"
    again = make_dataset(split, 32, 4, training=True, seed=7)
    assert order(again) == epoch1, "the same seed must give the same order"
    assert order(make_dataset(split, 32, 4, training=True, seed=8)) != epoch1
    evaluation = make_dataset(split, 32, 4, training=False, seed=7)
    assert order(evaluation) == order(evaluation), "evaluation keeps file order"


def test_training_drops_the_partial_last_batch(tmp_path):
    split = _write_pairs(tmp_path, 7, np.random.default_rng(2))
    sizes = [b[0].shape[0] for b in make_dataset(split, 32, 3, training=True, seed=0)]
    assert sizes == [3, 3]
