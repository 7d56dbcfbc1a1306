"""One tiny `python -m segexp.train` run, inspected through MlflowClient and the output folder."""

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_ARGS, TINY_EPOCHS, run_segexp

METRICS = [
    "train/loss",
    "train/pixel_accuracy",
    "val/loss",
    "val/pixel_accuracy",
    "val/mean_iou",
    "val/mean_accuracy",
    "val/mean_dice",
    "val/iou/background",
    "lr",
]


@pytest.fixture(scope="module")
def logged(tiny_run):
    client = MlflowClient(tiny_run.tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _artifacts(client, run_id, path=""):
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def test_run_finished_with_config_params_and_model_size(logged):
    _, run = logged
    assert run.info.status == RunStatus.to_string(RunStatus.FINISHED)
    params = run.data.params
    assert params["backbone.name"] == "tiny"
    assert params["aspp.rates"] == "[6, 12, 18]"
    assert params["image_size"] == "64"
    assert params["optimizer._target_"] == "keras.optimizers.Adam"
    assert int(params["model.total_params"]) > int(params["model.trainable_params"]) > 0
    assert run.info.run_name == " ".join(a for a in TINY_ARGS if not a.startswith("tracking."))


def test_group_options_are_params_by_their_names(logged):
    _, run = logged
    params = run.data.params
    # the defaults of conf/common.yaml, by option name rather than by _target_ path
    assert params["optimizer.name"] == "adam"
    assert params["loss.name"] == "ce_dice"
    assert params["schedule.name"] == "constant"
    assert params["aspp.name"] == "default"
    assert params["backbone.name"] == "tiny"  # the group's own `name` key, kept
    assert not any(k.startswith(("hydra.", "experiment.", "hparams_search.")) for k in params)


def test_val_predictions_are_image_sliders_with_a_step_per_epoch(logged, tiny_run, tmp_path):
    from PIL import Image

    client, run = logged
    pngs = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    pngs = [p for p in pngs if p.endswith(".png")]
    steps: dict[str, list[int]] = {}
    for path in pngs:  # images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>.png
        key, _, step = path.removeprefix("images/").split("+")[:3]
        steps.setdefault(key, []).append(int(step))
    # tracking.num_prediction_samples=2 fixed val images, each logged once per epoch
    assert len(steps) == 2 and all(k.startswith("val_predictions~") for k in steps)
    assert all(sorted(s) == list(range(1, TINY_EPOCHS + 1)) for s in steps.values())
    val_sizes = {
        Image.open(p).size for p in (tiny_run.workdir / "data").glob("synthetic/*/val/images/*")
    }
    for key in steps:  # image | truth | prediction, 4 px apart, at a val image's own size
        sizes = {
            Image.open(client.download_artifacts(run.info.run_id, p, str(tmp_path))).size
            for p in pngs if p.startswith(f"images/{key}+")
        }  # fmt: skip
        assert len(sizes) == 1, "the same image every epoch"
        width, height = sizes.pop()
        assert ((width - 8) // 3, height) in val_sizes and (width - 8) % 3 == 0


def test_system_metrics_are_sampled_through_the_run(logged):
    import psutil

    client, run = logged
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in sorted(cpu, key=lambda m: m.step)] == list(range(len(cpu)))
    assert len(cpu) >= 1 and all(0.0 <= m.value <= 100.0 for m in cpu)
    memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    total_mb = psutil.virtual_memory().total / 1e6
    assert len(memory) == len(cpu) and all(0 < m.value <= total_mb for m in memory)
    span = (run.info.start_time, run.info.end_time)
    assert all(span[0] <= m.timestamp <= span[1] for m in cpu), "while the run ran"


def test_the_best_checkpoint_is_the_one_logged_model_with_its_epochs_val_metrics(logged):
    client, run = logged
    run_id = run.info.run_id
    history = {
        key: {m.step: m.value for m in client.get_metric_history(run_id, key)}
        for key in ("val/mean_iou", "val/loss", "train/loss", "val/iou/background")
    }
    ious = history["val/mean_iou"]
    best_epoch = min(ious, key=lambda step: (-ious[step], step))  # the first highest
    found = client.search_logged_models(
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND metrics.`val/mean_iou` >= 0",
        order_by=[{"field_name": "metrics.val/mean_iou", "ascending": False}],
    )
    models = {m.name: m for m in found}
    assert sorted(models) == ["model"]  # one copy: the best checkpoint (trainer.checkpoints=best)
    for name, epoch in (("model", best_epoch),):
        # MLflow links the run's step-0 metrics (the baseline) itself; segexp those of the epoch
        assert {m.step for m in models[name].metrics} - {0} == {epoch}, name
        linked = {m.key: m for m in models[name].metrics if m.step == epoch}
        for key, values in history.items():
            assert linked[key].value == values[epoch], (name, key)
        assert not any(key.startswith("system/") for key in linked)


def test_the_piped_console_is_plain_lines_kept_in_the_job_log_and_in_mlflow(
    logged, tiny_run, tmp_path
):
    client, run = logged
    shown = tiny_run.process.stdout + tiny_run.process.stderr
    assert not re.search(r"[\r\b\x1b]", shown), "no bar redraws or colour codes in a file"
    for startup in (
        "absl::InitializeLog", "cuInit", "oneDNN", "Unable to register", "cudart",
        "INFO mlflow", "alembic", "Creating initial", "Downloading artifacts",
        "type hint", "CloudPickle", "WARNING",
    ):  # fmt: skip
        assert startup not in shown, startup
    epochs = re.findall(r"^Epoch \d+/\d+ - .*$", tiny_run.process.stdout, re.M)
    assert [e.split()[1] for e in epochs] == [f"{k}/{TINY_EPOCHS}" for k in
                                              range(1, TINY_EPOCHS + 1)]  # fmt: skip
    assert all(" - val_mean_iou: " in e and " - lr: " in e for e in epochs)
    job_log = (tiny_run.output_dir / "train.log").read_text()
    assert all(e in job_log.splitlines() for e in epochs)
    assert "finished" in job_log  # the summary, after the run ended
    logged_log = client.download_artifacts(run.info.run_id, "train.log", str(tmp_path))
    kept = Path(logged_log).read_text().splitlines()
    assert all(e in kept for e in epochs), "the job log is an artifact of the run"


def test_run_tags_name_versions_dataset_and_output(logged, tiny_run):
    client, run = logged
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # training
    tags = run.data.tags
    assert tags["dataset"] == "synthetic"
    assert tags["hydra.output_dir"] == str(tiny_run.output_dir.resolve())
    assert tags["tensorflow.version"].startswith("2.")
    assert tags["keras.version"].startswith("3.")
    assert "segexp.version" in tags


def test_one_point_per_epoch_for_every_metric(logged):
    client, run = logged
    for name in METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(1, TINY_EPOCHS + 1)), name
    lr = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"),
                                  key=lambda m: m.step)]  # fmt: skip
    assert lr == [pytest.approx(2e-3)] * TINY_EPOCHS  # Adam's default, no schedule
    for name in ("val/mean_iou", "val/pixel_accuracy"):
        assert all(0.0 <= m.value <= 1.0 for m in client.get_metric_history(run.info.run_id, name))


