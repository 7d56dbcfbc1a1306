"""Training on data sets read from disk: a hand-made folder tree, a fake CIHP tree, bad files."""

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_segexp
from tests.fakedata import make_cihp_tree, make_folder_tree, save_mask

QUICK = [
    "backbone=tiny",
    "image_size=64",
    "aspp.filters=16",
    "trainer.epochs=1",
    "trainer.batch_size=2",
    "trainer.verbose=2",
    "tracking.log_model=false",
    "tracking.num_prediction_samples=1",
]


def _only_run(tmp_path, experiment):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_folder_with_palette_masks_and_a_corrupt_file_skipped(tmp_path):
    root = make_folder_tree(tmp_path / "mine", num_classes=3, counts={"train": 7, "val": 3})
    corrupt = root / "train" / "images" / "002.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # truncated PNG
    done = run_segexp(
        [
            *QUICK,
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.num_classes=3",
            "dataset.skip_corrupt=true",
            "augment=standard",
            "tracking.experiment=folder",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, run = _only_run(tmp_path, "folder")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/skipped_files"] == 1
    skipped = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data/skipped_files.txt")
    assert str(corrupt) in skipped
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"folder-train", "folder-val"}
    assert run.data.params["augment.name"] == "standard"


@pytest.mark.slow
def test_keras_io_preset_trains_on_a_fake_cihp_tree(tmp_path):
    root = make_cihp_tree(tmp_path / "cihp", num_train=12, num_val=2)
    done = run_segexp(
        [
            "experiment=keras_io_cihp",
            f"dataset.root={root}",
            *QUICK,
            "backbone.weights=null",
            "dataset.max_train=8",
            "dataset.max_val=4",
            "tracking.experiment=keras_io",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, run = _only_run(tmp_path, "keras_io")
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.val_folder"] == "Training"
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    tags = {name: {t.key: t.value for t in i.tags} for name, i in inputs.items()}
    assert tags["cihp-train"]["images"] == "8" and tags["cihp-val"]["images"] == "4"


def test_a_label_out_of_range_fails_before_training_naming_file_and_value(tmp_path):
    root = make_folder_tree(tmp_path / "mine", num_classes=5, counts={"train": 4, "val": 2})
    bad = root / "val" / "masks" / "001.png"
    mask = np.zeros((40, 48), np.uint8)
    mask[3, 3] = 7
    save_mask(bad, mask)
    done = run_segexp(
        [
            *QUICK,
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.num_classes=5",
            "tracking.experiment=bad",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert f"error: {bad}: label value(s) 7 outside the classes 0..4" in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bad")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_unmatched_files_fail_before_training_and_point_at_the_checker(tmp_path):
    root = make_folder_tree(tmp_path / "mine", num_classes=2, counts={"train": 4, "val": 2})
    (root / "train" / "masks" / "003.png").unlink()
    done = run_segexp(
        [
            *QUICK,
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.num_classes=2",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "unmatched_image" in done.stderr and "003.png" in done.stderr
    assert "python -m segexp.check dataset=folder" in done.stderr
