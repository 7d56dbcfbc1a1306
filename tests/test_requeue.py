"""SLURM requeue through Hydra's submitit launcher: the job gets the pre-timeout/preemption
signal (USR2, as SLURM's --signal sends it), saves its state at the step's end and is requeued;
the requeued job continues the same MLflow run. Run with submitit's local executor, which
requeues a job the way SLURM does."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_ARGS


@pytest.mark.slow
def test_a_submitit_job_signalled_to_requeue_continues_its_run(tmp_path, tiny_data):
    base = [a for a in TINY_ARGS if not a.startswith(("trainer.epochs", "tracking.experiment"))]
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "segexp.train", "-m", "hydra/launcher=submitit_local",
               "trainer.seed=1", "trainer.epochs=4", *base, "tracking.experiment=requeue",
               "tracking.log_model=false", f"paths.data_dir={tiny_data}",
               f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(tmp_path / "sweep.log", "w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   env=env)  # fmt: skip
        deadline = time.monotonic() + 300
        while not (sweep / "0" / "checkpoints" / "train_state.npz").is_file():  # epoch 1 done
            assert process.poll() is None and time.monotonic() < deadline, "no epoch ended"
            time.sleep(0.1)
        jobs = [p for p in psutil.Process(process.pid).children(recursive=True)
                if "submitit.core._submit" in " ".join(p.cmdline())]  # fmt: skip
        assert len(jobs) == 1
        jobs[0].send_signal(signal.SIGUSR2)  # SLURM: --signal=USR2@<seconds before the limit>
        assert process.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    outputs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2 received: saving a checkpoint after this step, then requeuing" in outputs
    assert "submitit requeues this job" in outputs
    assert "continues run" in outputs  # the requeued job found the run and resumed it
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("requeue").experiment_id])
    children = [r for r in runs if r.data.tags.get("segexp.task") != "sweep"]
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # one run, continued
    history = client.get_metric_history(children[0].info.run_id, "val/mean_iou")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # every epoch once
