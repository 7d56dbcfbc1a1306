"""Bad input is refused before a run opens, in one line naming the key, the value and what is
allowed: `_target_` keys and optimizer ranges, the tracking store, class names, --config-dir."""

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from segexp.config import CONFIG_DIR, validate_config
from segexp.config.names import metric_name
from segexp.config.optimizers import COMMON, KERAS_OPTIMIZERS
from segexp.config.overrides import check_group_choices, check_keys, check_yaml_files
from segexp.config.warnings import config_warnings
from segexp.errors import ConfigError, SegexpError
from segexp.tracking.store import check_store
from tests.conftest import compose_config

NAMES_18 = "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r"  # + 2 more: the 20 classes of dataset=synthetic


def _refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(compose_config("train", *overrides))
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


# --- 1. every _target_ node: keys by signature, keras optimizer values by range -------------------

OUT_OF_RANGE = [
    (["optimizer=sgd", "optimizer.momentum=2"], "optimizer.momentum=2", "number in [0, 1)"),
    (["optimizer=sgd", "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1", ">= 0 or null"),
    (["+optimizer.beta_1=1.0"], "optimizer.beta_1=1.0", "number in [0, 1)"),
    (["+optimizer.epsilon=0"], "optimizer.epsilon=0", "number > 0"),
    (["+optimizer.clipnorm=-1"], "optimizer.clipnorm=-1", "number > 0 or null"),
    (["optimizer=sgd", "optimizer.nesterov=maybe"], "optimizer.nesterov='maybe'", "true or false"),
    (["optimizer=adamw", "optimizer.weight_decay=null"], "optimizer.weight_decay=None", "AdamW"),
    (["+optimizer.gradient_accumulation_steps=1"], "gradient_accumulation_steps=1", ">= 2"),
    (
        ["+optimizer.clipnorm=1", "+optimizer.clipvalue=2"],
        "optimizer.clipvalue=2",
        "only one of clipnorm, clipvalue, global_clipnorm can be set (optimizer.clipnorm is 1)",
    ),
]


@pytest.mark.parametrize(("overrides", "shown", "rule"), OUT_OF_RANGE, ids=lambda x: str(x))
def test_optimizer_values_out_of_range_are_refused(overrides, shown, rule):
    message = _refused(*overrides)
    assert shown in message and rule in message


UNKNOWN_KEYS = [
    (["+optimizer.momentun=0.9"], "optimizer.momentun=0.9", "keras.optimizers.Adam takes no "
     "argument 'momentun'; it takes amsgrad, beta_1, beta_2, clipnorm"),
    (["loss=ce_dice", "+loss.terms.1.smoth=2"], "loss.terms[1].smoth=2",
     "segexp.training.losses.dice takes no argument 'smoth'; it takes smooth"),
    (["+backbone.stride=8"], "backbone.stride=8", "takes freeze_bn, name, output_stride, weights"),
    (["schedule=poly", "+schedule.powr=1"], "schedule.powr=1", "takes kind, min_lr, power, warm"),
    (["+loss.num_classes=3"], "loss.num_classes=3", "segexp passes num_classes to"),
    (["loss._target_=segexp.training.losses.dicee"], "loss._target_='segexp.training.losses.dicee'",
     "module segexp.training.losses has no dicee"),
    (["optimizer._target_=keras.optimizers.Adamm"], "optimizer._target_='keras.optimizers.Adamm'",
     "keras.optimizers has no Adamm; it has Adadelta"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "shown", "rule"), UNKNOWN_KEYS, ids=lambda x: str(x))
def test_keys_a_target_does_not_take_are_refused_naming_the_allowed_ones(overrides, shown, rule):
    message = _refused(*overrides)
    assert shown in message and rule in message


def test_targets_are_checked_without_importing_tensorflow():
    script = (
        "import sys\n"
        "from tests.conftest import compose_config\n"
        "from segexp.config import validate_config\n"
        "for o in ('adam', 'sgd', 'adamw'):\n"
        "    validate_config(compose_config('train', 'loss=ce_dice', 'schedule=poly',\n"
        "                                   f'optimizer={o}', 'backbone=resnet50_dilated'))\n"
        "print('TF' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'NO_TF')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NO_TF"


def test_ints_are_numbers_and_reach_keras_as_floats():
    from hydra.utils import instantiate

    cfg = compose_config(
        "train", "optimizer=sgd", "optimizer.momentum=0", "optimizer.learning_rate=1"
    )
    validate_config(cfg)
    assert type(cfg.optimizer.momentum) is float and type(cfg.optimizer.learning_rate) is float
    optimizer = instantiate(cfg.optimizer)  # Keras' SGD refuses an int momentum
    assert float(optimizer.momentum) == 0.0 and float(optimizer.learning_rate) == 1.0


def test_keras_optimizer_table_matches_the_real_signatures():
    import inspect

    import keras

    real = {}
    for name in dir(keras.optimizers):
        cls = getattr(keras.optimizers, name)
        if inspect.isclass(cls) and issubclass(cls, keras.optimizers.Optimizer):
            parameters = inspect.signature(cls).parameters
            if "learning_rate" in parameters:  # not the base class nor LossScaleOptimizer
                real[name] = {p for p in parameters if p not in ("kwargs", "args")}
    assert set(real) == set(KERAS_OPTIMIZERS)
    for name, arguments in KERAS_OPTIMIZERS.items():
        assert set(arguments) | set(COMMON) == real[name], name


def test_source_reading_finds_the_same_arguments_as_inspect_for_every_config_target():
    import inspect

    from hydra.utils import get_object

    from segexp.config import signatures

    targets = {
        line.split(":", 1)[1].split("#")[0].strip()
        for path in CONFIG_DIR.rglob("*.yaml")
        for line in path.read_text().splitlines()
        if line.strip().lstrip("- ").startswith("_target_:")
    }
    segexp_targets = sorted(t for t in targets if t.startswith("segexp.") and "sweep" not in t)
    assert len(segexp_targets) >= 9, segexp_targets
    for target in [*segexp_targets, "segexp.losses.dice"]:  # the old name: a re-export
        real = inspect.signature(get_object(target)).parameters
        assert signatures._from_source(target, depth=0) == frozenset(real), target


# --- 2. the tracking store ------------------------------------------------------------------------


class _NotMlflow(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _LooksLikeMlflow(http.server.BaseHTTPRequestHandler):
    asked: list[str] = []  # the paths requested

    def do_GET(self):  # noqa: N802
        self.asked.append(self.path)
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler: type) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_unknown_scheme_is_refused_by_the_validator_and_the_store_check():
    message = _refused("tracking.uri=garbage://x")
    assert "tracking.uri='garbage://x' is not allowed: unknown scheme 'garbage'; use sqlite://" in (
        message
    )
    with pytest.raises(SegexpError, match="tracking.uri=garbage://x: unknown scheme 'garbage'"):
        check_store("garbage://x")


def test_a_web_server_that_is_not_mlflow_is_refused(tmp_path):
    server, uri = _serve(functools.partial(_NotMlflow, directory=str(tmp_path)))
    try:
        with pytest.raises(SegexpError) as caught:
            check_store(uri)
    finally:
        server.shutdown()
    assert str(caught.value) == (
        f"tracking.uri={uri}: not an MLflow tracking server (GET "
        "/api/2.0/mlflow/experiments/get-by-name answered HTTP 404, text/html); point "
        "tracking.uri at the address `mlflow server` listens on"
    )


def test_a_server_answering_mlflow_json_passes():
    """The check asks the server for an experiment as MLflow's client would; an MLflow JSON
    answer (even 'does not exist') passes."""
    _LooksLikeMlflow.asked = []
    server, uri = _serve(_LooksLikeMlflow)
    try:
        check_store(uri)  # raises SegexpError on a problem
    finally:
        server.shutdown()
    assert _LooksLikeMlflow.asked == [
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    ]


def test_a_store_in_a_folder_segexp_cannot_write_is_refused(tmp_path):
    # /proc takes no new files, even from root (for whom chmod 0o555 stops nothing).
    with pytest.raises(
        SegexpError, match=r"tracking.uri=sqlite:////proc/x.db: cannot write in /proc"
    ):
        check_store("sqlite:////proc/x.db")
    check_store("sqlite:////proc/x.db", writable=False)  # compare only reads


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_a_store_in_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SegexpError, match=f"cannot write in {folder}"):
            check_store(f"sqlite:///{folder}/mlflow.db")
    finally:
        folder.chmod(0o755)


def test_a_corrupt_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(SegexpError) as caught:
        check_store(f"sqlite:///{db}")
    assert str(caught.value) == (
        f"tracking.uri=sqlite:///{db}: {db} is not a readable SQLite database (file is not a "
        "database); move it away to start a new store, or restore it from a backup"
    )


# --- 3. class names as metric keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [("car+truck", "car_truck"), ("tv/monitor", "tv_monitor"), ("", "_"), ("..", "__"),
     ("a b:c-d.e", "a b:c-d.e"), ("x" * 300, "x" * 240)],
)  # fmt: skip
def test_class_names_become_metric_keys_mlflow_accepts(name, key):
    from mlflow.utils.validation import _validate_metric_name

    assert metric_name(name) == key
    for prefix in ("val", "train"):
        _validate_metric_name(f"{prefix}/iou/{metric_name(name)}")  # raises if MLflow refuses


