"""segexp.compare's table helpers and argument errors (the end-to-end run is in test_sweep)."""

import pytest

from segexp.compare import main, render


def test_render_formats_agree_on_the_cells():
    header, rows = ["rank", "run"], [["1", "a|b"], ["2", "c"]]
    assert render(header, rows, "csv").splitlines() == ["rank,run", "1,a|b", "2,c"]
    assert "| 1 | a\\|b |" in render(header, rows, "markdown")
    assert render(header, rows, "text").splitlines()[1].split() == ["1", "a|b"]


def test_unknown_selection_and_missing_experiment_are_one_line_errors(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["runs=abc"])
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with pytest.raises(SystemExit, match="no runs to compare, the store .* does not exist"):
        main(["experiment=nope", "--tracking-uri", uri])
    assert not (tmp_path / "m.db").exists()
    MlflowClient(uri).search_experiments()  # an empty store
    with pytest.raises(SystemExit) as caught:
        main(["experiment=nope", "--tracking-uri", uri])
    assert str(caught.value) == "error: experiment=nope does not exist; experiments: Default"


def test_no_selection_compares_the_experiment_training_logs_to(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from segexp.compare import default_experiment

    assert default_experiment() == "segexp"  # conf/tracking/mlflow.yaml's tracking.experiment
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store
    other = client.create_experiment("other", artifact_location=str(tmp_path / "art"))
    client.create_run(other, run_name="elsewhere")
    experiment = client.create_experiment("segexp", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment, run_name="default-run")
    client.log_metric(run.info.run_id, "val/mean_iou", 0.3, step=1)
    client.set_terminated(run.info.run_id)
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["default-run"]
    assert "curves: compare_val_mean_iou.png" in err
    assert (tmp_path / "compare_val_mean_iou.png").stat().st_size > 0


def test_runs_that_do_not_beat_the_baseline_are_marked(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    for name, best, trivial in (("good", 0.40, "false"), ("flat", 0.045, "true")):
        run = client.create_run(experiment, run_name=name)
        client.log_metric(run.info.run_id, "val/baseline_mean_iou", 0.0433, step=0)
        client.log_metric(run.info.run_id, "val/mean_iou", best, step=1)
        client.set_tag(run.info.run_id, "segexp.trivial_model", trivial)
        client.log_param(run.info.run_id, "trainer.seed", name)
        client.set_terminated(run.info.run_id)
    monkeypatch.chdir(tmp_path)
    assert main(["experiment=e", "--tracking-uri", uri, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split(",") for line in out.strip().splitlines()]
    assert rows[0][3:6] == ["best val/mean_iou", "baseline", "trivial"]
    assert [(r[1], r[3], r[4], r[5]) for r in rows[1:]] == [
        ("good", "0.4000", "0.0433", ""),
        ("flat", "0.0450", "0.0433", "yes"),
    ]
    assert "1 of 2 runs do not beat val/baseline_mean_iou" in err
