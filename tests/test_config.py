"""Config groups compose, good overrides land, bad ones fail with one line naming key and value."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate

from segexp.config import CONFIG_DIR, validate_config
from segexp.config.inference import validate_inference_config
from segexp.config.overrides import check_group_choices, check_keys, config_groups
from segexp.errors import ConfigError
from segexp.train import run_name_from_overrides
from tests.conftest import compose_config

GROUPS = config_groups(CONFIG_DIR)
ALL_OPTIONS = [(group, option) for group, options in GROUPS.items() for option in options]


def test_train_yaml_has_the_required_groups():
    assert {"dataset", "backbone", "aspp", "optimizer", "trainer", "tracking", "paths"} <= set(
        GROUPS
    )


# What an option needs from the command line to be complete (its required ??? keys).
REQUIRED = {
    "cihp": ["dataset.root=/data/cihp"],
    "voc": ["dataset.root=/data/voc"],
    "folder": ["dataset.root=/data/mine", "dataset.num_classes=2"],
    "keras_io_cihp": ["dataset.root=/data/cihp"],
    "cihp_r50_os16": ["dataset.root=/data/cihp"],
    "voc_r101_os16": ["dataset.root=/data/voc"],
}


INFERENCE_ONLY = {"tta"}  # groups of evaluate.yaml / predict.yaml, not of train.yaml


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_every_option_of_every_group_composes_and_validates(compose_train, group, option):
    if group in INFERENCE_ONLY:
        cfg = compose_config("evaluate", f"{group}={option}", "model=" + "0" * 32)
        validate_inference_config(cfg, ("model", "split", "worst_images", "tta"))
    else:
        cfg = compose_train(f"{group}={option}", *REQUIRED.get(option, []))
    validate_config(cfg)
    if group == "experiment":  # a preset merges into the root (# @package _global_)
        assert cfg.task_name == option
    elif group == "hparams_search":  # sets hydra.sweeper only (# @package _global_)
        assert cfg.task_name == "train"
    else:
        assert cfg[group] is not None


@pytest.mark.parametrize("option", ["cihp", "voc", "folder"])
def test_datasets_on_disk_require_a_root(compose_train, option):
    with pytest.raises(ConfigError, match="dataset.root is required") as caught:
        validate_config(compose_train(f"dataset={option}"))
    if option == "folder":
        assert "dataset.num_classes is required" in str(caught.value)


def test_keras_io_experiment_sets_the_reference_hyperparameters(compose_train):
    cfg = compose_train("experiment=keras_io_cihp", "dataset.root=/data/cihp")
    assert cfg.dataset.name == "cihp" and cfg.backbone.name == "resnet50"
    assert (cfg.image_size, cfg.trainer.batch_size, cfg.trainer.epochs) == (512, 4, 25)
    assert cfg.optimizer._target_ == "keras.optimizers.Adam"
    assert cfg.optimizer.learning_rate == pytest.approx(1e-3)
    assert (cfg.dataset.val_folder, cfg.dataset.max_train, cfg.dataset.max_val) == (
        "Training",
        1000,
        50,
    )
    assert cfg.backbone.weights == "imagenet" and cfg.augment.name == "none"
    assert list(cfg.aspp.rates) == [6, 12, 18] and cfg.aspp.filters == 256


def test_every_config_key_has_a_comment():
    for path in CONFIG_DIR.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#"), f"{path} lacks a header comment"
        for line in lines:
            stripped = line.strip()
            is_key = ":" in stripped and not stripped.startswith(("#", "-"))
            opens_block = stripped.endswith(":")
            if is_key and not opens_block and "_target_" not in stripped:
                assert "#" in stripped, f"{path}: no comment on {stripped!r}"


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("backbone=resnet50", "backbone.name", "resnet50"),
        ("backbone=mobilenetv2", "backbone.name", "mobilenetv2"),
        ("backbone.weights=null", "backbone.weights", None),
        ("aspp.rates=[6,12,18]", "aspp.rates", [6, 12, 18]),
        ("aspp.filters=128", "aspp.filters", 128),
        ("optimizer=adam", "optimizer._target_", "keras.optimizers.Adam"),
        ("optimizer=sgd", "optimizer._target_", "keras.optimizers.SGD"),
        ("optimizer=adamw", "optimizer._target_", "keras.optimizers.AdamW"),
        ("optimizer.learning_rate=0.01", "optimizer.learning_rate", 0.01),
        ("image_size=256", "image_size", 256),
        ("trainer.epochs=3", "trainer.epochs", 3),
        ("trainer.batch_size=8", "trainer.batch_size", 8),
        ("tracking.experiment=NAME", "tracking.experiment", "NAME"),
    ],
)
def test_documented_overrides_land_in_the_config(compose_train, override, key, expected):
    from omegaconf import OmegaConf

    cfg = compose_train(override)
    validate_config(cfg)
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    assert value == expected


@pytest.mark.parametrize(
    ("option", "cls", "lr"),
    [("adam", "Adam", 2e-3), ("sgd", "SGD", 1e-2), ("adamw", "AdamW", 1e-3)],
)
def test_optimizers_instantiate_through_target(compose_train, option, cls, lr):
    optimizer = instantiate(
        compose_train(f"optimizer={option}", "optimizer.learning_rate=" + str(lr)).optimizer
    )
    assert type(optimizer).__name__ == cls
    assert float(optimizer.learning_rate) == pytest.approx(lr)


BAD_OVERRIDES = [
    ("image_size=100", "image_size=100", "multiple of 16"),
    ("image_size=16", "image_size=16", "at least 32"),
    ("aspp.rates=[]", "aspp.rates=[]", "non-empty list of positive integers"),
    ("aspp.rates=[6,0,18]", "aspp.rates=[6, 0, 18]", "non-empty list of positive integers"),
    ("aspp.rates=[6,-12]", "aspp.rates=[6, -12]", "non-empty list of positive integers"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate=0", "number > 0"),
    ("optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1", "number > 0"),
    ("trainer.epochs=0", "trainer.epochs=0", "positive integer"),
    ("trainer.epochs=-2", "trainer.epochs=-2", "positive integer"),
    ("trainer.batch_size=0", "trainer.batch_size=0", "positive integer"),
    ("dataset.num_classes=1", "dataset.num_classes=1", "integer >= 2"),
    ("aspp.filters=0", "aspp.filters=0", "positive integer"),
    ("trainer.verbose=3", "trainer.verbose=3", "auto, 0, 1 or 2"),
    ("aspp.dropout=1.5", "aspp.dropout=1.5", "[0, 1)"),
    ("dataset.flip_pairs=[[14,14]]", "dataset.flip_pairs=[[14, 14]]", "distinct class ids"),
    ("dataset.flip_pairs=[[14,20]]", "dataset.flip_pairs=[[14, 20]]", "0..19"),
    ("dataset.skip_corrupt=maybe", "dataset.skip_corrupt='maybe'", "true or false"),
    ("augment=standard augment.scale=[2,1]", "augment.scale=[2, 1]", "0 < min <= max"),
    ("augment=standard augment.flip=2", "augment.flip=2", "[0, 1]"),
    ("trainer.best.monitor=val/iou/nose", "trainer.best.monitor='val/iou/nose'", "val/iou/<class"),
    ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience=-1", ">= 0"),
    (
        "loss=cross_entropy loss.class_weights=[1,2]",
        "loss.class_weights=[1, 2]",
        "null, auto or 20 numbers",
    ),
    ("loss=ohem loss.top_k=0", "loss.top_k=0", "fraction in (0, 1]"),
    ("schedule=poly schedule.power=0", "schedule.power=0", "number > 0"),
    ("trainer.precision=float16", "trainer.precision='float16'", "float32, mixed_float16, mixed_b"),
    ("trainer.steps_per_execution=0", "trainer.steps_per_execution=0", "positive integer"),
    ("trainer.jit_compile=sometimes", "trainer.jit_compile='sometimes'", "true or false"),
    ("trainer.strategy=horovod", "trainer.strategy='horovod'", "mirrored, multi_worker"),
    ("dataset.cache=ram", "dataset.cache='ram'", "must be none, memory, disk"),
    (
        "trainer.strategy=multi_worker dataset.skip_corrupt=true",
        "dataset.skip_corrupt=True",
        "must be false with trainer.strategy=multi_worker",
    ),
    (
        "backbone.weights=/no/such/file.h5",
        "backbone.weights='/no/such/file.h5'",
        "existing weights file",
    ),
]


@pytest.mark.parametrize(("override", "shown", "rule"), BAD_OVERRIDES)
def test_bad_values_are_rejected_naming_key_value_and_rule(compose_train, override, shown, rule):
    with pytest.raises(ConfigError) as caught:
        validate_config(compose_train(*override.split()))
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert shown in message
    assert rule in message


@pytest.mark.parametrize(
    "args", [["backbone=foo"], ["-m", "optimizer=adam,rmsprop"], ["dataset=cityscapes"]]
)
def test_unknown_group_option_is_rejected_listing_the_choices(args):
    with pytest.raises(ConfigError, match="is not an option of") as caught:
        check_group_choices(args, CONFIG_DIR)
    group = args[-1].split("=")[0]
    assert ", ".join(GROUPS[group]) in str(caught.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer.epochz=3"], "trainer.epochz is not a key of the train config; trainer has "),
        (["foo=1"], "foo is not a key of the train config; the config has aspp, augment"),
        (["optimizer.weight_decay=0.1"], "optimizer has _target_, learning_rate"),
    ],
)
def test_unknown_keys_are_rejected_in_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as caught:
        check_keys(args, CONFIG_DIR, "train")
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "checked"),
    [
        # the group choice adds the key
        (["optimizer=sgd", "optimizer.weight_decay=0.1"], ["optimizer.weight_decay"]),
        # new (+) and hydra keys are not checked; the experiment's keys are
        (["+trainer.extra=1", "hydra.run.dir=x", "experiment=keras_io_cihp", "trainer.epochs=2",
          "trainer.early_stopping.patience=3"],
         ["trainer.epochs", "trainer.early_stopping.patience"]),
        (["-m", "backbone=resnet50,mobilenetv2", "backbone.freeze_bn=true"],
         ["backbone.freeze_bn"]),
    ],
)  # fmt: skip
def test_known_keys_pass_the_key_check(args, checked):
    assert check_keys(args, CONFIG_DIR, "train") == checked


def test_sweeps_over_existing_options_pass_the_check():
    checked = check_group_choices(
        ["-m", "optimizer=adam,sgd", "backbone=resnet50,mobilenetv2", "trainer.epochs=2"],
        CONFIG_DIR,
    )
    assert checked == [
        "optimizer=adam", "optimizer=sgd", "backbone=resnet50", "backbone=mobilenetv2"
    ]  # fmt: skip


CLI_CASES = [
    ["backbone=foo"],
    ["trainer.epochz=3"],
    ["image_size=100"],
    ["aspp.rates=[]"],
    ["aspp.rates=[0,6]"],
    ["optimizer.learning_rate=0"],
    ["trainer.epochs=0"],
    ["trainer.batch_size=-1"],
    ["dataset.num_classes=1"],
]


@pytest.mark.parametrize("args", CLI_CASES, ids=lambda a: a[0])
def test_cli_prints_one_error_line_exits_nonzero_and_opens_no_run(tmp_path, args):
    done = subprocess.run(
        [sys.executable, "-m", "segexp.train", *args, f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    key = args[0].split("=")[0]
    assert lines[0].startswith("error: ") and key in lines[0]
    assert not (tmp_path / "mlflow.db").exists(), "a run was opened for a bad config"


def test_cfg_job_prints_the_config_without_importing_tensorflow(tmp_path):
    script = (
        "import sys\n"
        "sys.argv = ['segexp.train', '--cfg', 'job', 'backbone=mobilenetv2']\n"
        "from segexp.train import cli\n"
        "cli()\n"
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "name: mobilenetv2" in done.stdout
    assert "image_size: 128" in done.stdout
    assert done.stdout.strip().endswith("TF_NOT_IMPORTED")


def test_run_name_keeps_experiment_overrides_only():
    name = run_name_from_overrides(
        ["backbone=mobilenetv2", "tracking.experiment=x", "paths.data_dir=/d", "image_size=64"]
    )
    assert name == "backbone=mobilenetv2 image_size=64"
    assert run_name_from_overrides(["tracking.uri=sqlite:///x.db"]) is None


def test_sweep_run_name_leads_with_the_varying_overrides_and_numbers_the_job():
    job = ["backbone=mobilenetv2", "image_size=64", "optimizer=sgd", "paths.data_dir=/d"]
    name = run_name_from_overrides(job, sweep=(["optimizer", "trainer.epochs"], 3))
    assert name == "optimizer=sgd #3"
    # nothing varies (a one-job multirun): every override stays, and the number
    everything = "backbone=mobilenetv2 image_size=64 optimizer=sgd #0"
    assert run_name_from_overrides(job, sweep=([], 0)) == everything


COMMAND_KEYS = {
    "check": [],
    "evaluate": ["model=" + "a" * 32],
    "predict": ["model=" + "a" * 32, "input=x", "output=y"],
    "export": ["model=" + "a" * 32, "output=y.keras"],
}


@pytest.mark.parametrize("name", list(COMMAND_KEYS))
def test_every_command_config_composes_from_the_training_groups(name):
    cfg = compose_config(name, *COMMAND_KEYS[name])
    validate_config(cfg)
    assert cfg.task_name == name and cfg.dataset.name == "synthetic"


INFERENCE_BAD = [
    ("tta.mode=zoom", "tta.mode='zoom'", "whole or slide"),
    ("tta.scales=[]", "tta.scales=[]", "non-empty list of positive numbers"),
    ("tta.crop=30", "tta.crop=30", "multiple of 16"),
    ("tta.stride=64 tta.crop=32", "tta.stride=64", "no larger than tta.crop"),
    ("worst_images=-1", "worst_images=-1", ">= 0"),
    ("model=/nope.keras", "model='/nope.keras'", "MLflow run id"),
]


@pytest.mark.parametrize(("override", "shown", "rule"), INFERENCE_BAD)
def test_bad_evaluation_values_name_key_value_and_rule(override, shown, rule):
    args = override.split()
    if not any(a.startswith("model=") for a in args):
        args.append("model=" + "0" * 32)
    cfg = compose_config("evaluate", *args)
    with pytest.raises(ConfigError) as caught:
        validate_inference_config(cfg, ("model", "split", "worst_images", "tta"))
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and shown in message and rule in message


@pytest.mark.parametrize(
    ("preset", "backbone", "lr", "batch"),
    [
        ("cihp_r50_os16", "resnet50_dilated", 0.01, 16),
        ("voc_r101_os16", "resnet101_dilated", 0.007, 16),
    ],
)
def test_paper_recipes_set_what_their_comments_say(compose_train, preset, backbone, lr, batch):
    cfg = compose_train(f"experiment={preset}", "dataset.root=/data")
    validate_config(cfg)
    assert cfg.backbone.name == backbone and cfg.backbone.weights == "imagenet"
    assert cfg.backbone.output_stride == 16 and list(cfg.aspp.rates) == [6, 12, 18]
    assert cfg.optimizer._target_ == "keras.optimizers.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.learning_rate == pytest.approx(lr)
    assert cfg.schedule.kind == "poly" and cfg.schedule.power == 0.9
    assert cfg.augment.name == "standard" and cfg.trainer.batch_size == batch
    assert cfg.image_size == 512


def test_the_readme_slurm_recipe_composes_with_the_submitit_launcher():
    from hydra import compose, initialize_config_dir

    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2",
                 "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_node=4",
                 "trainer.strategy=multi_worker", "trainer.batch_size=32",
                 "trainer.sync_bn=true"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 1, 4)
    validate_config(compose_config("train", *overrides[4:]))


@pytest.mark.parametrize("entry", ["evaluate", "predict", "export", "check", "bench"])
def test_only_train_opens_a_sweep_parent_run(entry):
    """The MlflowSweep callback (a parent run saying it ran segexp.train) is train's alone."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        train = compose(config_name="train", return_hydra_config=True)
        other = compose(config_name=entry, return_hydra_config=True)
    assert train.hydra.callbacks.mlflow_sweep._target_ == "segexp.tracking.sweep.MlflowSweep"
    assert "mlflow_sweep" not in other.hydra.callbacks
