"""evaluate, predict, export and serve on the shared tiny run's model."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from PIL import Image


def run_command(module, args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", f"segexp.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )


def _run_id(tiny_run):
    client = MlflowClient(tiny_run.tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    return client, client.search_runs([experiment.experiment_id])[0].info.run_id


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    """`python -m segexp.evaluate model=<tiny run id>` run once for this module."""
    client, run_id = _run_id(tiny_run)
    out = tmp_path_factory.mktemp("evaluate")
    before = client.get_run(run_id).info
    done = run_command("evaluate", [f"model={run_id}", f"hydra.run.dir={out}"], tiny_run.workdir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return client, run_id, out, done, before


def test_evaluate_leaves_the_training_runs_times_and_status_as_they_were(evaluated):
    client, run_id, _, _, before = evaluated
    after = client.get_run(run_id)
    assert (after.info.start_time, after.info.end_time, after.info.status) == (
        before.start_time, before.end_time, before.status,
    )  # fmt: skip
    assert before.end_time is not None and before.status == "FINISHED"
    assert "eval/mean_iou" in after.data.metrics


def test_evaluate_prints_the_table_and_logs_into_the_training_run(evaluated):
    client, run_id, out, done, _ = evaluated
    assert "left-arm" in done.stdout and "mean" in done.stdout and "n/a:" in done.stdout
    metrics = client.get_run(run_id).data.metrics
    last_val = client.get_metric_history(run_id, "val/mean_iou")[-1].value
    # Same model (the last epoch's), same data and resolution: the same number.
    assert metrics["eval/mean_iou"] == pytest.approx(last_val, abs=1e-6)
    last_loss = client.get_metric_history(run_id, "val/loss")[-1].value
    assert metrics["eval/loss"] == pytest.approx(last_loss, rel=1e-4)
    for name in ("per_class.md", "per_class.csv", "confusion_matrix.png", "worst_images.png"):
        assert (out / name).is_file(), name
    logged = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/per_class.md", "eval/per_class.csv", "eval/confusion_matrix.png"} <= logged
    rows = (out / "per_class.csv").read_text().splitlines()
    assert rows[0] == "id,class,IoU %,Acc %,Dice %,BIoU %,BF %,ECE %,pixels"
    assert len(rows) == 1 + 20 + 1


def test_evaluate_adds_boundary_calibration_and_size_scores_from_the_same_pass(evaluated):
    client, run_id, out, done, _ = evaluated
    run = client.get_run(run_id)
    metrics, params = run.data.metrics, run.data.params
    for key in ("eval/boundary_iou", "eval/boundary_f", "eval/ece", "eval/iou_small"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["eval/boundary_iou/background"] <= metrics["eval/iou/background"] + 1e-9
    assert params["eval.boundary_band"] == "0.02" and params["eval.calibration_bins"] == "15"
    assert "IoU by object size: small " in done.stdout and "BIoU %" in done.stdout
    mean_row = (out / "per_class.csv").read_text().splitlines()[-1].split(",")
    assert float(mean_row[5]) == pytest.approx(100 * metrics["eval/boundary_iou"], abs=0.006)
    assert float(mean_row[7]) == pytest.approx(100 * metrics["eval/ece"], abs=0.006)
    logged = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/reliability.png", "eval/per_image_iou.png"} <= logged


def test_evaluate_a_checkpoint_path_logs_into_a_new_run(tiny_run, tmp_path):
    checkpoint = tiny_run.output_dir / "checkpoints" / "best.keras"
    done = run_command(
        "evaluate",
        [
            f"model={checkpoint}",
            "image_size=64",
            "dataset.num_train=8",
            "dataset.num_val=4",
            "dataset.min_size=48",
            "dataset.max_size=80",
            f"paths.data_dir={tiny_run.workdir / 'data'}",
            "tracking.experiment=evaluations",
            "tta.flip=true",
            "tta.scales=[0.75,1.0]",
            "dataset.cache=disk",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        tiny_run.workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tiny_run.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["segexp.evaluated_model"] == str(checkpoint)
    assert 0 <= runs[0].data.metrics["eval/mean_iou"] <= 1
    assert len(list((tmp_path / "cache").glob("*/*.npz"))) == 4  # the 4 val samples, cached


def test_evaluate_a_registered_model_logs_into_a_new_run_tagged_with_it(tiny_run, tmp_path):
    _, run_id = _run_id(tiny_run)
    import mlflow

    client = MlflowClient(tiny_run.tracking_uri)
    mlflow.set_tracking_uri(tiny_run.tracking_uri)
    version = mlflow.register_model(f"runs:/{run_id}/model", "tiny-parser").version
    uri = f"models:/tiny-parser/{version}"
    done = run_command(
        "evaluate",
        [
            f"model={uri}",
            "tracking.experiment=registry-evals",
            "worst_images=0",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],  # fmt: skip
        tiny_run.workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("registry-evals").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["segexp.evaluated_model"] == uri
    last_val = client.get_metric_history(run_id, "val/mean_iou")[-1].value
    assert runs[0].data.metrics["eval/mean_iou"] == pytest.approx(last_val, abs=1e-6)
    assert not (tmp_path / "out" / "worst_images.png").exists()


def test_predict_writes_label_confidence_color_and_overlay_for_mixed_sizes(tiny_run, tmp_path):
    _, run_id = _run_id(tiny_run)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (50, 70), "b.jpg": (96, 64), "c.bmp": (33, 41)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "out"
    done = run_command(
        "predict",
        [f"model={run_id}", f"input={images}", f"output={out}", f"hydra.run.dir={tmp_path / 'h'}"],
        tiny_run.workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote 12 files for 3 image(s) to {out}" in done.stdout
    assert "\x1b" not in done.stdout + done.stderr and "\r" not in done.stdout  # piped: no bar
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        label = np.asarray(Image.open(out / f"{stem}_label.png"))
        assert label.shape == (h, w) and label.max() < 20
        color = np.asarray(Image.open(out / f"{stem}_color.png"))
        assert color.shape == (h, w, 3)
        assert (out / f"{stem}_overlay.png").stat().st_size > 0
        confidence = np.asarray(Image.open(out / f"{stem}_confidence.png"))
        assert confidence.shape == (h, w) and confidence.dtype == np.uint8
        assert confidence.min() >= 255 // 20  # the top of 20 probabilities is at least 1/20


def test_calibrate_fits_a_temperature_that_the_calibrated_model_applies(
    tiny_run, tmp_path, pyfunc_imports_undone
):
    import shutil

    import mlflow

    from segexp.models import load_keras

    _, run_id = _run_id(tiny_run)
    shutil.copy(tiny_run.workdir / "mlflow.db", tmp_path / "mlflow.db")  # other tests read it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "eval"
    done = run_command(
        "evaluate",
        [f"model={run_id}", "calibrate=val", f"tracking.uri={uri}", f"hydra.run.dir={out}"],
        tiny_run.workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    temperature = metrics["eval/temperature"]
    assert 0.05 < temperature < 20 and 0 <= metrics["eval/ece_calibrated"] <= 1
    assert f"with temperature {temperature:.4f}" in done.stdout
    kept = (out / "calibration.json").read_text()
    assert f'"temperature": {temperature}' in kept and '"fitted_on": "val"' in kept
    # the calibrated pyfunc model gives softmax(logits / T), computed here with numpy
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/calibrated", dst_path=str(tmp_path / "m"))
    image = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    confidence = model.predict(image, params={"output": "confidence"})
    logits = np.asarray(load_keras(tiny_run.output_dir / "checkpoints" / "best.keras")(
        image.astype(np.float32)), np.float64) / temperature  # fmt: skip
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected = (expected / expected.sum(-1, keepdims=True)).max(-1)
    np.testing.assert_allclose(confidence, expected, atol=1e-4)
    labels = model.predict(image)
    assert labels.dtype == np.int32 and (labels == logits.argmax(-1)).mean() > 0.99


TARGETS = {"keras": "model.keras", "saved_model": "saved", "onnx": "model.onnx",
           "litert": "model.tflite"}  # fmt: skip


def _runtime_logits(fmt, target, image):
    """The exported file run by its own runtime, called here directly (not segexp's adapter)."""
    if fmt == "keras":
        import keras

        import segexp.models.layers  # noqa: F401  (segexp's layers, for deserializing)

        return np.asarray(keras.saving.load_model(target, compile=False)(image))
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(target))  # keep a reference: it owns the variables
        return loaded.serve(image).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: image})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(target))
    given = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(given, image.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given, image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("fmt", list(TARGETS))
def test_export_writes_a_model_its_runtime_runs_like_keras(tiny_run, tmp_path, fmt):
    client, run_id = _run_id(tiny_run)
    target = tmp_path / TARGETS[fmt]
    done = run_command(
        "export",
        [f"model={run_id}", f"format={fmt}", f"output={target}", f"hydra.run.dir={tmp_path / 'h'}"],
        tiny_run.workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from segexp.models import load_keras

    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    reference = np.asarray(load_keras(tiny_run.output_dir / "checkpoints" / "best.keras")(image))
    logits = _runtime_logits(fmt, target, image)
    assert logits.shape == (1, 64, 96, 20)
    assert np.abs(logits - reference).max() < 1e-3
    # the parity check's figures: printed, and in the run
    assert f"parity of {fmt} on 4 val images: largest |logit difference|" in done.stdout
    metrics = client.get_run(run_id).data.metrics
    assert 0 <= metrics[f"export/{fmt}/max_abs_logit_diff"] <= 1e-3
    assert abs(metrics[f"export/{fmt}/mean_iou_change"]) <= 1e-3
    assert metrics[f"export/{fmt}/val_mean_iou"] == pytest.approx(
        metrics["val/mean_iou"], abs=1e-3
    )  # the run's last epoch, scored by training's own evaluator


@pytest.mark.slow
def test_onnx_export_under_torch_without_tensorflow_runs_like_keras(tiny_run, tmp_path):
    """KERAS_BACKEND=torch, TensorFlow unimportable: Keras' exporter (torch.onnx) writes a file
    of one fixed shape, one image at the trained size; it passes the parity check on the val
    split and gives Keras' logits; another size is refused in one line naming the size."""
    from segexp.errors import SegexpError
    from segexp.inference.runtimes import onnx_logits
    from tests.conftest import WITHOUT_TENSORFLOW, backend_env

    client, run_id = _run_id(tiny_run)
    target = tmp_path / "torch.onnx"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "segexp.export", f"model={run_id}",
         "format=onnx", f"output={target}", f"hydra.run.dir={tmp_path / 'h'}"],
        cwd=tiny_run.workdir, env=backend_env("torch"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parity of onnx on 4 val images: largest |logit difference|" in done.stdout
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 64, 64, 3]
    from segexp.models import load_keras

    images = np.random.default_rng(2).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    reference = np.asarray(load_keras(tiny_run.output_dir / "checkpoints" / "best.keras")(images))
    logits = onnx_logits(target)(images)  # three images, one at a time
    assert logits.shape == (3, 64, 64, 20)
    assert np.abs(logits - reference).max() < 1e-3
    with pytest.raises(SegexpError, match=r"takes images of 64x64 .*, not 64x96$"):
        onnx_logits(target)(images[:, :, :64].repeat(2, axis=2)[:, :, :96])


def test_an_export_that_fails_its_parity_check_is_an_error_not_a_file(tiny_run, tmp_path):
    _, run_id = _run_id(tiny_run)
    target = tmp_path / "strict.onnx"
    done = run_command(
        "export",
        [f"model={run_id}", "format=onnx", f"output={target}", "parity.max_logit_diff=0",
         f"hydra.run.dir={tmp_path / 'h'}"],
        tiny_run.workdir,
    )  # fmt: skip
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: format=onnx: the exported model does not compute what the Keras model does "
        "(largest logit difference "
    )
    assert error.endswith(f"> 0); {target} was removed") and not target.exists()