def test_figures_checkpoint_and_hydra_folder_are_logged(logged):
    client, run = logged
    artifacts = set(_artifacts(client, run.info.run_id))
    assert {
        "learning_curves.png",
        "val_predictions.png",
        "class_iou.png",
        "train.log",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        ".hydra/hydra.yaml",
    } <= artifacts
    assert not any(a.endswith(".keras") for a in artifacts)  # the logged model is the one copy


def test_checkpoints_stay_in_the_output_folder_and_best_one_loads(tiny_run):
    import io
    import zipfile

    import h5py
    import keras

    import segexp.evaluation.metrics  # noqa: F401
    import segexp.models.layers  # noqa: F401
    import segexp.training.losses  # noqa: F401  (registers the loss, metric and layers for loading)

    checkpoints = tiny_run.output_dir / "checkpoints"
    # trainer.checkpoints=best: best.keras and the training state, no last.keras
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.keras", "train_state.npz"]
    model = keras.saving.load_model(checkpoints / "best.keras")
    assert model(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 64, 64, 20)
    with zipfile.ZipFile(checkpoints / "best.keras") as saved:  # resume reads train_state.npz
        weights = h5py.File(io.BytesIO(saved.read("model.weights.h5")))
        assert "optimizer" not in weights and "layers" in weights  # no optimizer variables


def test_a_checkpoint_loads_in_a_fresh_python_with_the_documented_one_liner(tiny_run):
    import subprocess
    import sys

    code = (
        "import sys; from segexp.models import load_keras; "
        "model = load_keras(sys.argv[1]); print(model.output_shape)"
    )
    path = tiny_run.output_dir / "checkpoints" / "best.keras"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(None, None, None, 20)"  # 20 synthetic classes


def test_logged_model_loads_with_pyfunc_and_returns_label_maps(
    logged, tiny_run, tmp_path, pyfunc_imports_undone
):
    _, run = logged
    mlflow.set_tracking_uri(tiny_run.tracking_uri)
    # (into tmp_path: MLflow's default download folder is never removed)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path))
    rng = np.random.default_rng(0)
    for shape in ((2, 64, 64, 3), (1, 75, 130, 3)):
        labels = model.predict(rng.integers(0, 256, shape, dtype=np.uint8))
        assert labels.shape == shape[:3] and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 20
    assert model.metadata.metadata["class_names"][14] == "left-arm"
    assert model.metadata.metadata["image_size"] == 64


