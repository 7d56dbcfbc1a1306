"""`segexp.compare --over trainer.seed`: configurations as groups of seeds (mean, sample std, n)
and the noise verdict between neighbours, checked against numpy and scipy; the warning when the
runs were trained on different data."""

import csv
import io
import math

import numpy as np
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from scipy import stats

from segexp.compare import main
from segexp.reporting.replicates import ALPHA, noise_verdict, spread

# best val/mean_iou per seed, each run's history ends on its best after a lower first epoch
SCORES = {"adam": [0.412, 0.398, 0.425], "sgd": [0.371, 0.402, 0.355]}
DIGESTS = {"adam": "aaaa1111", "sgd": "aaaa1111"}


def _store(tmp_path, digests=DIGESTS, image_sizes=None):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("seeds", artifact_location=str(tmp_path / "art"))
    for optimizer, values in SCORES.items():
        for seed, best in enumerate(values, start=1):
            run = client.create_run(experiment, run_name=f"optimizer={optimizer} seed={seed}")
            rid = run.info.run_id
            size = (image_sizes or {}).get(optimizer, "64")
            params = {"optimizer.name": optimizer, "trainer.seed": seed, "image_size": size,
                      "paths.output_dir": f"/o/{rid}"}  # fmt: skip
            for key, value in params.items():
                client.log_param(rid, key, value)
            client.log_metric(rid, "val/baseline_mean_iou", 0.0433, step=0)
            client.log_metric(rid, "val/mean_iou", best - 0.1, step=1)
            client.log_metric(rid, "val/mean_iou", best, step=2)
            client.log_metric(rid, "val/loss", 1.0 - best, step=1)
            client.log_metric(rid, "val/loss", 1.2 - best, step=2)  # lowest at step 1
            dataset = Dataset(name="synthetic-val", digest=digests[optimizer], source_type="local",
                              source="{}")  # fmt: skip
            client.log_inputs(rid, [DatasetInput(dataset, [InputTag("mlflow.data.context", "val"),
                                                           InputTag("images", "4")])])  # fmt: skip
            client.set_terminated(rid)
    return uri


