"""Both input pipelines (tf.data, and the TensorFlow-free loader with or without worker
processes): decoding by content, valid labels, seeded shuffles, shards, bad files, and the same
batches from each."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from segexp.data.augment import AugmentOptions
from segexp.data.dataset import SegmentationDataset, Split
from segexp.data.files import DataFileError
from segexp.data.loader import make_batches, sample_workers
from segexp.data.palettes import bit_palette
from segexp.data.pipeline import make_dataset
from segexp.data.samples import FileProblems
from tests.fakedata import random_pair, save_image, save_mask


def _labels(num_classes=8, flip_pairs=()):
    return SegmentationDataset(
        name="test",
        splits={},
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        colormap=bit_palette(num_classes),
        flip_pairs=flip_pairs,
    )


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


# tf.data; the loader making samples in this process; the loader with two worker processes
# (marked subprocess: make mutation leaves it out, its workers start Python processes)
PATHS = ["tf.data", "loader", pytest.param("loader-2-workers", marks=pytest.mark.subprocess)]


def _batches(path, split, dataset, size, batch, **options):
    """The batches one input path makes, as NumPy (image, mask) pairs."""
    if path == "tf.data":
        return [(x.numpy(), y.numpy()) for x, y in make_dataset(split, dataset, size, batch,
                                                                 **options)]  # fmt: skip
    if path == "loader":
        return list(make_batches(split, dataset, size, batch, **options))
    augment = options.get("augment") if options["training"] else None
    with sample_workers(dataset, size, 2, augment=augment,
                        skip_corrupt=options.get("skip_corrupt", False)) as workers:  # fmt: skip
        return list(make_batches(split, dataset, size, batch, workers=workers, **options))


def _file_error(path):
    """What stops a pipeline at a bad file: TensorFlow's error, or the file's own."""
    return tf.errors.OpError if path == "tf.data" else DataFileError


@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("augment", ["none", "standard"])
@pytest.mark.parametrize("training", [True, False])
def test_every_path_gives_the_same_batches(tmp_path, augment, training, path):
    """One seed and config: the loader (and its worker processes) and tf.data, equal arrays."""
    split = _write_pairs(tmp_path, 9, np.random.default_rng(8), labels=(0, 1, 2, 255))
    dataset = _labels(3, flip_pairs=((1, 2),))
    options = dict(training=training, seed=11, epoch=2, augment=AugmentOptions(name=augment))
    reference = _batches("tf.data", split, dataset, 32, 4, **options)
    assert [b[0].shape[0] for b in reference] == ([4, 4] if training else [4, 4, 1])
    batches = _batches(path, split, dataset, 32, 4, **options)
    assert len(batches) == len(reference)
    for (image, mask), (want_image, want_mask) in zip(batches, reference, strict=True):
        assert image.dtype == np.float32 and mask.dtype == np.int32
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(mask, want_mask)


@pytest.mark.parametrize("path", PATHS)
def test_pipeline_batches_decode_by_content_and_keep_labels(tmp_path, path):
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
    batches = _batches(path, mixed, _labels(), 32, 3, training=False, seed=0)
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]  # evaluation keeps the partial batch
    labels = np.concatenate([b[1].ravel() for b in batches])
    assert set(np.unique(labels)) <= {0, 3, 7, 255}
    images = np.concatenate([b[0] for b in batches])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255


def _order(batches):
    """Each sample's mean image value, to read the order back."""
    return [round(float(v), 3) for b in batches for v in np.mean(b[0], axis=(1, 2, 3))]