def test_summary_reports_run_id_best_score_and_ui_command(logged, tiny_run):
    client, run = logged
    out = tiny_run.process.stdout
    assert f"run {run.info.run_id} finished" in out
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "val/mean_iou"))
    printed = float(re.search(r"best val/mean_iou ([0-9.]+)", out).group(1))
    assert printed == pytest.approx(best, abs=1e-4)
    assert f"mlflow ui --backend-store-uri {tiny_run.tracking_uri}" in out
    page = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert f"  then open {page}" in out.splitlines()


@pytest.mark.slow
def test_a_corrupt_image_stops_training_before_a_run_opens_naming_the_file(tmp_path, tiny_run):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_run.workdir / "data", data)
    broken = sorted(data.glob("synthetic/*/train/images/*.png"))[0]
    broken.write_bytes(b"this is not an image")
    done = run_segexp(
        [
            *TINY_ARGS,
            f"paths.data_dir={data}",
            f"hydra.run.dir={tmp_path / 'out'}",
            "tracking.experiment=broken",
        ],
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert f"error: {broken}: not an image file" in done.stderr, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("broken")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert runs == [], "found while reading the data, before any run opens"
    assert not list((tmp_path / "out").rglob("*.keras")), "no checkpoint from a failed epoch"


def test_run_records_the_dataset_inputs_and_class_histogram(logged, tiny_run):
    client, run = logged
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"synthetic-train", "synthetic-val"}
    digests = {i.dataset.digest for i in inputs.values()}
    assert len(digests) == 1 and len(digests.pop()) == 16
    contexts = {t.value for i in inputs.values() for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "val"}
    artifacts = _artifacts(client, run.info.run_id, "data")
    assert {"data/class_histogram.json", "data/class_histogram.png"} <= set(artifacts)
    histogram = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/class_histogram.json")
    masks = sorted((tiny_run.workdir / "data").glob("synthetic/*/train/masks/*.png"))
    from PIL import Image

    pixels = np.concatenate([np.asarray(Image.open(p)).ravel() for p in masks])
    assert histogram["pixels"]["train"] == [int((pixels == c).sum()) for c in range(20)]
    assert run.data.metrics["data/skipped_files"] == 0


def test_baseline_mean_iou_is_the_majority_class_everywhere_on_val(logged, tiny_run):
    """val/baseline_mean_iou against numpy on the mask files: the train split's most frequent
    class predicted at every val pixel, IoU per class present, then their mean."""
    from PIL import Image

    _, run = logged

    def pixels(split: str) -> np.ndarray:
        masks = sorted((tiny_run.workdir / "data").glob(f"synthetic/*/{split}/masks/*.png"))
        values = np.concatenate([np.asarray(Image.open(p)).ravel() for p in masks])
        return values[values < 20]  # 255 is ignored

    majority = np.bincount(pixels("train"), minlength=20).argmax()
    val = pixels("val")
    present = np.unique(np.append(val, majority))
    ious = [(val == c).mean() if c == majority else 0.0 for c in present]
    history = MlflowClient(tiny_run.tracking_uri).get_metric_history(
        run.info.run_id, "val/baseline_mean_iou"
    )
    assert [m.step for m in history] == [0]
    assert history[0].value == pytest.approx(np.mean(ious), abs=1e-9)
    trivial = max(m.value for m in MlflowClient(tiny_run.tracking_uri).get_metric_history(
        run.info.run_id, "val/mean_iou")) <= history[0].value + 0.01  # fmt: skip
    assert run.data.tags["segexp.trivial_model"] == str(trivial).lower()


@pytest.mark.slow
def test_a_trivial_model_is_named_in_the_summary_and_tagged(tmp_path, tiny_run):
    """Only background carries loss: the model learns to predict it everywhere."""
    weights = "[" + ",".join(["1"] + ["0"] * 19) + "]"
    done = run_segexp(
        [*TINY_ARGS, "loss=cross_entropy", f"loss.class_weights={weights}", "trainer.epochs=1",
         "tracking.log_model=false", f"paths.data_dir={tiny_run.workdir / 'data'}",
         f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    warning = [line for line in done.stdout.splitlines() if "does not beat" in line]
    assert len(warning) == 1, done.stdout[-2000:]
    assert "val/baseline_mean_iou" in warning[0] and "'background' everywhere" in warning[0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags["segexp.trivial_model"] == "true"
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "val/mean_iou"))
    assert best == pytest.approx(run.data.metrics["val/baseline_mean_iou"], abs=0.01)
