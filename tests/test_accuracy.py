"""`python -m segexp.accuracy`: time to accuracy and the report, then one tiny real comparison."""

import pytest

from segexp.accuracy import main
from segexp.perf.accuracy import Comparison, Curve, default_target, markdown, time_to_accuracy


def test_time_to_accuracy_is_the_first_epoch_at_or_over_the_target():
    curve = Curve("r", seconds=[10.0, 20.0, 30.0], mean_iou=[0.1, 0.3, 0.2])
    assert curve.time_to(0.25) == 20.0
    assert curve.time_to(0.3) == 20.0
    assert curve.time_to(0.5) is None


def test_the_default_target_lies_halfway_above_the_trivial_baseline():
    assert default_target(0.0837, 0.1385) == 0.11  # half of the best (0.07) is under 0.0837
    assert default_target(0.0424, 0.1380) == 0.09


def test_report_has_both_curves_the_baseline_and_the_speed_up():
    ours = Curve("segexp default", [50.0, 100.0], [0.2, 0.4])
    ref = Curve("keras.io way", [40.0, 80.0, 120.0], [0.05, 0.1, 0.3])
    text = markdown(Comparison("digits", "8 train", 0.0812, "background", 0.25, [ours, ref]))
    assert "| 2 | 0.4000 | 100 s | 0.1000 | 80 s |" in text
    assert "| 3 |  |  | 0.3000 | 120 s |" in text
    assert "predicting 'background' everywhere): val mean IoU 0.0812" in text
    assert "segexp default 100 s, keras.io way 120 s (speed-up 1.20x)" in text


def test_the_benchmark_table_gives_each_datasets_time_to_accuracy_ratio():
    ours = Curve("segexp default", [50.0, 100.0], [0.2, 0.4])
    ref = Curve("keras.io way", [40.0, 80.0, 120.0], [0.05, 0.1, 0.3])
    never = Curve("keras.io way", [40.0], [0.05])
    text = time_to_accuracy([Comparison("digits", "", 0.08, "background", 0.25, [ours, ref]),
                             Comparison("synthetic", "", 0.04, "background", 0.25, [ours, never])],
                            "python -m segexp.accuracy")  # fmt: skip
    assert "| digits | 0.25 | 100 s | 120 s | 1.20x |" in text
    assert "| synthetic | 0.25 | 100 s | not reached | keras.io way never reached it |" in text


@pytest.mark.slow
def test_a_tiny_comparison_trains_both_recipes_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "accuracy.md"
    main(["--datasets", "digits", "--output", str(output),
          "backbone=tiny", "image_size=32", "aspp.filters=8", "decoder.filters=8",
          "dataset.num_train=8", "dataset.num_val=4", "dataset.min_size=32",
          "dataset.max_size=48", "trainer.epochs=2", "trainer.verbose=0"])  # fmt: skip
    text = output.read_text()
    assert text.startswith("# Accuracy over time")
    assert "`python -m segexp.accuracy --datasets digits" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 ") or
            line.startswith("| 2 ")]  # fmt: skip
    assert len(rows) == 2 and all(len(r.split("|")) == 7 for r in rows)
    assert all(cell.strip() for r in rows for cell in r.split("|")[1:-1]), "both recipes, 2 epochs"
    assert "trivial baseline (predicting 'background' everywhere)" in text
    assert (tmp_path / "data" / "digits").is_dir()
    bench = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "<!-- bench:time-to-accuracy:start -->" in bench
    assert "| digits | " in bench