@pytest.mark.parametrize(
    ("last_two", "rule"),
    [
        ("s,s", "class 18 and class 19 are both named 's'"),
        ("car+truck,car_truck", "class 18 ('car+truck') and class 19 ('car_truck') would both be "
         "logged as metric val/iou/car_truck"),
    ],
)  # fmt: skip
def test_class_names_that_collide_are_refused_naming_both(last_two, rule):
    message = _refused(f"dataset.class_names=[{NAMES_18},{last_two}]")
    assert message.startswith("dataset.class_names=['a', 'b'")
    assert rule in message and "class names must be unique" in message


def test_a_renamed_class_is_named_in_a_warning_and_its_key_is_monitored():
    cfg = compose_config(
        "train", f"dataset.class_names=[{NAMES_18},car+truck,t]",
        "trainer.best.monitor=val/iou/car_truck",
    )  # fmt: skip
    validate_config(cfg)
    assert "class 'car+truck' is logged as metric val/iou/car_truck" in "\n".join(
        config_warnings(cfg)
    )


def test_per_class_metrics_use_the_sanitized_names():
    import numpy as np

    from segexp.evaluation.evaluator import EvalResult

    scores = {"pixel_accuracy": 1.0, "mean_iou": 0.5, "mean_accuracy": 0.5, "mean_dice": 0.5,
              "iou": np.array([0.25, 0.75, np.nan])}  # fmt: skip
    result = EvalResult(np.zeros((3, 3)), scores, loss=0.1, images=1)
    flat = result.metrics(("background", "car+truck", "gone"), "val")
    assert flat["val/iou/car_truck"] == 0.75 and flat["val/iou/background"] == 0.25
    assert not any("+" in key or "gone" in key for key in flat)


