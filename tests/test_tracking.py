"""MLflow helpers: store location, experiment creation, param flattening, metric names."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segexp import tracking


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_sqlite_store_gets_an_artifact_folder_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.artifact_location_for(uri) == (tmp_path / "mlartifacts").as_uri()
    assert tracking.artifact_location_for("http://localhost:5000") is None
    assert tracking.ui_command(uri) == f"mlflow ui --backend-store-uri {uri}"


def test_experiment_is_created_once_with_its_artifact_location(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = tracking.ensure_experiment(uri, "exp")
    assert tracking.ensure_experiment(uri, "exp") == first
    experiment = MlflowClient(uri).get_experiment(first)
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_deleted_experiment_is_reported(tmp_path):
    from segexp.errors import SegexpError

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).delete_experiment(tracking.ensure_experiment(uri, "gone"))
    with pytest.raises(SegexpError, match="tracking.experiment='gone' is deleted"):
        tracking.ensure_experiment(uri, "gone")


def test_flatten_params_nests_keys_and_stringifies_lists_within_limits():
    flat = tracking.flatten_params(
        {"aspp": {"rates": [6, 12, 18], "filters": 256}, "w": None, "long": "x" * 7000}
    )
    assert flat["aspp.rates"] == "[6, 12, 18]"
    assert flat["aspp.filters"] == "256"
    assert flat["w"] == "None"
    assert len(flat["long"]) == tracking.MAX_PARAM_VALUE


def test_keras_log_names_map_to_segexp_metric_names():
    renamed = tracking.metric_names(
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
    assert tracking.git_commit(Path(tmp_path)) is None
