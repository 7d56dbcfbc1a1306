"""`resume=` answers every bad target with one line and exit 1, before TensorFlow is loaded."""

import pytest

from tests.conftest import run_segexp


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("{tmp}/nowhere", [],
         "resume={tmp}/nowhere: no such folder, and not an MLflow run id (32 hex digits)"),
        ("{tmp}", [], "resume={tmp}: {tmp} is not a segexp run folder (no tracking/run.json); "
                      "give the output folder or MLflow run id of a run"),
        ("0123456789abcdef0123456789abcdef", [],
         "resume=0123456789abcdef0123456789abcdef: no such run in sqlite:///{tmp}/mlflow.db"),
        ("{tmp}", ["trainer.epochs=9"],
         "resume= continues a run with its own config; these overrides are not allowed with "
         "it: trainer.epochs=9 (only tracking.uri, resume_finished and hydra.* are)"),
    ],
)  # fmt: skip
def test_bad_resume_targets_get_one_line(tmp_path, target, extra, message):
    target = target.format(tmp=tmp_path)
    done = run_segexp([f"resume={target}", *extra], cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {message.format(tmp=tmp_path)}"], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
