"""segexp.compare's table helpers and argument errors (the end-to-end run is in test_sweep)."""

import pytest

from segexp.compare import main, render


def test_render_formats_agree_on_the_cells():
    header, rows = ["rank", "run"], [["1", "a|b"], ["2", "c"]]
    assert render(header, rows, "csv").splitlines() == ["rank,run", "1,a|b", "2,c"]
    assert "| 1 | a\\|b |" in render(header, rows, "markdown")
    assert render(header, rows, "text").splitlines()[1].split() == ["1", "a|b"]


def test_unknown_selection_and_missing_experiment_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["runs=abc"])
    with pytest.raises(SystemExit, match="experiment=nope does not exist"):
        main(["experiment=nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])


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
