"""The TensorFlow-free loader's own parts: file errors and caches cross into worker processes
intact, a dead worker is said in one line, the batch count, how many workers `auto` starts, the
per-epoch step timing, and the GPU check's dry run (its table from the same code paths)."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segexp.data.cache import SampleCache
from segexp.data.files import CorruptFileError, DataFileError
from segexp.data.loader import Batches, SampleWorkers, make_batches
from segexp.data.samples import FileProblems, PlannedSample, SampleMaker, epoch_plan
from segexp.errors import SegexpError
from tests.test_pipeline import _labels, _write_pairs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error", [
    DataFileError(Path("/d/m.png"), "bad_label", "label 7 is not a class (0..4)"),
    CorruptFileError(Path("/d/i.jpg"), "truncated", kind="truncated"),
])  # fmt: skip
def test_a_file_error_comes_back_from_a_worker_as_it_was(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.path, back.kind, back.detail, str(back)) == (
        error.path, error.kind, error.detail, str(error))  # fmt: skip


def test_a_cache_sent_to_a_worker_keeps_its_folder_and_starts_an_empty_memory(tmp_path):
    memory = SampleCache()
    memory.put(Path("a.png"), Path("a_m.png"), (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2))))
    assert len(memory) == 1 and len(pickle.loads(pickle.dumps(memory))) == 0
    disk = pickle.loads(pickle.dumps(SampleCache(tmp_path / "cache")))
    assert disk.folder == tmp_path / "cache"


class _DyingMaker(SampleMaker):
    """A maker whose worker process ends at once, as one killed for memory would."""

    def __call__(self, image_path, mask_path, seed):
        os._exit(1)


@pytest.mark.subprocess
def test_a_worker_process_that_dies_is_said_in_one_line(tmp_path):
    split = _write_pairs(tmp_path, 4, np.random.default_rng(0))
    maker = _DyingMaker.of(_labels(), 32, None)
    plan = epoch_plan(split, training=False, seed=0)
    with SampleWorkers(maker, 1) as workers:
        batches = Batches(plan, workers, 2, False, FileProblems())
        with pytest.raises(SegexpError, match="a data worker process died"):
            list(batches)


@pytest.mark.parametrize(("count", "batch", "drop", "skip", "want"), [
    (10, 4, True, 0, 2), (10, 4, False, 0, 3), (10, 4, False, 1, 2), (10, 4, True, 5, 0),
    (0, 4, False, 0, 0),
])  # fmt: skip
def test_the_batch_count_is_known_without_reading(tmp_path, count, batch, drop, skip, want):
    plan = [PlannedSample(tmp_path / f"{i}.png", tmp_path / f"{i}_m.png", (0, i))
            for i in range(count)]  # fmt: skip
    workers = SampleWorkers(SampleMaker.of(_labels(), 32, None), 0)
    batches = Batches(plan, workers, batch, drop, FileProblems(), skip)
    assert batches.known_length() == want and batches.has_batches() == (want > 0)


def test_with_skip_corrupt_the_count_is_found_by_reading(tmp_path):
    split = _write_pairs(tmp_path, 3, np.random.default_rng(1))
    for image in split.images:
        image.write_bytes(b"broken")
    batches = make_batches(split, _labels(), 32, 2, training=True, seed=0, skip_corrupt=True)
    assert batches.known_length() is None and not batches.has_batches()


def test_workers_given_with_other_options_are_refused(tmp_path):
    split = _write_pairs(tmp_path, 2, np.random.default_rng(2))
    workers = SampleWorkers(SampleMaker.of(_labels(), 32, None), 0)
    with pytest.raises(ValueError, match="other options"):
        make_batches(split, _labels(), 64, 2, training=False, seed=0, workers=workers)


def test_auto_data_workers_leave_cores_to_a_cpu_step_and_feed_an_accelerator(monkeypatch):
    import segexp.training.precision as precision
    from segexp.training.setup import data_workers

    monkeypatch.setattr(precision, "device_facts", lambda backend: precision.DeviceFacts("cpu"))
    for cores, workers in ((2, 1), (4, 1), (16, 4), (None, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert data_workers("auto") == workers
    gpu = precision.DeviceFacts("gpu", "H100", (9, 0))
    monkeypatch.setattr(precision, "device_facts", lambda backend: gpu)
    for cores, workers in ((16, 15), (2, 1), (1, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert data_workers("auto") == workers
    assert data_workers(0) == 0 and data_workers(3) == 3


def test_step_times_split_an_epoch_into_steps_and_waits_from_its_second_step(monkeypatch):
    from segexp.training import step_times

    clock = iter([0.0, 5.0,  # step 0: begins, ends (compiles: not counted)
                  7.0, 8.0,  # waited 2 s, stepped 1 s
                  8.5, 9.5,  # waited 0.5 s, stepped 1 s
                  12.5, 13.5])  # waited 3 s, stepped 1 s  # fmt: skip
    monkeypatch.setattr(step_times.time, "perf_counter", lambda: next(clock))
    times = step_times.StepTimes()
    for batch in range(4):
        times.begin()
        times.end(batch)
    metrics = times.metrics()
    assert metrics["perf/input_wait_share"] == pytest.approx(5.5 / 8.5)
    assert metrics["perf/steps_per_s"] == pytest.approx(3 / 8.5)
    assert step_times.StepTimes().metrics() == {}, "no step after the first: nothing to say"


@pytest.mark.slow
def test_the_gpu_check_dry_run_prints_its_table_without_tensorflow(tmp_path):
    """scripts/gpu_check.sh --dry (tiny backbone, float32 only: the suite's time): trained,
    stepped and the loader timed, each in a process where TensorFlow cannot be imported."""
    out = tmp_path / "table.md"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env["PYTHON"] = sys.executable  # the suite's Python (the script's default is python3)
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry", "--backbone", "tiny", "--steps", "2",
         "--precisions", "float32", "--budget", "1200", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| jax |")]
    assert [row.split("|")[2].strip() for row in rows] == ["float32"], table
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:9]]
        assert float(cells[0]) > 0 and float(cells[1]) > 0, row  # images/s end to end, step
        assert 0 <= float(cells[2].rstrip(" %")) <= 100, row
        assert 0 <= float(cells[4]) <= 1 and "FINISHED" in cells[5], row
    assert "loader alone at 64 px: 1 worker" in table
