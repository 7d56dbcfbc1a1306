"""No secret reaches the store: a password in tracking.uri or in the Optuna storage URL is found
nowhere afterwards (the MLflow store's tables, any file under the run and sweep folders, the
console), while the runs complete and resume= works with the password given again."""

import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from segexp.secrets import redact, redact_tree, remember, restore
from tests.conftest import TINY_ARGS
from tests.helpers import postgres as pg

PASSWORD = "Sup3rS3cretPw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tracking.uri=postgresql://u:pw@h:5432/db", "tracking.uri=postgresql://u:***@h:5432/db"),
        ("http://user:token@host:5000", "http://user:***@host:5000"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),  # fmt: skip
        ("https://h/api?token=abc", "https://h/api?token=***"),
        ("host=h password=pw dbname=x", "host=h password=*** dbname=x"),
        ("sqlite:////a/mlflow.db", "sqlite:////a/mlflow.db"),
        (
            "optimizer.learning_rate=0.001 tracking.uri=postgresql://u@h/db",
            "optimizer.learning_rate=0.001 tracking.uri=postgresql://u@h/db",
        ),  # fmt: skip
    ],
)
def test_passwords_and_tokens_in_urls_become_stars_user_and_host_stay(text, expected):
    assert redact(text) == expected


def test_a_redacted_url_gets_back_only_the_credentials_given_to_this_process(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stored = "postgresql://u:***@h/other"
    assert restore(stored) == stored  # nothing given: stays redacted
    remember("postgresql://u:pw@h/other")
    assert restore(stored) == "postgresql://u:pw@h/other"
    assert redact_tree({"a": ["x://u:p@h"], "b": 1}) == {"a": ["x://u:***@h"], "b": 1}


def _run(args, cwd, env_extra=None, module="segexp.train"):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SEGEXP_FAULT")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=env)  # fmt: skip


@pytest.mark.slow
def test_a_password_in_the_store_urls_is_found_nowhere_after_training_and_a_sweep(
    tmp_path, tiny_data
):
    if pg.binaries() is None:
        if os.environ.get(pg.REQUIRE_ENV):
            pytest.fail("PostgreSQL's binaries (initdb) are missing: .ci/run installs them")
        pytest.skip("no PostgreSQL binaries here (apt-get install postgresql)")
    server = pg.start_server(password=PASSWORD)
    try:
        tracking = server.create_database("mlflow")
        storage = server.create_database("optuna")
        assert PASSWORD in tracking and PASSWORD in storage
        outputs = []
        base = [*TINY_ARGS, f"paths.data_dir={tiny_data}", "tracking.experiment=secret",
                f"tracking.uri={tracking}"]  # fmt: skip

        # a training stopped by SIGTERM, then resumed with the password given again
        run_dir = tmp_path / "run"
        stopped = _run([*base, f"hydra.run.dir={run_dir}"], tmp_path,
                       {"SEGEXP_FAULT": "sigterm_at_step:3"})  # fmt: skip
        outputs.append(stopped)
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
        without = _run([f"resume={run_dir}"], tmp_path)  # no password given: one clear error
        outputs.append(without)
        assert without.returncode == 1 and "needs its password" in without.stderr
        resumed = _run([f"resume={run_dir}", f"tracking.uri={tracking}"], tmp_path)
        outputs.append(resumed)
        assert resumed.returncode == 0, resumed.stderr[-3000:]

        # a 2-trial Optuna sweep, the study on the same server
        sweep = [a for a in base if not a.startswith("backbone=")]
        swept = _run(["-m", "hparams_search=deeplab_optuna", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.params.backbone='choice(tiny)'", "trainer.batch_size=4",
                      *sweep, f"hydra.sweeper.storage={storage}",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)  # fmt: skip
        outputs.append(swept)
        assert swept.returncode == 0, swept.stderr[-3000:]
        compared = _run(["experiment=secret", "--tracking-uri", tracking,
                         "--figure", str(tmp_path / "c.png")], tmp_path,
                        module="segexp.compare")  # fmt: skip
        outputs.append(compared)
        assert compared.returncode == 0, compared.stderr[-3000:]

        client = MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("secret").experiment_id])
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)  # run, parent, 2
        trained = [r for r in runs if r.data.tags.get("segexp.task") != "sweep"]
        for run in trained:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id,
                                                                     "val/mean_iou"))  # fmt: skip
            assert steps == [1, 2]
            assert run.data.params["tracking.uri"] == redact(tracking)  # where it logged, no secret

        # nowhere: the console, the store's tables, any file written under tmp_path (run and
        # sweep folders, the artifacts in ./mlruns, the run folder's own copies)
        for done in outputs:
            assert PASSWORD not in done.stdout + done.stderr, done.args
        for database in ("mlflow", "optuna"):
            dump = server.dump(database)
            assert "postgresql://segexp:***@127.0.0.1" in dump or database == "optuna"
            assert PASSWORD not in dump, database
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert len(files) > 50 and any(p.suffix == ".keras" for p in files)
        leaks = [p for p in files if PASSWORD.encode() in p.read_bytes()]
        assert leaks == []
    finally:
        pg.remove(server)