def test_model_argument_that_names_nothing_is_one_error_line(tiny_run, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    done = run_command(
        "predict",
        [
            "model=/no/such.keras",
            f"input={tmp_path}",
            f"output={tmp_path / 'o'}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],  # fmt: skip
        tiny_run.workdir,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: model='/no/such.keras' is not allowed: must be an MLflow run id (32 hex digits), "
        "a models:/NAME/VERSION or runs:/RUN_ID/model URI, or an existing .keras file"
    ]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("0123456789abcdef0123456789abcdef",
         "error: model=0123456789abcdef0123456789abcdef: cannot fetch "
         "runs:/0123456789abcdef0123456789abcdef/model (Run with id="
         "0123456789abcdef0123456789abcdef not found)"),
        ("{tmp}/bad.keras",
         "error: model={tmp}/bad.keras: not a Keras model file (a .keras file is a zip archive)"),
    ],
)  # fmt: skip
def test_a_run_that_is_not_there_or_a_file_that_is_no_model_is_one_line(
    tiny_run, tmp_path, model, message
):
    (tmp_path / "bad.keras").write_text("not a model")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    done = run_command(
        "predict",
        [f"model={model.format(tmp=tmp_path)}", f"input={tmp_path}",
         f"output={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}"],
        tiny_run.workdir,
    )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [message.format(tmp=tmp_path)] and "Traceback" not in done.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_a_label_map(tiny_run, tmp_path):
    _, run_id = _run_id(tiny_run)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tiny_run.tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),  # the server's model download, removed with tmp_path
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"runs:/{run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],  # fmt: skip
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "server did not start in 120 s"
            time.sleep(1)
        image = np.random.default_rng(2).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
        answer = requests.post(f"{base}/invocations", json={"inputs": image.tolist()}, timeout=120)
        assert answer.status_code == 200, answer.text[:2000]
        labels = np.asarray(answer.json()["predictions"])
        assert labels.shape == (1, 40, 56) and labels.min() >= 0 and labels.max() < 20
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_loading_a_logged_model_leaves_no_temporary_files(tiny_run, tmp_path, monkeypatch):
    """MLflow's default download folder is never removed; each load used to leave ~20 MB."""
    import tempfile

    from segexp.inference.model_source import load_model

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_run.tracking_uri)
    _, run_id = _run_id(tiny_run)
    loaded = load_model(run_id)
    assert loaded.run_id == run_id and loaded.source == f"runs:/{run_id}/model"
    assert len(loaded.config["class_names"]) == 20 and loaded.train_config is not None
    assert loaded.keras_model.output_shape[-1] == 20
    assert list(scratch.iterdir()) == []
