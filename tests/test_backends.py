"""The same model and training on every Keras 3 backend: a checkpoint saved under TensorFlow gives
the same logits under JAX and PyTorch; a training under JAX, with TensorFlow unimportable, logs
each epoch with its backend and evaluates; a JAX run stopped mid-epoch and resumed ends as the
uninterrupted one, weights included; and on two devices it trains the weights one device does."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segexp.config.validate import validate_config
from segexp.errors import ConfigError
from segexp.models.build import build_model
from segexp.models.forward import compiled_forward
from tests.conftest import WITHOUT_TENSORFLOW, compose_config
from tests.conftest import backend_env as _env

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "backbone=tiny",
    "image_size=64",
    "aspp.filters=16",
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.verbose=2",
    "trainer.deterministic=true",
    "trainer.precision=auto",
    "dataset.num_train=8",
    "dataset.num_val=4",
    "dataset.min_size=48",
    "dataset.max_size=80",
    "tracking.log_model=false",
    "tracking.experiment=jax",
]


@pytest.mark.slow
def test_a_tensorflow_checkpoint_gives_the_same_logits_under_jax_and_torch(tmp_path):
    """The reference model (ResNet50 DeepLabV3+, random weights) at 64 px: saved under
    TensorFlow, loaded and run under each other backend, the logits agree within 1e-4."""
    cfg = compose_config("train", "backbone=resnet50", "image_size=64")
    keras.utils.set_random_seed(0)
    model = build_model(cfg, 20)
    model.save(tmp_path / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    want = compiled_forward(model)(images)
    assert np.abs(want).max() > 1.0, "logits large enough for the tolerance to mean something"
    for backend in ("jax", "torch"):
        out = tmp_path / f"{backend}.npy"
        done = subprocess.run(
            [sys.executable, "-m", "tests.backend_logits", str(tmp_path / "model.keras"),
             str(tmp_path / "images.npy"), str(out)],
            cwd=ROOT, env=_env(backend), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == backend
        got = np.load(out)
        assert got.shape == want.shape == (2, 64, 64, 20)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=backend)


def _train(
    workdir: Path,
    name: str,
    fault: str | None = None,
    resume: bool = False,
    devices: int = 1,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    args = [f"resume={workdir / name}"] if resume else [
        *ARGS, *extra, f"hydra.run.dir={workdir / name}", f"paths.data_dir={workdir / 'data'}",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "segexp.train", *args], cwd=workdir,
        env=_env("jax", fault, devices), capture_output=True, text=True, timeout=900,
    )  # fmt: skip


# the device comparison's optimizer: SGD's steps are proportional to the gradients, so a gradient
# that two devices got wrong shows (Adam's normalised steps hide a scale), and at 1e-3 its 4
# steps move the weights too little for float32 noise to flip a ReLU (see the test)
SGD = ("optimizer=sgd", "optimizer.learning_rate=1e-3")


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Under JAX, TensorFlow unimportable: one 2-epoch run uninterrupted and evaluated, one
    stopped by SIGTERM after step 3 (epoch 2, step 1 of 2) and resumed, and one SGD run on one
    device and on two."""
    workdir = tmp_path_factory.mktemp("jax")
    done = {
        "full": _train(workdir, "full"),
        "stopped": _train(workdir, "stopped", "sigterm_at_step:3"),
        "one_device": _train(workdir, "one_device", extra=SGD),
        "two_devices": _train(workdir, "two_devices", devices=2, extra=SGD),
    }
    done["resumed"] = _train(workdir, "stopped", resume=True)
    done["evaluate"] = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "segexp.evaluate",
         f"model={workdir / 'full' / 'checkpoints' / 'best.keras'}",
         f"paths.data_dir={workdir / 'data'}", "image_size=64", *ARGS[8:12],
         f"hydra.run.dir={workdir / 'evaluate'}"],
        cwd=workdir, env=_env("jax"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("jax").experiment_id
    runs = {Path(r.data.tags["hydra.output_dir"]).name: r for r in client.search_runs([experiment])}
    return {"workdir": workdir, "done": done, "client": client, "runs": runs}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _state(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(folder / "checkpoints" / "train_state.npz") as state:
        meta = json.loads(state["meta"].tobytes().decode())
        return meta["progress"], {k: state[k] for k in state.files if k != "meta"}


def _variable_paths(folder: Path) -> dict[str, str]:
    """State key (model/000012) -> the variable's path (e.g. .../moving_mean)."""
    with np.load(folder / "checkpoints" / "train_state.npz") as state:
        layout = json.loads(state["meta"].tobytes().decode())["layout"]
    return {f"{group}/{i:06d}": path for group, variables in layout.items()
            for i, (path, _) in enumerate(variables)}  # fmt: skip


@pytest.mark.slow
def test_a_two_epoch_training_under_jax_logs_val_mean_iou_twice_and_its_backend(jax_runs):
    done, client = jax_runs["done"]["full"], jax_runs["client"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trainer.precision=auto: float32" in done.stdout  # no CPU bf16 measured under JAX
    run = jax_runs["runs"]["full"]
    assert run.info.status == "FINISHED"
    assert run.data.params["keras.backend"] == "jax"
    assert run.data.params["trainer.precision_used"] == "float32"
    assert run.data.params["trainer.input_pipeline"].startswith("processes:")
    assert run.data.tags["jax.version"] and "tensorflow.version" not in run.data.tags
    history = _history(client, run.info.run_id, "val/mean_iou")
    assert [step for step, _ in history] == [1, 2]
    assert all(0.0 <= value <= 1.0 for _, value in history)
    assert [s for s, _ in _history(client, run.info.run_id, "train/loss")] == [1, 2]
    assert (jax_runs["workdir"] / "full" / "checkpoints" / "best.keras").is_file()


@pytest.mark.slow
def test_a_jax_checkpoint_evaluates_without_tensorflow_to_its_val_scores(jax_runs):
    """segexp.evaluate on best.keras gives the val mean IoU training logged at the best epoch."""
    done, client = jax_runs["done"]["evaluate"], jax_runs["client"]
    assert done.returncode == 0, done.stderr[-3000:]
    run = jax_runs["runs"]["full"]
    best = max(v for _, v in _history(client, run.info.run_id, "val/mean_iou"))
    line = next(x for x in done.stdout.splitlines() if x.startswith("4 images: pixel accuracy"))
    evaluated = float(line.split("mean IoU ")[1].split(" %")[0])
    assert evaluated == pytest.approx(100 * best, abs=0.006), (line, best)


@pytest.mark.slow
def test_two_jax_devices_train_the_weights_one_device_does(jax_runs):
    """XLA_FLAGS=--xla_force_host_platform_device_count=2: DataParallel splits batch 4 into 2
    per device and, after 4 SGD steps and precise BatchNorm over each epoch, ends with the
    one-device run's weights, BatchNorm statistics and momenta within rtol 1e-4 (atol 1e-5 of
    each array's largest value, for elements near zero; measured: 4e-6). Left out: the
    image-pooling conv's bias. BatchNorm follows that conv, so the bias's gradient is zero in
    exact arithmetic and it holds float noise (under 1e-9). At SGD's default 1e-2, or with
    Adam, float32 noise in the summation order flips the sign of a few pre-activations near a
    ReLU's kink by step 2, and the two runs then differ by up to 1e-3 of an array's scale: a
    fact of float32 training, not of the device layout (one step at 1e-2 agrees to 3e-6)."""
    done, runs = jax_runs["done"], jax_runs["runs"]
    for name in ("one_device", "two_devices"):
        assert done[name].returncode == 0, done[name].stderr[-3000:]
    params = runs["two_devices"].data.params
    assert (params["trainer.replicas"], params["trainer.per_replica_batch"]) == ("2", "2")
    assert runs["one_device"].data.params["trainer.replicas"] == "1"
    assert int(params["batchnorm.precise_batches"]) > 0
    _, one = _state(jax_runs["workdir"] / "one_device")
    _, two = _state(jax_runs["workdir"] / "two_devices")
    assert one.keys() == two.keys()
    paths = _variable_paths(jax_runs["workdir"] / "one_device")
    assert any("moving_mean" in path for path in paths.values()), "BatchNorm statistics too"
    assert any("momentum" in path for path in paths.values()), "the optimizer's momenta too"
    noise = [k for k, path in paths.items() if "aspp_pool_conv" in path and "bias" in path]
    assert noise and all(np.abs(one[k]).max() < 1e-9 for k in noise)
    for key, value in one.items():
        if key not in noise:
            np.testing.assert_allclose(two[key], value, rtol=1e-4,
                                       atol=1e-5 * np.abs(value).max(),
                                       err_msg=paths.get(key, key))  # fmt: skip


@pytest.mark.slow
def test_a_jax_run_stopped_mid_epoch_resumes_to_the_uninterrupted_run(jax_runs):
    done, client, runs = jax_runs["done"], jax_runs["client"], jax_runs["runs"]
    assert done["stopped"].returncode == 143, done["stopped"].stderr[-3000:]
    assert done["resumed"].returncode == 0, done["resumed"].stderr[-3000:]
    full, mine = runs["full"], runs["stopped"]
    assert client.get_run(mine.info.run_id).info.status == "FINISHED"
    for key in ("val/mean_iou", "train/loss", "train/mean_iou", "val/loss"):
        want = _history(client, full.info.run_id, key)
        got = _history(client, mine.info.run_id, key)
        assert [s for s, _ in got] == [1, 2], (key, got)
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=0, atol=1e-6)
    progress_full, weights_full = _state(jax_runs["workdir"] / "full")
    progress_mine, weights_mine = _state(jax_runs["workdir"] / "stopped")
    assert progress_mine["epochs_done"] == progress_full["epochs_done"] == 2
    assert weights_mine.keys() == weights_full.keys()
    assert any(k.startswith("optimizer/") for k in weights_full)
    for key, value in weights_full.items():
        np.testing.assert_array_equal(weights_mine[key], value, err_msg=key)


@pytest.mark.parametrize(("key", "value"), [("trainer.strategy", "mirrored"),
                                            ("trainer.sync_bn", "true")])  # fmt: skip
def test_tensorflow_only_settings_are_refused_under_jax_in_one_line(monkeypatch, key, value):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    cfg = compose_config("train", f"{key}={value}")
    with pytest.raises(ConfigError) as raised:
        validate_config(cfg)
    (line,) = str(raised.value).splitlines()
    assert line.startswith(f"{key}=")
    assert "tf.distribute is TensorFlow-only and this process runs KERAS_BACKEND=jax" in line


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_a_backend_that_is_not_installed_is_named_with_its_extra(tmp_path, backend):
    hide = f"import sys; sys.modules[{backend!r}] = None\n"
    done = subprocess.run(
        [sys.executable, "-c", hide + WITHOUT_TENSORFLOW, "segexp.train", "backbone=tiny",
         "image_size=32", f"hydra.run.dir={tmp_path / 'run'}",
         f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=ROOT, env=_env(backend), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: KERAS_BACKEND={backend} but {backend} is not installed: "
        f"pip install -e '.[{backend}]' (or set KERAS_BACKEND to an installed backend)"
    )


def test_an_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(ConfigError, match="KERAS_BACKEND='mxnet' is not allowed: must be "
                                          "tensorflow, jax, torch"):  # fmt: skip
        validate_config(compose_config("train"))


NOT_INSTALLED = """
import runpy, sys
for name in ("tensorflow", "mlflow", "cv2", "sklearn", "matplotlib", "PIL"):
    sys.modules[name] = None  # an import of any of these now fails
sys.argv = ["segexp.bench", *sys.argv[1:]]
runpy.run_module("segexp.bench", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_step_bench_runs_without_tensorflow_mlflow_or_image_libraries(tmp_path, backend):
    """bench.mode=steps on a machine with only the backend and segexp's pure-Python
    dependencies: TensorFlow, MLflow, OpenCV, Pillow, scikit-learn and Matplotlib cannot be
    imported in that process (SciPy stays: JAX needs it)."""
    output = tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED, "bench.mode=steps", "backbone=tiny",
         "image_size=32", "bench.steps=2", "bench.warmup=1", "bench.repeats=2",
         "bench.matmul_size=128", f"bench.output={output}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=_env(backend), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert f"training step only: tiny at 32 px, batch 4, {backend}" in text
    assert "TensorFlow imported: no" in text
    row = next(line for line in text.splitlines() if line.startswith("| training step"))
    low, median, high = (float(cell) for cell in row.split("|")[2:5])
    assert 0 < low <= median <= high


def test_export_formats_written_by_tensorflow_are_refused_under_jax_and_torch(monkeypatch):
    from segexp.config.inference import validate_inference_config

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    cfg = compose_config("export", "model=outputs/x/checkpoints/best.keras", "format=onnx")
    with pytest.raises(ConfigError, match="format='onnx' is not allowed: must be keras under "
                                          "KERAS_BACKEND=jax"):  # fmt: skip
        validate_inference_config(cfg, ("format",))
    validate_inference_config(compose_config("export", "model=m.keras", "format=keras"),
                              ("format",))  # fmt: skip
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # Keras exports ONNX through torch.onnx
    validate_inference_config(compose_config("export", "model=m.keras", "format=onnx"),
                              ("format",))  # fmt: skip
    with pytest.raises(ConfigError, match="format='litert' is not allowed: must be keras or onnx "
                                          "under KERAS_BACKEND=torch"):  # fmt: skip
        validate_inference_config(compose_config("export", "model=m.keras", "format=litert"),
                                  ("format",))  # fmt: skip


def test_the_full_bench_under_jax_points_to_the_steps_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "segexp.bench", "backbone=tiny", "image_size=32",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=_env("jax"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: bench.mode=full is not allowed under KERAS_BACKEND=jax: its FLOPs, matmul and "
        "keras.io-way rows are TensorFlow's; use bench.mode=steps (the training step on this "
        "backend)"
    )
