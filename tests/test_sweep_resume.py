"""A sweep run again in its folder: the parent is re-used, FINISHED jobs are skipped (their
result read back from MLflow), the interrupted job resumes from its state, the rest run. (An
Optuna search keeps its trials in its study instead: tests/test_optuna_sweep.py.)"""

import os
import signal
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from segexp.errors import SegexpError
from segexp.tracking.run_folder import RESOLVED_CONFIG, TRACKING_DIR, RunLink
from segexp.tracking.sweep_resume import config_differences, earlier_attempt
from segexp.train import sweep_resumed
from tests.conftest import TINY_ARGS

CONFIG = {"trainer": {"seed": 1, "epochs": 2}, "resume": None, "verbose": False}


def _job_folder(tmp_path, client, experiment, parent, status, config=CONFIG, best=(0.1, 0.3)):
    """A sweep job's folder as an earlier attempt leaves it: run.json, its resolved config,
    and its child run (with val/mean_iou) in `status`."""
    run = client.create_run(experiment, tags={"mlflow.parentRunId": parent})
    for step, value in enumerate(best, start=1):
        client.log_metric(run.info.run_id, "val/mean_iou", value, step=step)
    client.set_terminated(run.info.run_id, status)
    folder = tmp_path / f"job-{status}"
    RunLink(client.tracking_uri, experiment, run.info.run_id).save(folder)
    kept = folder / TRACKING_DIR / "files" / RESOLVED_CONFIG
    kept.parent.mkdir(parents=True)
    kept.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return folder, run.info.run_id


def test_what_a_job_finds_in_its_folder_decides_skip_resume_or_new(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(experiment).info.run_id
    finished, finished_id = _job_folder(tmp_path, client, experiment, parent, "FINISHED")
    attempt = earlier_attempt(finished, parent, {**CONFIG, "verbose": True, "resume": "x"})
    assert (attempt.action, attempt.run_id, attempt.best) == ("skip", finished_id, 0.3)
    killed, killed_id = _job_folder(tmp_path, client, experiment, parent, "KILLED")
    attempt = earlier_attempt(killed, parent, CONFIG)
    assert (attempt.action, attempt.run_id, attempt.status) == ("resume", killed_id, "KILLED")
    assert earlier_attempt(tmp_path / "empty", parent, CONFIG).action == "new"
    with pytest.raises(SegexpError, match="of sweep parent .* not of this sweep's parent other"):
        earlier_attempt(finished, "other", CONFIG)  # retraining would overwrite that run
    moved = {**CONFIG, "paths": {"output_dir": "/elsewhere/0"}, "tracking": {"uri": "sqlite:///x"}}
    assert earlier_attempt(finished, parent, moved).action == "skip"  # where, not what
    changed = {**CONFIG, "trainer": {"seed": 2, "epochs": 2}}
    with pytest.raises(SegexpError, match=r"trained with another config \(trainer.seed differ\)"):
        earlier_attempt(finished, parent, changed)
    assert config_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 1}, "c": 3, "d": 4}) == [
        "c",
        "d",
    ]


def test_resume_of_a_sweep_folder_is_that_sweeps_command_again(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "mlflow_parent_run_id").write_text("abc\n")
    overrides = {  # as the sweep callback keeps them
        "hydra": ["hydra.sweep.dir=old", "hydra.mode=MULTIRUN", "hydra/launcher=joblib"],
        "task": ["optimizer=adam,sgd", "trainer.seed=1,2,3"],
    }
    (folder / "sweep_overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert sweep_resumed([f"resume={folder}", "hydra.launcher.n_jobs=2"]) == [
        "-m", "hydra/launcher=joblib", f"hydra.sweep.dir={folder.resolve()}",
        "optimizer=adam,sgd", "trainer.seed=1,2,3", "hydra.launcher.n_jobs=2",
    ]  # fmt: skip
    assert sweep_resumed(["-m", "optimizer=adam,sgd"]) == ["-m", "optimizer=adam,sgd"]
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    assert sweep_resumed([f"resume={run_folder}"]) == [f"resume={run_folder}"]  # a run's folder
    with pytest.raises(SegexpError, match="these are not allowed with it: trainer.epochs=3"):
        sweep_resumed([f"resume={folder}", "trainer.epochs=3"])


