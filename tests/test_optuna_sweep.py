"""segexp's Optuna sweeper: search spaces in Hydra's syntax, a persistent study shared by several
processes (SQLite and PostgreSQL) under one MLflow parent, a sweep killed mid-trial and started
again, and pruning with several local workers."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError
from segexp.search.space import search_space
from segexp.secrets import redact as redacted
from segexp.tracking.study import default_storage, storage_url
from tests.conftest import TINY_ARGS

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def test_a_search_space_in_hydras_syntax_becomes_optuna_distributions():
    space = search_space(
        {"optimizer.learning_rate": "tag(log, interval(0.0001, 0.01))",
         "optimizer": "choice(adam, sgd)", "trainer.batch_size": "choice(4, 8)",
         "aspp.rates": "choice([6,12],[12,24])", "trainer.epochs": "tag(int, interval(1, 4))",
         "image_size": "choice(64, 128)"},
        ["image_size=96", "trainer.seed=1,2", "backbone=tiny"],
    )  # fmt: skip
    d = space.distributions
    assert d["optimizer.learning_rate"] == optuna.distributions.FloatDistribution(
        0.0001, 0.01, log=True
    )
    assert d["optimizer"].choices == ("adam", "sgd")
    assert d["trainer.batch_size"].choices == (4, 8)  # numbers stay numbers
    assert d["aspp.rates"].choices == ("[6,12]", "[12,24]")  # lists as their override text
    assert d["trainer.epochs"] == optuna.distributions.IntDistribution(1, 4)
    assert d["trainer.seed"].choices == (1, 2)  # a command-line sweep joins the space
    assert "image_size" not in d  # a plain command-line value fixes a searched key
    assert space.fixed == ["image_size=96", "backbone=tiny"]
    params = {"optimizer.learning_rate": 0.00123, "optimizer": "sgd", "trainer.batch_size": 8,
              "aspp.rates": "[12,24]", "trainer.epochs": 3, "trainer.seed": 2}  # fmt: skip
    assert space.overrides(params) == [
        "optimizer.learning_rate=0.00123", "optimizer=sgd", "trainer.batch_size=8",
        "aspp.rates=[12,24]", "trainer.epochs=3", "trainer.seed=2", "image_size=96",
        "backbone=tiny",
    ]  # fmt: skip
    with pytest.raises(SegexpError, match=r"hydra.sweeper.params.optimizer.learning_rate"):
        search_space({"optimizer.learning_rate": "tag(log, interval(0, 1))"}, [])


def test_the_default_study_sits_beside_a_local_store_and_a_remote_store_needs_one(tmp_path):
    db = tmp_path / "runs" / "mlflow.db"
    assert default_storage(f"sqlite:///{db}") == f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert storage_url("postgresql://u@h/optuna", f"sqlite:///{db}") == "postgresql://u@h/optuna"
    with pytest.raises(SegexpError, match=r"hydra.sweeper.storage=null.*u:\*\*\*@host"):
        default_storage("postgresql://u:secret@host/mlflow")
    assert redacted("postgresql://u:secret@host:5432/db") == "postgresql://u:***@host:5432/db"
    assert redacted("sqlite:////a/b.db") == "sqlite:////a/b.db"


def _sweep_args(tmp_path, tiny_data, n_trials, *extra):
    base = [a for a in TINY_ARGS if not a.startswith(("tracking.experiment", "backbone="))]
    return ["-m", "hparams_search=deeplab_optuna", f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.params.backbone='choice(tiny)'", "trainer.batch_size=4", *base,
            "tracking.log_model=false", "tracking.experiment=study",
            f"paths.data_dir={tiny_data}", *extra]  # fmt: skip


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SEGEXP_FAULT")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra or {})}


def _start(tmp_path, args, name, env=None):
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115  (closed by _wait)
    command = [sys.executable, "-m", "segexp.train", *args]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env=_env(env))  # fmt: skip
    process.log = log
    return process


def _wait(process, timeout=900):
    try:
        process.wait(timeout=timeout)
    finally:
        process.log.close()
    return process.returncode, open(process.log.name).read()


def _one_parent_with_children(client, experiment="study"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("segexp.task") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(kids) == len(runs) - 1  # every other run is a child of that parent
    return parents[0], kids


def _two_processes_share_a_study(tmp_path, tiny_data, storage, tracking):
    """Two sweeps with the same storage and study name, started 5 s apart (their own sweep
    folders): 6 trials between them, 6 children under one parent."""
    extra = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s"]
    if tracking:
        extra.append(f"tracking.uri={tracking}")
    first = _start(tmp_path, _sweep_args(tmp_path, tiny_data, 6, *extra,
                                         f"hydra.sweep.dir={tmp_path / 'a'}"), "a")  # fmt: skip
    time.sleep(5)
    second = _start(tmp_path, _sweep_args(tmp_path, tiny_data, 6, *extra,
                                          f"hydra.sweep.dir={tmp_path / 'b'}"), "b")  # fmt: skip
    (code_a, log_a), (code_b, log_b) = _wait(first), _wait(second)
    assert code_a == 0 and code_b == 0, log_a[-3000:] + log_b[-3000:]
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == COMPLETE for t in trials)
    ran = {name: {int(p.name) for p in (tmp_path / name).iterdir() if p.name.isdigit()}
           for name in ("a", "b")}  # fmt: skip
    assert ran["a"] and ran["b"], ran  # the second process took trials too
    assert ran["a"] | ran["b"] == set(range(6)) and not ran["a"] & ran["b"]
    client = MlflowClient(tracking or f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, kids = _one_parent_with_children(client)
    assert len(kids) == 6 and all(k.info.status == "FINISHED" for k in kids)
    assert parent.info.status == "FINISHED"  # closed by whichever process ended last
    assert sorted(int(k.info.run_name.rsplit("#", 1)[1]) for k in kids) == list(range(6))
    assert "closes the MLflow parent run" in log_a + log_b  # the first to end left it open
    written = [tmp_path / n / "optimization_results.yaml" for n in ("a", "b")]
    results = [yaml.safe_load(f.read_text()) for f in written if f.is_file()]
    assert len(results) == 1 and results[0]["best_value"] == pytest.approx(study.best_value)
    assert parent.data.metrics["best/value"] == pytest.approx(study.best_value)


@pytest.mark.slow
def test_two_sweep_processes_share_one_sqlite_study_and_one_parent(tmp_path, tiny_data):
    _two_processes_share_a_study(tmp_path, tiny_data, f"sqlite:///{tmp_path / 'study.db'}", None)


@pytest.mark.slow
def test_two_sweep_processes_share_a_study_and_a_store_on_postgresql(tmp_path, tiny_data, postgres):
    tracking = postgres.create_database("mlflow_shared")
    storage = postgres.create_database("optuna_shared")
    _two_processes_share_a_study(tmp_path, tiny_data, storage, tracking)


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_and_started_again_ends_with_n_trials(tmp_path, tiny_data):
    """SIGKILL during trial 2 (after its first epoch's state): the same command again takes
    the trial over and resumes its child run; the study ends with 4 trials, none twice."""
    args = _sweep_args(tmp_path, tiny_data, 4, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    killed = _start(tmp_path, args, "killed",
                    {"SEGEXP_FAULT": "kill_at_step:3", "SEGEXP_FAULT_JOB": "2"})  # fmt: skip
    code, _ = _wait(killed)
    assert code == -signal.SIGKILL
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    _, kids = _one_parent_with_children(client)
    before = {k.info.run_name.rsplit("#", 1)[1]: k for k in kids}
    assert before["2"].info.status == "RUNNING"  # nobody ended it: the process was killed
    study = optuna.load_study(study_name="deeplab", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE", "RUNNING"]

    code, log = _wait(_start(tmp_path, args, "again"))
    assert code == 0, log[-3000:]
    assert "this worker takes over trial 2" in log
    assert "continues run" in log  # the child run resumes from its saved state
    study = optuna.load_study(study_name="deeplab", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.get_trials()] == [COMPLETE] * 4
    _, kids = _one_parent_with_children(client)
    after = {k.info.run_name.rsplit("#", 1)[1]: k for k in kids}
    assert sorted(after) == ["0", "1", "2", "3"] and len(kids) == 4
    assert after["2"].info.run_id == before["2"].info.run_id  # the same run, resumed
    assert all(k.info.status == "FINISHED" for k in kids)
    for number in ("0", "1"):  # not run again
        assert after[number].info.end_time == before[number].info.end_time
    epochs = [m.step for m in client.get_metric_history(after["2"].info.run_id, "val/mean_iou")]
    assert sorted(epochs) == [1, 2]


@pytest.mark.slow
def test_hyperband_with_two_local_workers_prunes_weak_trials_after_an_epoch(tmp_path, tiny_data):
    """10 trials of 4 epochs, two workers on this machine (n_jobs=2), Hyperband: some trials
    stop early, PRUNED in the study and tagged on their child runs with fewer val points."""
    args = _sweep_args(
        tmp_path, tiny_data, 10, "trainer.epochs=4", "hydra/sweeper/pruner=hyperband",
        "hydra.sweeper.sampler.seed=3",
        "optimizer.learning_rate=tag(log, interval(0.00001, 0.3))",  # the command line's space
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.keep_best=2", f"hydra.sweep.dir={tmp_path / 's'}",
    )  # fmt: skip
    code, log = _wait(_start(tmp_path, args, "pruned"))
    assert code == 0, log[-3000:]
    worker = (tmp_path / "s" / "worker-1.log").read_text()
    assert "this worker runs trial" in log and "this worker runs trial" in worker
    study = optuna.load_study(study_name="deeplab", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in study.get_trials()]
    assert len(states) == 10 and set(states) <= {COMPLETE, PRUNED}
    assert PRUNED in states and COMPLETE in states, states
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    _, kids = _one_parent_with_children(client)
    by_number = {int(k.info.run_name.rsplit("#", 1)[1]): k for k in kids}
    for trial in study.get_trials():
        run = by_number[trial.number]
        points = len(client.get_metric_history(run.info.run_id, "val/mean_iou"))
        assert run.info.status == "FINISHED"
        if trial.state == PRUNED:
            assert run.data.tags.get("segexp.pruned") == "true" and points < 4
            assert sorted(trial.intermediate_values) == list(range(1, points + 1))
        else:
            assert "segexp.pruned" not in run.data.tags and points == 4
    # keep_best=2: only the two best trials keep their checkpoints
    kept = [n for n in range(10) if (tmp_path / "s" / str(n) / "checkpoints").is_dir()]
    best = sorted((t for t in study.get_trials() if t.state == COMPLETE),
                  key=lambda t: -t.value)[:2]  # fmt: skip
    assert sorted(kept) == sorted(t.number for t in best)


def test_a_jobs_trial_reports_each_epoch_and_asks_the_sweeps_own_pruner(tmp_path):
    from segexp.tracking.study import PRUNED_ATTR, JobTrial, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for pruner, stops in ((optuna.pruners.NopPruner(), False),
                          (optuna.pruners.ThresholdPruner(lower=0.5), True)):  # fmt: skip
        trial = study.ask()
        job = JobTrial(storage, "s", trial.number, pruner)
        assert job.should_stop(1, {"val_mean_iou": 0.25}) is stops  # below the threshold
        assert job.should_stop(2, {"val_loss": 1.0}) is False  # no val mean IoU: nothing said
        assert job.should_stop(3, {"val_mean_iou": 0.25}, last=True) is False  # never the last
        frozen = storage.get_trial(trial._trial_id)
        assert frozen.intermediate_values == {1: 0.25, 3: 0.25}
        assert frozen.user_attrs.get(PRUNED_ATTR, False) is stops
