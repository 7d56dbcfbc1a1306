"""Faults outside the training loop, end to end (subprocesses, real signals): a signal before
training and while the model is logged, a full disk, two processes on one run, a resume of a
finished run. Each ends with one line, the right exit code and the right MLflow status."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segexp.tracking.run_folder import training_lock
from tests.test_reliability import _env, _start  # one way to start a faulted job

pytestmark = pytest.mark.slow

ARGS = [
    "backbone=tiny",
    "image_size=64",
    "aspp.filters=16",
    "trainer.batch_size=4",
    "trainer.verbose=0",
    "dataset.num_train=4",
    "dataset.num_val=2",
    "dataset.min_size=48",
    "dataset.max_size=64",
    "tracking.log_model=false",
    "tracking.experiment=faults",
]


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=900)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _new(workdir: Path, name: str, *extra: str) -> list[str]:
    return [*ARGS, *extra, f"hydra.run.dir={workdir / name}", f"paths.data_dir={workdir / 'data'}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four jobs at once: SIGTERM just after the run opens, a disk that fills up while the
    state of epoch 2 is written, SIGTERM while the final model is logged, Ctrl-C twice while
    the train step is traced."""
    workdir = tmp_path_factory.mktemp("run_faults")
    (workdir / "data").mkdir()
    started = {
        "run_open": _start(workdir, _new(workdir, "run_open", "trainer.epochs=1"),
                           "sigterm_at:run_open"),
        "disk_full": _start(workdir, _new(workdir, "disk_full", "trainer.epochs=2"),
                            "disk_full_in_save:2"),
        "model_log": _start(workdir, _new(workdir, "model_log", "trainer.epochs=1",
                                          "tracking.log_model=true"), "sigterm_at:model_log"),
        "trace": _start(workdir, _new(workdir, "trace", "trainer.epochs=1"),
                        "sigint_twice_at:trace"),
    }  # fmt: skip
    done = {name: _finish(process) for name, process in started.items()}
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults").experiment_id
    ids = {Path(r.data.tags["hydra.output_dir"]).name: r.info.run_id
           for r in client.search_runs([experiment])}  # fmt: skip
    return {"workdir": workdir, "done": done, "client": client, "ids": ids,
            "experiment": experiment}  # fmt: skip


def _job(runs: dict, name: str) -> tuple[subprocess.CompletedProcess, str, Path]:
    return runs["done"][name], runs["ids"][name], runs["workdir"] / name


def _one_line(stderr: str, start: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if x.startswith(start)]
    return line


def test_a_second_ctrl_c_while_the_step_is_traced_ends_the_run_killed_in_one_line(runs):
    done, run_id, folder = _job(runs, "trace")
    assert done.returncode == 130, done.stderr[-3000:]
    assert "SIGINT received: saving a checkpoint after this step" in done.stderr  # the first
    line = _one_line(done.stderr, "segexp: SIGINT:")
    assert line == (
        "segexp: SIGINT: stopped at once; the run is marked KILLED and its state is saved."
    )
    assert f"to continue it: python -m segexp.train resume={folder}" in done.stderr
    run = runs["client"].get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.params["backbone.name"] == "tiny"  # what was logged before it reached MLflow
    assert not list((folder / "tracking" / "outbox").glob("*.json"))


def test_sigterm_after_the_run_opens_ends_it_killed_and_it_resumes(runs):
    workdir, client = runs["workdir"], runs["client"]
    done, run_id, folder = _job(runs, "run_open")
    assert done.returncode == 143, done.stderr[-3000:]
    line = _one_line(done.stderr, "segexp: SIGTERM")
    assert line == ("segexp: SIGTERM: training stopped at once (outside the training loop); "
                    "the run is marked KILLED and its state is saved.")  # fmt: skip
    assert f"to continue it: python -m segexp.train resume={folder}" in done.stderr
    assert client.get_run(run_id).info.status == "KILLED"
    assert (folder / "tracking" / "files" / "config" / "resolved.yaml").is_file()

    with training_lock(folder):  # a second process on the same run gets one line
        busy = subprocess.run([sys.executable, "-m", "segexp.train", f"resume={folder}"],
                              cwd=workdir, env=_env(None), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
    assert busy.returncode == 1
    line = _one_line(busy.stderr, "error:")
    assert line == (f"error: {folder} is being trained by process {os.getpid()} on "
                    f"{os.uname().nodename} (it holds {folder / 'tracking' / 'train.lock'}); "
                    "wait for it to end or stop it, then resume the run")  # fmt: skip
    assert client.get_run(run_id).info.status == "KILLED", "the refused resume changed nothing"

    resumed = _finish(_start(workdir, [f"resume={folder}"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/mean_iou")] == [1]

    again = _finish(_start(workdir, [f"resume={folder}"]))
    assert again.returncode == 1
    assert _one_line(again.stderr, "error:") == (
        f"error: resume={folder}: run {run_id} is FINISHED; to train longer start a new run "
        "(e.g. with trainer.epochs=N and the same overrides); to reopen it anyway (it re-logs "
        "its end) add resume_finished=true"
    )
    assert client.get_run(run_id).info.end_time == run.info.end_time, "its end is not rewritten"


def test_a_full_disk_fails_the_run_in_one_line_keeping_epoch_1(runs):
    client = runs["client"]
    done, run_id, folder = _job(runs, "disk_full")
    assert done.returncode == 1
    state = folder / "checkpoints" / "train_state.npz"
    assert _one_line(done.stderr, "error:") == (
        f"error: {state}: No space left on device: the run is marked FAILED; what was saved "
        f"before is kept. Free space (or make it writable), then continue with: "
        f"python -m segexp.train resume={folder}"
    )
    assert client.get_run(run_id).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run_id, "val/mean_iou")] == [1]
    with np.load(state) as saved:
        assert json.loads(saved["meta"].tobytes().decode())["progress"]["epochs_done"] == 1


def test_sigterm_while_the_model_is_logged_ends_killed_and_sync_finishes_it(runs):
    workdir, client = runs["workdir"], runs["client"]
    done, run_id, folder = _job(runs, "model_log")
    assert done.returncode == 143, done.stderr[-3000:]
    _one_line(done.stderr, "segexp: SIGTERM")
    assert client.get_run(run_id).info.status == "KILLED"
    assert not [m for m in client.search_logged_models([runs["experiment"]])
                if m.source_run_id == run_id and str(m.status) == "READY"]  # fmt: skip
    synced = subprocess.run(
        [sys.executable, "-m", "segexp.sync", str(folder)],
        cwd=workdir, env=_env(None), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert client.get_run(run_id).info.status == "FINISHED", "the training had finished"
    models = [m for m in client.search_logged_models([runs["experiment"]])
              if m.source_run_id == run_id]  # fmt: skip
    assert [(m.name, str(m.status)) for m in models] == [("model", "READY")]
    assert not list((folder / "tracking" / "outbox").glob("*.json"))