@pytest.mark.parametrize("path", PATHS[:2])
@pytest.mark.parametrize("augment", [None, AugmentOptions(name="standard")])
def test_training_order_is_reshuffled_each_epoch_and_reproducible(tmp_path, augment, path):
    split = _write_pairs(tmp_path, 12, np.random.default_rng(1), labels=(0, 1))
    labels = _labels()

    def build(seed, epoch=0, skip=0):
        return _batches(path, split, labels, 32, 4, training=True, seed=seed, augment=augment,
                        epoch=epoch, skip_batches=skip)  # fmt: skip

    epoch1, epoch2 = _order(build(7, epoch=0)), _order(build(7, epoch=1))
    assert len(epoch1) == 12 and epoch1 != epoch2, "a new order (and draw) every epoch"
    assert _order(build(7)) == epoch1, "the same seed must give the same epochs"
    assert _order(build(7, epoch=1)) == epoch2, "any epoch can be rebuilt (resume)"
    assert _order(build(7, epoch=1, skip=2)) == epoch2[8:], "skipping resumes mid-epoch"
    assert _order(build(8)) != epoch1
    evaluation = _batches(path, split, labels, 32, 4, training=False, seed=7, augment=augment)
    assert _order(evaluation) == _order(evaluation), "evaluation is neither shuffled nor augmented"


@pytest.mark.parametrize("path", PATHS[:2])
def test_worker_shards_split_each_epoch_evenly_and_disjointly(tmp_path, path):
    split = _write_pairs(tmp_path, 11, np.random.default_rng(4), labels=(0, 1))
    labels = _labels()

    def build(batch, shard, epoch=0):
        data = _batches(path, split, labels, 32, batch, training=True, seed=3, epoch=epoch,
                        shard=shard)  # fmt: skip
        return [float(v) for b in data for v in np.sum(b[0], axis=(1, 2, 3))]

    for epoch in (0, 1):
        whole = build(1, (0, 1), epoch)  # the epoch's order, one sample per batch
        assert len(set(whole)) == 11  # each sample's pixel sum tells it apart
        first, second = build(2, (0, 2), epoch), build(2, (1, 2), epoch)
        # 11 samples over 2 workers: 5 each (the last sample of the epoch is left out), so both
        # train the same 2 steps of 2; worker i takes every 2nd sample of the order from i on
        assert len(first) == len(second) == 4
        assert first == whole[0:8:2] and second == whole[1:8:2]
        assert not set(first) & set(second)


@pytest.mark.parametrize("path", PATHS[:2])
def test_training_drops_the_partial_last_batch(tmp_path, path):
    split = _write_pairs(tmp_path, 7, np.random.default_rng(2))
    batches = _batches(path, split, _labels(), 32, 3, training=True, seed=0)
    assert [b[0].shape[0] for b in batches] == [3, 3]


@pytest.mark.parametrize("path", PATHS)
def test_a_corrupt_file_stops_the_pipeline_and_is_named(tmp_path, path):
    split = _write_pairs(tmp_path, 4, np.random.default_rng(3))
    split.images[2].write_bytes(b"truncated")
    problems = FileProblems()
    with pytest.raises(_file_error(path)):
        _batches(path, split, _labels(), 32, 2, training=False, seed=0, problems=problems)
    assert isinstance(problems.fatal, DataFileError) and problems.fatal.path == split.images[2]


@pytest.mark.parametrize("path", PATHS)
def test_skip_corrupt_drops_the_file_and_counts_it(tmp_path, path):
    split = _write_pairs(tmp_path, 5, np.random.default_rng(4))
    split.masks[1].write_bytes(b"\x89PNG broken")
    problems = FileProblems()
    data = _batches(path, split, _labels(), 32, 2, training=False, seed=0, skip_corrupt=True,
                    problems=problems)  # fmt: skip
    assert [b[0].shape[0] for b in data] == [2, 2]
    assert list(problems.skipped) == [split.masks[1]] and problems.fatal is None


@pytest.mark.parametrize("path", PATHS[:2])
def test_skip_corrupt_with_skipped_batches_counts_batches_of_readable_files(tmp_path, path):
    """A resumed epoch with skip_corrupt: the batches left out are those made of readable
    files (as trained before the interrupt), so the rest are the ones the epoch had left."""
    split = _write_pairs(tmp_path, 9, np.random.default_rng(7), labels=(0, 1))
    split.images[4].write_bytes(b"not an image")
    options = dict(training=True, seed=2, skip_corrupt=True)
    whole = _batches(path, split, _labels(), 32, 2, **options)
    assert len(whole) == 4, "8 readable files, 4 full batches"
    rest = _batches(path, split, _labels(), 32, 2, skip_batches=3, **options)
    assert len(rest) == 1
    np.testing.assert_array_equal(rest[0][0], whole[3][0])