# --- 4. --config-dir ------------------------------------------------------------------------------


@pytest.fixture
def extra_dir(tmp_path: Path) -> Path:
    """A --config-dir with one extra dataset option."""
    folder = tmp_path / "extra"
    (folder / "dataset").mkdir(parents=True)
    text = (CONFIG_DIR / "dataset" / "synthetic.yaml").read_text()
    (folder / "dataset" / "mine.yaml").write_text(text)
    return folder


def test_unknown_keys_are_still_refused_with_a_config_dir(extra_dir):
    check_group_choices(["dataset=mine"], CONFIG_DIR, [extra_dir])
    check_keys(["dataset=mine", "trainer.epochs=3"], CONFIG_DIR, "train", [extra_dir])
    with pytest.raises(ConfigError, match="trainer.epochz is not a key of the train config"):
        check_keys(["dataset=mine", "trainer.epochz=3"], CONFIG_DIR, "train", [extra_dir])
    with pytest.raises(ConfigError, match="dataset=mine2 is not an option of 'dataset'"):
        check_group_choices(["dataset=mine2"], CONFIG_DIR, [extra_dir])


def test_a_yaml_error_in_a_config_dir_file_names_the_file_and_line(extra_dir):
    bad = extra_dir / "dataset" / "broken.yaml"
    bad.write_text("# broken\nname: [oops\nroot: x\n")
    with pytest.raises(ConfigError) as caught:
        check_yaml_files([extra_dir])
    assert str(caught.value) == (
        f"{bad} line 3, column 5: YAML syntax error: expected ',' or ']', but got ':'; fix the "
        f"file in --config-dir {extra_dir}"
    )


