"""A team store: tracking.uri=postgresql://... end to end on a throwaway server (training, a
stopped run resumed, the server down for a few seconds mid-run, segexp.compare)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_ARGS


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SEGEXP_FAULT")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra or {})}


def _train(tmp_path, args, extra_env=None):
    command = [sys.executable, "-m", "segexp.train", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=_env(extra_env))  # fmt: skip


@pytest.mark.slow
def test_training_resume_an_outage_and_compare_on_a_postgresql_store(tmp_path, tiny_data, postgres):
    uri = postgres.create_database("mlflow_team")
    base = [*TINY_ARGS, f"paths.data_dir={tiny_data}", f"tracking.uri={uri}",
            "tracking.experiment=team"]  # fmt: skip

    # stopped by SIGTERM in epoch 2, then resumed from its state: one run, both epochs
    first = tmp_path / "first"
    stopped = _train(tmp_path, [*base, f"hydra.run.dir={first}"],
                     {"SEGEXP_FAULT": "sigterm_at_step:3"})  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    client = MlflowClient(uri)
    run_id = json.loads((first / "tracking" / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    resumed = _train(tmp_path, [f"resume={first}", f"tracking.uri={uri}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val/mean_iou")]
    assert sorted(steps) == [1, 2]

    # the server stops for 8 s while a run trains: the outbox keeps the records and sends them
    second = tmp_path / "second"
    command = [sys.executable, "-m", "segexp.train", *base, "trainer.epochs=4",
               f"hydra.run.dir={second}"]  # fmt: skip
    with open(tmp_path / "second.log", "w") as log:
        running = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   env=_env())  # fmt: skip
        deadline = time.monotonic() + 300
        while not (second / "checkpoints" / "train_state.npz").is_file():  # epoch 1 is done
            assert running.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.2)
        postgres.stop()
        time.sleep(8)
        postgres.start()
        assert running.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    second_id = json.loads((second / "tracking" / "run.json").read_text())["run_id"]
    run = client.get_run(second_id)
    assert run.info.status == "FINISHED"
    for key in ("val/mean_iou", "train/loss", "lr"):
        assert sorted(m.step for m in client.get_metric_history(second_id, key)) == [1, 2, 3, 4]
    assert not list((second / "tracking" / "outbox").glob("*.json"))  # everything was sent
    assert [m.name for m in client.search_logged_models([run.info.experiment_id])
            if m.source_run_id == second_id] == ["model"]  # fmt: skip

    compare = subprocess.run(
        [sys.executable, "-m", "segexp.compare", "experiment=team", "--format", "csv",
         "--tracking-uri", uri, "--figure", str(tmp_path / "curves.png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    rows = list(csv.reader(compare.stdout.strip().splitlines()))
    assert rows[0][:4] == ["rank", "run", "status", "best val/mean_iou"]
    assert sorted(r[2] for r in rows[1:]) == ["FINISHED", "FINISHED"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
