"""Crash, interrupt and fault tolerance of training, end to end (subprocesses, real signals).

Seven tiny deterministic 3-epoch jobs start at once on one fresh SQLite store (which is also the
concurrency test): one runs uninterrupted, the others meet a fault at an exact point through
SEGEXP_FAULT (segexp.training.faults) and are then resumed. A resumed run must give the
uninterrupted run's metric history and weights.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 3, 2  # 8 training images in batches of 4
ARGS = [
    "backbone=tiny",
    "image_size=64",
    "aspp.filters=16",
    f"trainer.epochs={EPOCHS}",
    "trainer.batch_size=4",
    "trainer.verbose=0",
    "trainer.deterministic=true",
    "dataset.num_train=8",
    "dataset.num_val=4",
    "dataset.min_size=48",
    "dataset.max_size=80",
    "tracking.log_model=false",
    "tracking.experiment=reliability",
]
FAULTS = {
    "full": None,
    "sigkill": "kill_at_step:3",  # epoch 2, step 1
    "sigint": "sigint_at_step:3",
    "sigterm": "sigterm_at_step:4",  # the last step of epoch 2
    "kill_in_save": "kill_in_save:2",  # while writing epoch 2's state
    "nan": "nan_at_step:4",
    "kill_after_state": "kill_after_state:1",  # epoch 1's state written, its metrics not yet
}


def _env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SEGEXP_FAULT")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if fault:
        env["SEGEXP_FAULT"] = fault
    return env


def _start(workdir: Path, args: list[str], fault: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segexp.train", *args],
        cwd=workdir,
        env=_env(fault),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: int = 900) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _train_args(workdir: Path, name: str) -> list[str]:
    return [*ARGS, f"hydra.run.dir={workdir / name}", f"paths.data_dir={workdir / 'data' / name}"]


def _resume(workdir: Path, name: str, fault: str | None = None) -> subprocess.Popen:
    return _start(workdir, [f"resume={workdir / name}"], fault)


def _progress(folder: Path) -> dict:
    with np.load(folder / "checkpoints" / "train_state.npz") as state:
        return json.loads(state["meta"].tobytes().decode())["progress"]


def _weights(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "checkpoints" / "train_state.npz") as state:
        return {k: state[k] for k in state.files if k.startswith(("model/", "optimizer/"))}


def _keras_weights(path: Path) -> list[np.ndarray]:
    import keras

    import segexp.evaluation.metrics  # noqa: F401  (custom objects)
    import segexp.models.layers  # noqa: F401

    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Phase 1: seven jobs at once on a fresh store, each with its fault. Returns their results."""
    workdir = tmp_path_factory.mktemp("reliability")
    started = {name: _start(workdir, _train_args(workdir, name), f) for name, f in FAULTS.items()}
    done = {name: _finish(p) for name, p in started.items()}
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = {}
    for run in client.search_runs([client.get_experiment_by_name("reliability").experiment_id]):
        runs[Path(run.data.tags["hydra.output_dir"]).name] = run.info.run_id
    state = {name: _progress(workdir / name) for name in FAULTS}  # before any resume
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    partial = (workdir / "kill_in_save" / "checkpoints" / ".train_state.partial.npz").exists()
    return {"workdir": workdir, "done": done, "client": client, "runs": runs, "state": state,
            "status": status, "partial_left": partial}  # fmt: skip


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _assert_same_run_as_full(faults: dict, name: str) -> None:
    """Same metric history (every key, one point per epoch) and the same final and best weights
    as the uninterrupted run."""
    client, runs, workdir = faults["client"], faults["runs"], faults["workdir"]
    full, mine = client.get_run(runs["full"]), client.get_run(runs[name])
    assert mine.info.status == "FINISHED"
    assert set(mine.data.metrics) == set(full.data.metrics)
    assert _history(client, runs[name], "data/skipped_files") == [(0, 0.0)]
    for key in full.data.metrics:
        if key.startswith(("system/", "perf/")):  # the machine's samples and timings, not the
            continue  # model's: not compared
        got, want = _history(client, runs[name], key), _history(client, runs["full"], key)
        if [s for s, _ in want] == [0]:  # once per run (val/baseline_mean_iou): not doubled
            assert got == want, (key, got)
            continue
        assert [s for s, _ in got] == list(range(1, EPOCHS + 1)), (key, got)
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=0, atol=1e-6)
    differing = {k for k, v in full.data.params.items() if mine.data.params.get(k) != v} - {
        "paths.output_dir",
        "paths.data_dir",
        "trainer.checkpoint_dir",
        "dataset.root",
        "dataset.cache_dir",
    }
    assert not differing, differing
    ours, theirs = _weights(workdir / name), _weights(workdir / "full")
    assert ours.keys() == theirs.keys()
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-6, err_msg=key)
    best_full = _keras_weights(workdir / "full" / "checkpoints" / "best.keras")
    best_mine = _keras_weights(workdir / name / "checkpoints" / "best.keras")
    for a, b in zip(best_mine, best_full, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert _progress(workdir / name)["best_epoch"] == _progress(workdir / "full")["best_epoch"]


@pytest.fixture(scope="module")
def resumed(faults: dict) -> dict:
    """Phase 2 and 3: mark the SIGKILLed run KILLED with segexp.sync, resume it once into a
    second SIGKILL (epoch 3) and once to the end; resume the others to the end."""
    workdir, client, runs = faults["workdir"], faults["client"], faults["runs"]
    info = {"sigkill_status_after_kill": faults["status"]["sigkill"]}
    info["sync"] = subprocess.run(
        [sys.executable, "-m", "segexp.sync", str(workdir / "sigkill")],
        capture_output=True, text=True, env=_env(None), timeout=300,
    )  # fmt: skip
    info["sigkill_status_after_sync"] = client.get_run(runs["sigkill"]).info.status
    second = {
        "sigkill": _resume(workdir, "sigkill", "kill_at_step:5"),  # epoch 3, step 1
        "sigterm": _resume(workdir, "sigterm"),
        "kill_in_save": _resume(workdir, "kill_in_save"),
        "sigint": _resume(workdir, "sigint"),
        "kill_after_state": _resume(workdir, "kill_after_state"),
    }
    info["after_state_history"] = _history(client, runs["kill_after_state"], "val/mean_iou")
    info["phase2"] = {name: _finish(p) for name, p in second.items()}
    info["sigkill_status_after_second_kill"] = client.get_run(runs["sigkill"]).info.status
    info["sigkill_history_after_second_kill"] = _history(client, runs["sigkill"], "val/mean_iou")
    info["phase3"] = _finish(_resume(workdir, "sigkill"))
    return info


def test_seven_parallel_jobs_on_one_sqlite_store_log_everything(faults):
    done, client, runs = faults["done"], faults["client"], faults["runs"]
    assert set(runs) == set(FAULTS), "one run per job, none lost"
    assert done["full"].returncode == 0, done["full"].stderr[-3000:]
    full = client.get_run(runs["full"])
    assert full.info.status == "FINISHED"
    for key in ("train/loss", "val/mean_iou", "val/iou/background", "lr"):
        assert [s for s, _ in _history(client, runs["full"], key)] == [1, 2, 3]
    for name in set(runs) - {"kill_after_state"}:  # every job logged every param before its
        # fault (the model size params of the one killed at epoch 1's end wait in its outbox)
        assert len(client.get_run(runs[name]).data.params) == len(full.data.params), name


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_run(faults, resumed):
    assert faults["done"]["sigkill"].returncode == -signal.SIGKILL
    assert resumed["sigkill_status_after_kill"] == "RUNNING", "nobody is left to end it"
    assert resumed["sync"].returncode == 0, resumed["sync"].stderr
    assert "marking run" in resumed["sync"].stdout
    assert resumed["sigkill_status_after_sync"] == "KILLED"
    assert resumed["phase2"]["sigkill"].returncode == -signal.SIGKILL
    assert resumed["sigkill_status_after_second_kill"] == "RUNNING", "resume reopened the run"
    assert [s for s, _ in resumed["sigkill_history_after_second_kill"]] == [1, 2]
    assert resumed["phase3"].returncode == 0, resumed["phase3"].stderr[-3000:]
    _assert_same_run_as_full(faults, "sigkill")


@pytest.mark.parametrize(("name", "signum", "step"), [("sigint", signal.SIGINT, 1),
                                                      ("sigterm", signal.SIGTERM, 2)])  # fmt: skip
def test_sigint_and_sigterm_save_a_checkpoint_and_end_killed(faults, name, signum, step):
    done, workdir = faults["done"][name], faults["workdir"]
    assert done.returncode == 128 + signum, done.stderr[-3000:]
    assert f"python -m segexp.train resume={workdir / name}" in done.stderr
    assert faults["status"][name] == "KILLED"
    progress = faults["state"][name]
    assert (progress["epochs_done"], progress["steps_done"]) == (1, step)


def test_sigterm_mid_epoch_resume_gives_the_uninterrupted_run(faults, resumed):
    process = resumed["phase2"]["sigterm"]
    assert process.returncode == 0, process.stderr[-3000:]
    _assert_same_run_as_full(faults, "sigterm")


def test_sigint_mid_epoch_with_steps_left_resumes_to_the_uninterrupted_run(faults, resumed):
    """Stopped after step 1 of 2 of epoch 2: the resume restores the train metrics' running
    sums and trains the remaining step."""
    assert faults["state"]["sigint"]["steps_done"] == 1
    process = resumed["phase2"]["sigint"]
    assert process.returncode == 0, process.stderr[-3000:]
    _assert_same_run_as_full(faults, "sigint")


def test_a_kill_between_the_state_and_the_metrics_loses_no_epoch(faults, resumed):
    """The state (the commit point) holds epoch 1, MLflow not yet: the resume sends it from
    the state, and every epoch's metrics end up in MLflow exactly once."""
    assert faults["done"]["kill_after_state"].returncode == -signal.SIGKILL
    assert faults["state"]["kill_after_state"]["epochs_done"] == 1
    assert resumed["after_state_history"] == [], "killed before epoch 1's metrics were recorded"
    process = resumed["phase2"]["kill_after_state"]
    assert process.returncode == 0, process.stderr[-3000:]
    _assert_same_run_as_full(faults, "kill_after_state")  # each key: steps 1, 2, 3 once


def test_a_kill_while_saving_leaves_the_previous_state_usable(faults, resumed):
    done = faults["done"]["kill_in_save"]
    assert done.returncode == -signal.SIGKILL
    assert faults["partial_left"], "killed while the temporary file was being written"
    assert faults["state"]["kill_in_save"]["epochs_done"] == 1, "the previous state is intact"
    process = resumed["phase2"]["kill_in_save"]
    assert process.returncode == 0, process.stderr[-3000:]
    _assert_same_run_as_full(faults, "kill_in_save")


def test_nan_loss_fails_the_run_naming_epoch_and_step_and_keeps_the_good_state(faults):
    done, workdir = faults["done"]["nan"], faults["workdir"]
    assert done.returncode == 1
    assert "error: the training loss is nan at epoch 2, step 2 of 2" in done.stderr
    assert "learning rate" in done.stderr and "mixed precision" in done.stderr
    assert "Traceback" not in done.stderr
    assert faults["status"]["nan"] == "FAILED"
    assert faults["state"]["nan"]["epochs_done"] == 1
    assert all(np.isfinite(w).all() for w in _weights(workdir / "nan").values())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server-artifacts")],
        cwd=folder, env=_env(None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def _wait_for(condition, process: subprocess.Popen, timeout_s: float = 600) -> None:
    """Poll `condition` while `process` runs; fail (not hang) past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"waited {timeout_s} s"
        time.sleep(0.1)


def test_tracking_server_down_for_an_epoch_loses_nothing(tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    run_dir = tmp_path / "run"
    args = [*ARGS, "dataset.num_train=48", f"tracking.uri={uri}", f"hydra.run.dir={run_dir}",
            f"paths.data_dir={tmp_path / 'data'}", "tracking.log_model=true"]  # fmt: skip
    training = _start(tmp_path, args)
    try:
        _wait_for(lambda: (run_dir / "checkpoints" / "train_state.npz").exists(), training)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes away after epoch 1
        server.wait()
        _wait_for(lambda: _progress(run_dir)["epochs_done"] >= 2, training)
        # the state is written before its epoch's records: wait until they are queued
        outbox = run_dir / "tracking" / "outbox"
        _wait_for(lambda: any(outbox.glob("*.json")), training)
        waiting = len(list(outbox.glob("*.json")))
        server = _start_server(tmp_path, port)
        done = _finish(training)
    finally:
        if training.poll() is None:
            training.kill()
        os.killpg(server.pid, signal.SIGKILL)
    assert waiting >= 1, "epoch 2's metrics waited in the outbox"
    assert done.returncode == 0, done.stderr[-3000:]
    # the cause named depends on where the outage meets the request (refused, reset, timed out)
    assert f"warning: tracking store {uri} cannot take records now (" in done.stderr
    server = _start_server(tmp_path, port)
    try:
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("reliability").experiment_id])[0]
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/mean_iou", "val/iou/background", "lr"):
            assert [s for s, _ in _history(client, run.info.run_id, key)] == [1, 2, 3], key
        # the per-epoch images (4 val images, tracking.num_prediction_samples) and the system
        # metrics went through the outbox too: none lost, none doubled
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        steps = sorted(int(p.split("+")[2]) for p in images if p.endswith(".png"))
        assert steps == sorted([1, 2, 3] * 4)
        assert client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"learning_curves.png", "config", "data", ".hydra"} <= artifacts
        models = client.search_logged_models([run.info.experiment_id])
        assert sorted(m.name for m in models) == ["model"]
        assert not list((run_dir / "tracking" / "outbox").glob("*.json"))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