# --- the command line: one error line, exit code 1, no run ----------------------------------------


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "segexp.train", *args, f"hydra.run.dir={cwd / 'out'}"],
        cwd=cwd, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The only `error:` line, last, with exit code 1 and no traceback (TensorFlow's own log
    lines may come before it when the check runs after TensorFlow loads)."""
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in done.stderr, done.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["optimizer=sgd", "optimizer.momentum=2"], "error: optimizer.momentum=2 is not allowed"),
        (["tracking.uri=garbage://x"], "error: tracking.uri='garbage://x' is not allowed"),
        (["--config-dir", "extra", "dataset=mine", "trainer.epochz=3"],
         "error: trainer.epochz is not a key of the train config"),
        (["--config-dir", "extra", "dataset=broken"],
         "error: {cwd}/extra/dataset/broken.yaml line 3"),
    ],
    ids=["momentum", "scheme", "config-dir-key", "config-dir-yaml"],
)  # fmt: skip
def test_cli_refuses_bad_input_in_one_line_before_a_run_opens(tmp_path, args, start):
    (tmp_path / "extra" / "dataset").mkdir(parents=True)
    (tmp_path / "extra" / "dataset" / "mine.yaml").write_text(
        (CONFIG_DIR / "dataset" / "synthetic.yaml").read_text()
    )
    if "dataset=broken" in args:
        (tmp_path / "extra" / "dataset" / "broken.yaml").write_text("# x\nname: [oops\nroot: x\n")
    done = _train(args, tmp_path)
    line = _one_error_line(done)
    assert done.stderr.strip() == line, "validation runs before TensorFlow loads"
    assert line.startswith(start.format(cwd=tmp_path)), line
    assert not (tmp_path / "mlflow.db").exists(), "a run was opened for bad input"


def test_cli_with_a_corrupt_store_stops_in_one_line_and_keeps_the_file(tmp_path):
    garbage = os.urandom(4096)
    (tmp_path / "mlflow.db").write_bytes(garbage)
    line = _one_error_line(_train([f"paths.data_dir={tmp_path / 'data'}"], tmp_path))
    assert line.startswith(f"error: tracking.uri=sqlite:///{tmp_path}/mlflow.db: ")
    assert "is not a readable SQLite database" in line
    assert (tmp_path / "mlflow.db").read_bytes() == garbage
    assert not (tmp_path / "data").exists(), "data was generated before the store was checked"


def test_imagenet_weights_for_the_tiny_backbone_are_refused_before_any_build():
    message = _refused("backbone=tiny", "backbone.weights=imagenet")
    assert message == (
        "backbone.weights='imagenet' is not allowed: tiny has no ImageNet weights: null or a file"
    )
