"""MLflow helpers: store location, experiment creation, param flattening, metric names."""

import socket
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segexp.tracking import records, store
from segexp.training.monitor import metric_names


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert store.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_sqlite_store_gets_an_artifact_folder_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert store.artifact_location_for(uri) == (tmp_path / "mlartifacts").as_uri()
    assert store.artifact_location_for("http://localhost:5000") is None
    assert store.ui_command(uri) == f"mlflow ui --backend-store-uri {uri}"


def test_experiment_is_created_once_with_its_artifact_location(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = store.ensure_experiment(uri, "exp")
    assert store.ensure_experiment(uri, "exp") == first
    experiment = MlflowClient(uri).get_experiment(first)
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_deleted_experiment_is_reported(tmp_path):
    from segexp.errors import SegexpError

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).delete_experiment(store.ensure_experiment(uri, "gone"))
    with pytest.raises(SegexpError, match="tracking.experiment='gone' is deleted"):
        store.ensure_experiment(uri, "gone")


def test_flatten_params_nests_keys_and_stringifies_lists_within_limits():
    flat = records.flatten_params(
        {"aspp": {"rates": [6, 12, 18], "filters": 256}, "w": None, "long": "x" * 7000}
    )
    assert flat["aspp.rates"] == "[6, 12, 18]"
    assert flat["aspp.filters"] == "256"
    assert flat["w"] == "None"
    assert len(flat["long"]) == records.MAX_PARAM_VALUE


def test_choice_params_name_each_group_option_once(tmp_path):
    config = {"optimizer": {"_target_": "keras.optimizers.SGD"}, "backbone": {"name": "tiny"}}
    assert records.choice_params(tmp_path, config) == {}  # a run composed without Hydra
    records.keep_choices(
        tmp_path,
        {"optimizer": "sgd", "backbone": "tiny", "experiment": None, "hydra/launcher": "basic"},
    )
    assert records.choice_params(tmp_path, config) == {"optimizer.name": "sgd"}


def test_keras_log_names_map_to_segexp_metric_names():
    renamed = metric_names(
        {
            "loss": 1.0,
            "pixel_accuracy": 0.5,
            "val_loss": 2.0,
            "val_mean_iou": 0.25,
            "learning_rate": 0.001,
        }
    )
    assert renamed == {
        "train/loss": 1.0,
        "train/pixel_accuracy": 0.5,
        "val/loss": 2.0,
        "val/mean_iou": 0.25,
        "lr": 0.001,
    }


def test_git_commit_is_none_outside_a_repository(tmp_path):
    assert records.git_commit(Path(tmp_path)) is None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_fails_in_seconds_naming_the_uri():
    from segexp.errors import SegexpError

    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(SegexpError, match=f"tracking.uri={uri}: cannot reach"):
        store.check_store(uri)
    assert time.monotonic() - started < 10


def test_unreachable_server_from_the_environment_is_named_as_such(monkeypatch):
    from segexp.errors import SegexpError

    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SegexpError, match=f"MLFLOW_TRACKING_URI={uri}"):
        store.check_store(store.resolve_tracking_uri(None, Path.cwd()))


def test_sqlite_store_in_a_missing_folder_is_reported(tmp_path):
    from segexp.errors import SegexpError

    with pytest.raises(SegexpError, match="does not exist"):
        store.check_store(f"sqlite:///{tmp_path}/missing/mlflow.db")
    store.check_store(f"sqlite:///{tmp_path}/mlflow.db")  # an existing folder is fine


def test_cli_with_an_unreachable_server_stops_before_loading_data(tmp_path):
    from tests.conftest import run_segexp

    uri = f"http://127.0.0.1:{_closed_port()}"
    done = run_segexp(
        [
            f"tracking.uri={uri}",
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={tmp_path}/o",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip().splitlines()[-1].startswith(f"error: tracking.uri={uri}: cannot reach")
    )
    assert not (tmp_path / "data").exists(), "data was generated before the store was checked"
