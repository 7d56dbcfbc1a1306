"""dataset.cache: the second epoch reads no file, gives the same batches as no cache (resized
samples without augmentation, own-size ones with it), a later run reuses the disk cache, an
edited source file or a damaged cache file is read again."""

import numpy as np
import pytest
from PIL import Image

import segexp.data.samples as samples
from segexp.data.augment import AugmentOptions
from segexp.data.cache import SampleCache, make_cache
from segexp.data.pipeline import make_dataset
from tests.test_pipeline import _labels, _write_pairs


@pytest.fixture
def counted_reads(monkeypatch):
    """How many images the pipeline decoded from files."""
    calls = []
    original = samples.read_image

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(samples, "read_image", counting)
    return calls


def _batches(split, cache, epoch=0, training=True, augment=None):
    data = make_dataset(split, _labels(), 32, 3, training=training, seed=5, epoch=epoch,
                        cache=cache, augment=augment)  # fmt: skip
    return [(x.numpy(), y.numpy()) for x, y in data]


def _same(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_later_epochs_read_no_file_and_match_the_uncached_batches(tmp_path, counted_reads, mode):
    split = _write_pairs(tmp_path / "data", 7, np.random.default_rng(0))
    cache = make_cache(mode, tmp_path / "cache")
    first = _batches(split, cache, epoch=0)
    assert len(counted_reads) == 7 and len(cache) == 7
    second = _batches(split, cache, epoch=1)
    evaluation = _batches(split, cache, training=False)
    assert len(counted_reads) == 7, "epoch 2 and evaluation came from the cache"
    image, mask = cache.get(split.images[0], split.masks[0], 32)  # kept at the training size
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and mask.shape == (32, 32)
    assert all((x == np.round(x)).all() for x, _ in first)  # resized samples are whole values
    _same(first, _batches(split, None, epoch=0))
    _same(second, _batches(split, None, epoch=1))
    _same(evaluation, _batches(split, None, training=False))


def test_with_augmentation_samples_are_cached_at_their_own_size(tmp_path, counted_reads):
    split = _write_pairs(tmp_path / "data", 6, np.random.default_rng(5))
    cache, standard = SampleCache(), AugmentOptions(name="standard")
    first = _batches(split, cache, epoch=0, augment=standard)
    second = _batches(split, cache, epoch=1, augment=standard)
    assert len(counted_reads) == 6 and len(cache) == 6
    for image_path, mask_path in zip(split.images, split.masks, strict=True):
        image, _ = cache.get(image_path, mask_path)  # at its own size, for random crops
        assert image.shape[:2] == np.asarray(Image.open(image_path)).shape[:2]
    _same(first, _batches(split, None, epoch=0, augment=standard))
    _same(second, _batches(split, None, epoch=1, augment=standard))


def test_a_later_run_reuses_the_disk_cache(tmp_path, counted_reads):
    split = _write_pairs(tmp_path / "data", 4, np.random.default_rng(1))
    _batches(split, SampleCache(tmp_path / "cache"))
    assert len(counted_reads) == 4
    later = _batches(split, SampleCache(tmp_path / "cache"))  # a new process's cache object
    assert len(counted_reads) == 4
    _same(later, _batches(split, None))


def test_an_edited_file_or_a_damaged_cache_file_is_read_again(tmp_path, counted_reads):
    split = _write_pairs(tmp_path / "data", 3, np.random.default_rng(2))
    cache = SampleCache(tmp_path / "cache")
    _batches(split, cache, training=False)
    assert len(counted_reads) == 3
    entries = sorted((tmp_path / "cache").glob("*/*.npz"))
    assert len(entries) == 3
    for entry in entries:  # every cache file cut short
        entry.write_bytes(entry.read_bytes()[:100])
    _same(_batches(split, cache, training=False), _batches(split, None, training=False))
    assert len(counted_reads) == 3 + 3 + 3  # read again (and once more uncached)
    edited = np.full((30, 40, 3), 200, np.uint8)
    Image.fromarray(edited).save(split.images[0])
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(split.masks[0])
    image, mask = samples.PairReader(8, 255, False, samples.FileProblems(), cache).read(
        split.images[0], split.masks[0]
    )
    np.testing.assert_array_equal(image, edited)
    assert mask.shape == (30, 40) and mask.dtype == np.int32


def test_disk_cache_keeps_labels_above_255_exactly(tmp_path):
    cache = SampleCache(tmp_path / "cache")
    image, mask = np.zeros((2, 2, 3), np.uint8), np.array([[0, 300], [255, 7]], np.int32)
    source = tmp_path / "a.png"
    source.write_bytes(b"x")
    cache.put(source, source, (image, mask))
    _, back = cache.get(source, source)
    np.testing.assert_array_equal(back, mask)