@pytest.mark.parametrize("path", PATHS)
def test_a_label_outside_the_classes_is_named_with_its_value(tmp_path, path):
    split = _write_pairs(tmp_path, 3, np.random.default_rng(5), labels=(0, 1, 7))
    problems = FileProblems()
    with pytest.raises(_file_error(path)):
        _batches(path, split, _labels(num_classes=5), 32, 3, training=False, seed=0,
                 skip_corrupt=True, problems=problems)  # fmt: skip
    assert problems.fatal.kind == "bad_label" and "7" in problems.fatal.detail


def test_a_private_pipeline_pool_gives_the_same_batches_with_its_thread_count(tmp_path):
    split = _write_pairs(tmp_path, 8, np.random.default_rng(2), labels=(0, 1))
    augment = AugmentOptions(name="standard")
    default, one = (make_dataset(split, _labels(), 32, 4, training=True, seed=3, augment=augment,
                                 threads=threads) for threads in (None, 1))  # fmt: skip
    assert one.options().threading.private_threadpool_size == 1
    assert one.options().threading.max_intra_op_parallelism == 1
    assert default.options().threading.private_threadpool_size in (None, 0)
    for (image_a, mask_a), (image_b, mask_b) in zip(default, one, strict=True):
        np.testing.assert_array_equal(image_a.numpy(), image_b.numpy())
        np.testing.assert_array_equal(mask_a.numpy(), mask_b.numpy())


def test_the_training_pipeline_leaves_the_cores_to_a_step_the_cpu_computes(monkeypatch):
    import segexp.training.precision as precision
    from segexp.training.setup import pipeline_threads

    monkeypatch.setattr(precision, "device_facts", lambda backend: precision.DeviceFacts("cpu"))
    for cores, threads in ((2, 1), (4, 1), (16, 4), (None, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert pipeline_threads() == threads
    gpu = precision.DeviceFacts("gpu", "A100", (8, 0))
    monkeypatch.setattr(precision, "device_facts", lambda backend: gpu)
    assert pipeline_threads() is None, "tf.data's own pool when a GPU computes"


@pytest.mark.parametrize("path", PATHS[:2])
def test_evaluation_batches_are_the_files_unaugmented_even_with_augment_set(tmp_path, path):
    """make_dataset(training=False) with augment=standard: images and masks at image_size come
    back as the files hold them (no scale, crop, flip or colour jitter), in file order."""
    rng = np.random.default_rng(6)
    images, masks = [], []
    for i in range(4):
        image, mask = random_pair(rng, (0, 1, 2, 255), size=(32, 32))
        image[:, :16] = rng.integers(0, 256, size=(32, 16, 3))  # no mirror symmetry
        save_image(tmp_path / f"{i}.png", image)
        save_mask(tmp_path / f"{i}_m.png", mask)
        images.append(image)
        masks.append(mask)
    split = Split(tuple(tmp_path / f"{i}.png" for i in range(4)),
                  tuple(tmp_path / f"{i}_m.png" for i in range(4)))  # fmt: skip
    augment = AugmentOptions(name="standard", flip=1.0, scale=(1.5, 2.0))
    batches = _batches(path, split, _labels(3, flip_pairs=((1, 2),)), 32, 3,
                       training=False, seed=5, augment=augment)  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), np.stack(images))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.stack(masks))
    training = _batches(path, split, _labels(3, flip_pairs=((1, 2),)), 32, 4,
                        training=True, seed=5, augment=augment)  # fmt: skip
    assert not np.array_equal(np.sort(training[0][0].ravel()),
                              np.sort(np.stack(images).ravel().astype(np.float32)))  # fmt: skip
