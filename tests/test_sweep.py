"""`python -m segexp.train -m ...`: one MLflow parent run per sweep, a child per job, a summary."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segexp.tracking.sweep import sweep_run_name, varying_keys
from tests.conftest import TINY_ARGS


def test_the_keys_a_sweep_varies_come_from_its_overrides_and_its_search_space():
    overrides = [
        "backbone=tiny",
        "aspp.rates=[6,12,18],[12,24,36]",
        "+trainer.extra=1,2",
        "optimizer=choice(adam,sgd)",
        "hydra.sweeper.params.backbone=choice(tiny)",  # the sweeper's space, read below
        "trainer.epochs=range(1,3)",
    ]
    space = {"optimizer.learning_rate": "tag(log, interval(0.0001, 0.01))", "backbone": "x"}
    assert varying_keys(overrides, space) == [
        "aspp.rates", "trainer.extra", "optimizer", "trainer.epochs",
        "optimizer.learning_rate", "backbone",
    ]  # fmt: skip
    assert varying_keys(["backbone=tiny"], None) == []


def test_a_sweeps_parent_run_is_named_by_what_it_varies():
    overrides = ["backbone=tiny", "optimizer=adam,sgd", "aspp.rates=[6,12,18],[12,24,36]"]
    varying = varying_keys(overrides, {"optimizer.learning_rate": "interval(0.0001, 0.01)"})
    assert sweep_run_name(overrides, varying) == (
        "sweep optimizer=adam,sgd aspp.rates=[6,12,18],[12,24,36] optimizer.learning_rate"
    )
    assert sweep_run_name(["backbone=tiny"], []) == "sweep"


@pytest.mark.slow
def test_a_sweep_is_one_parent_with_a_child_per_job_and_a_summary(tmp_path, tiny_data):
    args = [a for a in TINY_ARGS if not a.startswith(("trainer.epochs", "tracking.experiment"))]
    done = subprocess.run(
        [sys.executable, "-m", "segexp.train", "-m", "aspp.rates=[6,12,18],[12,24,36]",
         "trainer.epochs=0,1", *args, "tracking.log_model=false", "tracking.experiment=sweep",
         f"paths.data_dir={tiny_data}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )  # fmt: skip
    assert done.returncode != 0, "a failed job makes the sweep fail"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    parents = [r for r in runs if r.data.tags.get("segexp.task") == "sweep"]
    assert len(parents) == 1, done.stderr[-3000:]
    parent = parents[0]
    assert parent.info.run_name == "sweep aspp.rates=[6,12,18],[12,24,36] trainer.epochs=0,1"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 4 and len(runs) == 5
    assert sorted(r.info.status for r in kids) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    finished = [r for r in kids if r.info.status == "FINISHED"]
    assert sorted(r.data.params["aspp.rates"] for r in finished) == ["[12, 24, 36]", "[6, 12, 18]"]
    assert all(r.info.run_name.startswith("aspp.rates=[") for r in kids)
    assert sorted(r.info.run_name for r in kids) == sorted(
        f"aspp.rates={rates} trainer.epochs={epochs} #{num}"
        for num, (rates, epochs) in enumerate(
            (r, e) for r in ("[6,12,18]", "[12,24,36]") for e in (0, 1)
        )
    )  # the failed jobs too; the constant overrides (backbone=tiny, ...) left out
    failed = [r for r in kids if r.info.status == "FAILED"]
    assert all("trainer.epochs=0 is not allowed" in r.data.tags["segexp.error"] for r in failed)
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["sweep/children"] == 4 and parent.data.metrics["sweep/failed"] == 2
    summary = (tmp_path / "sweep" / "sweep_summary.md").read_text()
    assert summary.count("FINISHED") == 2 and summary.count("FAILED") == 2
    best = max(
        max(m.value for m in client.get_metric_history(r.info.run_id, "val/mean_iou"))
        for r in finished
    )
    assert parent.data.metrics["best/val/mean_iou"] == pytest.approx(best, abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary.csv", "sweep_summary.md", "multirun.yaml",
            "sweep_val_mean_iou.png"} <= artifacts  # fmt: skip
    assert (tmp_path / "sweep" / "mlflow_parent_run_id").read_text().strip() == parent.info.run_id

    # segexp.compare reads the same store: children best first, only differing params shown.
    compare = subprocess.run(
        [sys.executable, "-m", "segexp.compare", f"parent={parent.info.run_id}",
         "--format", "csv", "--figure", str(tmp_path / "curves.png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    lines = list(csv.reader(compare.stdout.strip().splitlines()))
    header = lines[0]
    assert header[:4] == ["rank", "run", "status", "best val/mean_iou"]
    assert "aspp.rates" in header and "trainer.epochs" not in header  # failed jobs log no params
    ranked = [line[3] for line in lines[1:]]
    scores = [float(v) for v in ranked if v != "n/a"]
    assert len(lines) == 5 and scores == sorted(scores, reverse=True) and ranked[-1] == "n/a"
    assert (tmp_path / "curves.png").stat().st_size > 0


def _sweep(tmp_path, tiny_data, *args, env=None):
    base = [
        a
        for a in TINY_ARGS
        if not a.startswith(("tracking.experiment", "backbone=", "trainer.epochs"))
    ]
    return subprocess.run(
        [sys.executable, "-m", "segexp.train", "-m", *args, *base, "tracking.log_model=false",
         f"paths.data_dir={tiny_data}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **(env or {})},
    )  # fmt: skip


@pytest.mark.slow
def test_parallel_joblib_jobs_on_a_fresh_store(tmp_path, tiny_data):
    done = _sweep(
        tmp_path, tiny_data, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "backbone=tiny", "optimizer=adam,sgd", "trainer.epochs=1",
        "tracking.experiment=parallel", env={"CUDA_VISIBLE_DEVICES": "3,5"},  # fake GPU ids
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["optimizer._target_"] for r in kids) == [
        "keras.optimizers.Adam",
        "keras.optimizers.SGD",
    ]
    # backbone=tiny comes first on the command line but is the same in every job: the names
    # lead with the override that varies, and the job number keeps them apart
    assert sorted(r.info.run_name for r in kids) == ["optimizer=adam #0", "optimizer=sgd #1"]
    assert all(len(client.get_metric_history(r.info.run_id, "val/mean_iou")) == 1 for r in kids)
    # two workers at once, each on a GPU of its own (a param of the run, and the console says it)
    assert sorted(r.data.params["launcher.gpu"] for r in kids) == ["3", "5"]
    assert sorted(r.data.tags["launcher.gpu"] for r in kids) == ["3", "5"]
    for kid in kids:
        log = Path(kid.data.tags["hydra.output_dir"]) / "train.log"
        gpu = kid.data.params["launcher.gpu"]
        assert f"this parallel sweep worker uses GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})" in (
            log.read_text()
        )