def _train(tmp_path, tiny_data, args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "segexp.train", *args], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, env=env,
    )  # fmt: skip


def _kids(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("segexp.task") == "sweep"]
    assert len(parents) == 1
    kids = {r.data.tags["hydra.output_dir"].rsplit("/", 1)[1]: r for r in runs if r not in parents}
    return parents[0], kids, runs


@pytest.mark.slow
def test_a_sweep_stopped_in_job_3_and_run_again_skips_1_and_2_and_resumes_3(tmp_path, tiny_data):
    base = [a for a in TINY_ARGS if not a.startswith(("tracking.experiment", "trainer.epochs"))]
    command = ["-m", "trainer.seed=1,2,3,4", "trainer.epochs=2", *base, "tracking.log_model=false",
               "tracking.experiment=resumed", f"paths.data_dir={tiny_data}",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    # job 3 (number 2) gets SIGTERM after its step 3 of 4: epoch 2, its state of epoch 1 saved
    first = _train(tmp_path, tiny_data, command,
                   {"SEGEXP_FAULT": "sigterm_at_step:3", "SEGEXP_FAULT_JOB": "2"})  # fmt: skip
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    assert f"to continue the sweep: python -m segexp.train resume={tmp_path / 'sweep'}" in (
        first.stderr
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, kids, _ = _kids(client, "resumed")
    assert parent.info.status == "KILLED"
    assert {k: r.info.status for k, r in kids.items()} == {
        "0": "FINISHED", "1": "FINISHED", "2": "KILLED"
    }  # fmt: skip
    before = {k: (r.info.run_id, r.info.end_time) for k, r in kids.items()}
    assert [m.step for m in client.get_metric_history(before["2"][0], "val/mean_iou")] == [1]

    again = _train(tmp_path, tiny_data, command)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    parent_again, kids, runs = _kids(client, "resumed")
    assert parent_again.info.run_id == parent.info.run_id and len(runs) == 5
    assert parent_again.info.status == "FINISHED"
    assert parent_again.data.tags["segexp.sweep_attempts"] == "2"
    assert sorted(kids) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in kids.values())
    for job in ("0", "1"):  # not retrained: same run, same end
        assert (kids[job].info.run_id, kids[job].info.end_time) == before[job]
        assert f"sweep job #{job} FINISHED earlier as run {before[job][0]}" in again.stdout
    resumed = kids["2"]
    assert resumed.info.run_id == before["2"][0] and resumed.data.tags["segexp.resumes"] == "1"
    history = client.get_metric_history(resumed.info.run_id, "val/mean_iou")
    assert sorted(m.step for m in history) == [1, 2], "epoch 1 kept, epoch 2 trained once"
    assert f"sweep job #2 continues run {before['2'][0]} (KILLED) from its state" in again.stdout
    assert "segexp.resumes" not in kids["3"].data.tags

    # one summary over all four, with the configurations over the seed (here one)
    bests = [max(m.value for m in client.get_metric_history(r.info.run_id, "val/mean_iou"))
             for r in kids.values()]  # fmt: skip
    summary = (tmp_path / "sweep" / "sweep_summary.md").read_text()
    assert summary.count("| FINISHED |") == 4 and "## Over trainer.seed" in summary
    groups = (tmp_path / "sweep" / "sweep_summary_groups.csv").read_text().splitlines()
    cells = groups[1].split(",")
    assert cells[1:3] == ["(all runs)", "4"]
    import numpy as np

    assert float(cells[3]) == pytest.approx(np.mean(bests), abs=5e-5)
    assert float(cells[4]) == pytest.approx(np.std(bests, ddof=1), abs=5e-5)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary_groups.csv", "sweep_val_mean_iou_groups.png"} <= artifacts
    # what compare checks before it puts runs side by side, as training logged it: the same data
    from segexp.tracking.comparable import FACTS, data_differences

    assert data_differences(list(kids.values())) == []
    assert all(read(r) for read in FACTS.values() for r in kids.values())
