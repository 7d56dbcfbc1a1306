"""Plant each bug the suite must catch (issue 32's list), one at a time, run the tests written
for it and put the code back: every row must end "caught". A bug is a text replacement in one
file; a rewrite that moves the code makes its row fail loudly, so move the row with it.

    .venv/bin/python scripts/planted_bugs.py [--slow] [ROW ...]
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False


BUGS = (
    Bug("best.keras holds the last epoch's weights", "segexp/training/checkpoints.py",
        "    if best and keep in (\"best\", \"best_and_last\"):\n        _save_model(model, folder / BEST_FILE)",
        "    if keep in (\"best\", \"best_and_last\"):\n        _save_model(model, folder / BEST_FILE)",
        ("tests/test_schedules.py::test_best_checkpoint_holds_the_best_epochs_weights_and_last_the_last",)),
    Bug("the evaluation pipeline applies training augmentation (tf.data)", "segexp/data/pipeline.py",
        "augment = augment if training and augment is not None",
        "augment = augment if augment is not None",
        ("tests/test_pipeline.py::test_evaluation_batches_are_the_files_unaugmented_even_with_augment_set",)),
    Bug("the evaluation pipeline applies training augmentation (the TensorFlow-free loader)",
        "segexp/data/loader.py",
        "augment = augment if training and augment is not None",
        "augment = augment if augment is not None",
        ("tests/test_pipeline.py::test_evaluation_batches_are_the_files_unaugmented_even_with_augment_set",)),
    Bug("mean IoU leaves out a class predicted but never labelled (NumPy)",
        "segexp/evaluation/metrics.py",
        "    iou = _ratio(true_positive, union)\n",
        "    iou = np.where(labelled > 0, _ratio(true_positive, union), np.nan)\n",
        ("tests/test_metrics.py::test_a_class_predicted_but_never_labelled_scores_zero_and_counts_in_mean_iou",
         "tests/test_metrics.py::test_the_evaluator_counts_a_class_predicted_but_never_labelled")),
    Bug("mean IoU leaves out a class predicted but never labelled (Keras metric)",
        "segexp/evaluation/metrics.py",
        'present = ops.cast(union > 0, "float32")',
        'present = ops.cast(ops.sum(confusion, axis=1) > 0, "float32")',
        ("tests/test_metrics.py::test_a_class_predicted_but_never_labelled_scores_zero_and_counts_in_mean_iou",)),
    Bug("precise BatchNorm skipped where the training callback calls it",
        "segexp/training/callbacks.py",
        "self.precise(itertools.islice(batches, self.num_batches))",
        "self.precise(itertools.islice(batches, 0))",
        ("tests/test_batchnorm.py::test_precise_batchnorm_in_fit_leaves_the_epochs_exact_statistics_in_the_checkpoints",)),
    Bug("precise BatchNorm skipped where the training callback calls it (through a job)",
        "segexp/training/callbacks.py",
        "self.precise(itertools.islice(batches, self.num_batches))",
        "self.precise(itertools.islice(batches, 0))",
        ("tests/test_batchnorm.py::test_saved_model_scores_the_same_with_moving_and_batch_statistics",),
        slow=True),
    Bug("the trivial baseline from the val split's majority class", "segexp/evaluation/metrics.py",
        'majority = int(np.argmax(histograms["train"]))',
        'majority = int(np.argmax(histograms["val"]))',
        ("tests/test_baseline.py",)),
)  # fmt: skip


def plant(bug: Bug) -> subprocess.CompletedProcess:
    """Run the bug's tests with the bug in place; the file is restored whatever happens."""
    path = ROOT / bug.path
    text = path.read_text()
    if text.count(bug.old) != 1:
        found = f"{bug.path} no longer holds {bug.old.strip()!r} once"
        raise SystemExit(f"error: {found}: move the row with the code")
    path.write_text(text.replace(bug.old, bug.new))
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *bug.tests],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        path.write_text(text)


def main() -> int:
    slow = "--slow" in sys.argv
    rows = {int(a) for a in sys.argv[1:] if a.isdigit()}
    missed = 0
    for number, bug in enumerate(BUGS):
        if (rows and number not in rows) or (bug.slow and not slow and not rows):
            continue
        done = plant(bug)
        failed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED")]
        verdict = "caught" if done.returncode == 1 and failed else "MISSED"
        missed += verdict == "MISSED"
        print(f"{number} {verdict}: {bug.name}\n  {bug.path}: {bug.old.strip()!r} -> "
              f"{bug.new.strip()!r}")  # fmt: skip
        for test in failed:
            print(f"  failed: {test}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