def _welch_p(a, b):
    """Welch's t-test from its textbook formulas (numpy), p from scipy's t distribution."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_over_the_seed_gives_numpys_mean_and_std_and_welchs_verdict(tmp_path, monkeypatch, capsys):
    uri = _store(tmp_path)
    monkeypatch.chdir(tmp_path)
    figure = tmp_path / "groups.png"
    args = ["experiment=seeds", "--tracking-uri", uri, "--over", "trainer.seed",
            "--metric", "val/loss", "--format", "csv", "--figure", str(figure)]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    assert header == ["rank", "group", "n", "best val/mean_iou mean", "std",
                      "lowest val/loss mean", "std", "baseline", "trivial", "vs next",
                      "trainer.seed"]  # fmt: skip
    assert [r[1] for r in rows[1:]] == ["optimizer.name=adam", "optimizer.name=sgd"]
    for row, name in zip(rows[1:], ("adam", "sgd"), strict=True):
        values = np.array(SCORES[name])
        assert row[2] == "3"
        assert float(row[3]) == pytest.approx(values.mean(), abs=5e-5)
        assert float(row[4]) == pytest.approx(values.std(ddof=1), abs=5e-5)
        assert float(row[5]) == pytest.approx((1.0 - values).mean(), abs=5e-5)
        assert float(row[6]) == pytest.approx(values.std(ddof=1), abs=5e-5)
        assert row[7] == "0.0433" and row[8] == ""
        assert sorted(row[10].split()) == ["1", "2", "3"]
    p = _welch_p(SCORES["adam"], SCORES["sgd"])
    verdict = rows[1][9]
    assert f"p={p:.3f}" in verdict and "n=3 vs 3" in verdict
    assert verdict.startswith("within noise" if p >= ALPHA else "differs")
    assert rows[2][9] == ""  # the last group has no next one
    assert "Welch's two-sided t-test" in err and "warning:" not in err
    assert figure.stat().st_size > 0


def test_the_verdict_follows_welchs_test_on_both_sides_of_alpha():
    far_a, far_b = [0.50, 0.51, 0.52], [0.30, 0.31, 0.29]
    verdict = noise_verdict(far_a, far_b)
    assert verdict.differs is True
    assert verdict.p == pytest.approx(_welch_p(far_a, far_b), rel=1e-9)
    assert verdict.p == pytest.approx(stats.ttest_ind(far_a, far_b, equal_var=False).pvalue)
    close = noise_verdict(SCORES["adam"], [0.41, 0.39, 0.43])
    assert close.differs is False and close.p > ALPHA
    assert noise_verdict([0.4], [0.3, 0.2]).differs is None  # n < 2: no verdict
    assert noise_verdict([0.0433] * 3, [0.0433] * 2).text.startswith("within noise (identical")
    s = spread([0.1, 0.2, 0.4])
    assert (s.n, s.mean, s.std) == (
        3,
        pytest.approx(0.7 / 3),
        pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1)),
    )
    assert math.isnan(spread([0.3]).std)


def test_groups_at_the_trivial_baseline_are_marked(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("flat", artifact_location=str(tmp_path / "art"))
    for lr, best in (("0.1", 0.0433), ("0.1", 0.0433), ("0.001", 0.2), ("0.001", 0.25)):
        rid = client.create_run(experiment).info.run_id
        client.log_param(rid, "optimizer.learning_rate", lr)
        client.log_param(rid, "trainer.seed", rid[:6])
        client.log_metric(rid, "val/baseline_mean_iou", 0.0433, step=0)
        client.log_metric(rid, "val/mean_iou", best, step=1)
        client.set_terminated(rid)
    monkeypatch.chdir(tmp_path)
    main(["experiment=flat", "--tracking-uri", uri, "--over", "trainer.seed", "--format", "csv",
          "--figure", str(tmp_path / "f.png")])  # fmt: skip
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))[1:]
    assert [(r[1], r[6]) for r in rows] == [
        ("optimizer.learning_rate=0.001", ""),
        ("optimizer.learning_rate=0.1", "yes"),
    ]
    assert "1 group(s) do not beat val/baseline_mean_iou" in err


def test_an_unknown_over_key_is_one_line_naming_what_varies(tmp_path, monkeypatch):
    uri = _store(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["experiment=seeds", "--tracking-uri", uri, "--over", "trainer.sed"])
    assert str(caught.value) == (
        "error: --over trainer.sed: no run logged such a param; params that vary between these "
        "runs: optimizer.name, trainer.seed"
    )


def test_runs_on_different_data_are_named_as_not_comparable(tmp_path, monkeypatch, capsys):
    uri = _store(tmp_path, {"adam": "aaaa1111", "sgd": "bbbb2222"}, {"sgd": "128"})
    monkeypatch.chdir(tmp_path)
    assert (
        main(["experiment=seeds", "--tracking-uri", uri, "--figure", str(tmp_path / "c.png")]) == 0
    )
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "not trained or scored on the same data" in warning
    assert "dataset digest: aaaa1111 (3 runs), bbbb2222 (3 runs)" in warning
    assert "image size: 128 (3 runs), 64 (3 runs)" in warning
    assert "class list" not in warning and "val split" not in warning


def test_groups_show_what_varies_within_a_choice_and_count_finished_runs_once(
    tmp_path, monkeypatch, capsys
):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("grid", artifact_location=str(tmp_path / "art"))
    targets = {"adam": "keras.optimizers.Adam", "sgd": "keras.optimizers.SGD"}
    for name, lr, seed, status, best in [
        (n, lr, s, "FINISHED", 0.3 + 0.01 * s + (0.1 if n == "adam" else 0) + float(lr))
        for n in targets for lr in ("0.01", "0.001") for s in (1, 2)
    ] + [("adam", "0.01", 3, "KILLED", 0.9)]:  # fmt: skip
        rid = client.create_run(experiment).info.run_id
        params = {"optimizer.name": name, "optimizer._target_": targets[name],
                  "optimizer.learning_rate": lr, "trainer.seed": seed, "verbose": seed}  # fmt: skip
        for key, value in params.items():
            client.log_param(rid, key, value)
        client.log_metric(rid, "val/mean_iou", best, step=1)
        client.set_terminated(rid, status)
    monkeypatch.chdir(tmp_path)
    args = ["experiment=grid", "--tracking-uri", uri, "--over", "trainer.seed", "--metric",
            "val/mean_iou", "--format", "csv", "--figure", str(tmp_path / "g.png")]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0].count("best val/mean_iou mean") == 1  # asked twice, aggregated once
    assert [(r[1], r[2]) for r in rows[1:]] == [
        ("optimizer.learning_rate=0.01 optimizer.name=adam", "2"),  # the KILLED run left out
        ("optimizer.learning_rate=0.001 optimizer.name=adam", "2"),
        ("optimizer.learning_rate=0.01 optimizer.name=sgd", "2"),
        ("optimizer.learning_rate=0.001 optimizer.name=sgd", "2"),
    ]  # verbose differs between runs but changes nothing trained: no group of its own
    assert float(rows[1][3]) == pytest.approx(np.mean([0.41 + 0.01, 0.42 + 0.01]), abs=5e-5)
    assert "1 run(s) that did not finish (KILLED, FAILED, RUNNING) are left out" in err
