"""`python -m segexp.bench`: runs at 32 px with 2 steps and writes its table (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segexp.bench import write_section

ROWS = (
    "training, batches in memory", "input pipeline alone",
    "input pipeline from cache (dataset.cache=memory)", "evaluation (val split, original sizes)",
    "tracking, one epoch's metrics", "time to first training step", "forward FLOPs per image",
    "achieved training throughput", "float32 matmul 128x128", "peak RSS",
    "evaluation: boundary IoU and F, cost per image", "evaluation: ECE, cost per image",
    "evaluation: IoU by object size, cost per image",
)  # fmt: skip


def _bench(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "segexp.bench", "backbone=tiny", "image_size=32",
         "aspp.filters=8", "dataset.num_train=12", "dataset.num_val=4", "bench.steps=2",
         "bench.warmup=1", "bench.repeats=2", "bench.matmul_size=128",
         f"bench.output={tmp_path / 'benchmarks.md'}", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={tmp_path / 'h'}", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_bench_prints_and_writes_every_figure_and_the_targets(tmp_path):
    done = _bench(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## tiny at 32 px, batch 4" in report and report.count("<!-- bench:") == 2
    for name in ROWS:
        line = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        low, mid, high = (float(cell) for cell in line.split("|")[2:5])
        assert 0 < low <= mid <= high, line
        assert line in done.stdout
    for target in (
        "input pipeline >= 10x the training",
        "achieved GFLOP/s >= 60% of the matmul peak",
        "tracking overhead <= 2%",
    ):
        assert f"| {target}" in report  # fmt: skip
    assert "images/s | n/a (512 px only) |" in report  # the cache target is for 512 px
    assert "end to end" not in report.split("| figure |")[1]  # bench.mode=epochs times it


def test_a_section_is_replaced_not_repeated(tmp_path):
    path = tmp_path / "b.md"
    write_section(path, "r50-128", "## one\n")
    write_section(path, "r50-256", "## two\n")
    write_section(path, "r50-128", "## three\n")
    text = path.read_text()
    assert text.count("## one") == 0 and text.count("## three") == 1 and "## two" in text
    assert text.index("## three") < text.index("## two"), "kept in its place"


def test_bad_bench_values_are_one_line(tmp_path):
    done = _bench(tmp_path, "bench.steps=0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: bench.steps=0 is not allowed: must be an integer >= 1"
    )


def test_a_ratio_at_its_target_is_met_and_one_below_is_not():
    from omegaconf import OmegaConf

    from segexp.perf.measure import Figure
    from segexp.perf.report import report

    cfg = OmegaConf.create({
        "backbone": {"name": "tiny"}, "image_size": 32,
        "trainer": {"batch_size": 4, "precision": "float32", "jit_compile": False,
                    "steps_per_execution": 1, "strategy": "auto"},
        "augment": {"name": "none"}, "dataset": {"name": "synthetic"},
        "bench": {"steps": 2, "warmup": 1, "repeats": 1},
    })  # fmt: skip
    figures = [Figure("tracking, one epoch's metrics", [0.1], "%")]
    ratios = {"achieved / matmul peak": 0.6, "pipeline / training": 9.99,
              "cached pipeline": 500.0}  # fmt: skip
    text = report(cfg, figures, ratios, [])
    assert "| achieved GFLOP/s >= 60% of the matmul peak | 0.60x | yes |" in text
    assert "| input pipeline >= 10x the training rate | 9.99x | no |" in text


@pytest.mark.slow
def test_epochs_mode_times_segexp_the_keras_io_way_and_a_baseline_in_rounds(tmp_path):
    """bench.mode=epochs with this checkout as the baseline: one row per round with every arm,
    the order rotated, and each paired ratio the quotient of that round's two columns."""
    root = Path(__file__).resolve().parents[1]
    done = _bench(tmp_path, "bench.mode=epochs", "bench.rounds=2", "bench.epochs=2",
                  f"bench.baseline={root}", "dataset.num_val=4")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "benchmarks.md").read_text()
    title = "## whole epochs: tiny at 32 px, batch 4, segexp.train against the keras.io way"
    assert title in report
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| 1 |")
            or line.startswith("| 2 |")]  # fmt: skip
    assert [r[1].strip() for r in rows] == ["segexp, keras.io way, baseline",
                                            "keras.io way, baseline, segexp"]  # fmt: skip
    whole = np.array([[float(c) for c in r[2:5]] for r in rows])  # segexp, keras.io, baseline
    assert (whole > 0).all()
    assert all(float(c) > 0 for r in rows for c in r[5:8])  # training phase, every arm
    for other, column in (("keras.io way", 1), ("baseline", 2)):
        line = next(x for x in report.splitlines()
                    if x.startswith(f"| segexp / {other}, whole epoch |"))  # fmt: skip
        median = float(line.split("|")[2].split("x")[0])
        assert median == pytest.approx(np.median(whole[:, 0] / whole[:, column]), abs=0.006)


def test_bad_epochs_mode_values_are_one_line(tmp_path):
    done = _bench(tmp_path, "bench.mode=epochs", f"bench.baseline={tmp_path}")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: bench.baseline='{tmp_path}' is not allowed: must be a segexp checkout")
    )
    done = _bench(tmp_path, "bench.mode=epochs", "bench.epochs=1")
    assert done.stderr.strip().splitlines()[-1] == (
        "error: bench.epochs=1 is not allowed: must be an integer >= 2"
    )
