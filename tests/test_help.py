"""Each command's --help fits a screen and teaches: what it does, its own keys, three examples
that compose, where the whole config is; fast (no TensorFlow). The same for segexp.compare."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segexp.config import CONFIG_DIR, validate_config
from segexp.config.overrides import check_group_choices, check_keys, config_groups
from tests.conftest import compose_config

COMMANDS = ["train", "evaluate", "predict", "export", "check", "bench"]

# What each page must show besides the keys of the command's own conf/<command>.yaml.
EXPECTED = {
    "train": [
        *(f"{group}: " for group in ("dataset", "backbone", "aspp", "optimizer", "schedule")),
        "image_size=", "trainer.epochs=", "trainer.batch_size=", "optimizer.learning_rate=",
        "tracking.experiment=", "resume=", "experiment=",
    ],
    "evaluate": ["tta=", "dataset=", "image_size="],
    "predict": ["tta=", "image_size="],
    "export": ["tracking.uri="],
    "check": ["dataset=", "dataset.root=", "dataset.num_classes="],
    "bench": ["image_size=", "trainer.batch_size=", "backbone="],
}  # fmt: skip
MAX_LINES = 60


def own_keys(command: str) -> list[str]:
    """The keys conf/<command>.yaml adds to common.yaml (a mapping's keys one level down:
    bench.steps, ...), with the groups it adds to the defaults (tta)."""
    own = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{command}.yaml"))
    keys = []
    for key, value in own.items():
        if key in ("defaults", "hydra", "task_name"):
            continue
        keys += [f"{key}.{sub}" for sub in value] if isinstance(value, dict) else [key]
    groups = [next(iter(d)) for d in own["defaults"] if isinstance(d, dict)]
    return keys + [g for g in groups if not g.startswith("override ")]


def run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`python -X importtime ARGS` in `cwd` (the imports listed on stderr), and its seconds."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    return done, time.monotonic() - start


def imported(stderr: str) -> set[str]:
    """Top-level packages in `-X importtime` lines."""
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def example_overrides(line: str, command: str) -> list[str]:
    """The overrides of an example line, a sweep's first value each (-m and comments left out)."""
    words = line.split("#", 1)[0].split()
    assert words[:3] == ["python", "-m", f"segexp.{command}"], line
    args = words[3:]
    return [a.split(",", 1)[0] if "=" in a else a for a in args if a != "-m"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_a_screen_with_the_commands_keys_and_examples_that_compose(command, tmp_path):
    done, seconds = run(["-m", f"segexp.{command}", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines"
    assert lines[0].startswith(f"python -m segexp.{command}")
    for key in [*(f"{k}=" for k in own_keys(command)), *EXPECTED[command]]:
        assert key in text, f"segexp.{command} --help does not show {key!r}"
    assert "--cfg job" in text and "--hydra-help" in text
    assert "Powered by Hydra" not in text and "== Config ==" not in text  # not Hydra's page
    assert not {"tensorflow", "keras"} & imported(done.stderr), f"{seconds:.1f} s"
    assert not list(tmp_path.iterdir())  # no output folder for --help

    examples = text.split("\nExamples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(examples) == 3, examples
    for example in examples:
        overrides = example_overrides(example.strip(), command)
        check_group_choices(overrides, CONFIG_DIR)
        check_keys(overrides, CONFIG_DIR, command)
        validate_config(compose_config(command, *overrides))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_key_a_help_page_explains_is_a_key_or_group_of_the_command(command):
    """A `  key=VALUE  # what it does` line must not outlive a renamed key."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=command, return_hydra_config=True)
    page = OmegaConf.to_container(cfg.hydra.help)["template"]
    groups = config_groups(CONFIG_DIR)
    explained = re.findall(r"^ {2}([a-z_][a-z_.]*)=\S*\s+#", page, flags=re.MULTILINE)
    assert len(explained) >= 3, page
    for key in explained:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        assert key in groups or (OmegaConf.is_dict(node) and leaf in node.keys()), key  # noqa: SIM118 (??? too)


def test_help_shows_the_values_the_command_line_chose(tmp_path):
    done, _ = run(
        ["-m", "segexp.train", "backbone=mobilenetv2", "image_size=64", "--help"], tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dataset=synthetic backbone=mobilenetv2 " in done.stdout
    assert "a multiple of the output stride (64)" in done.stdout


def test_compare_help_names_the_module_and_explains_every_option(tmp_path):
    from segexp.compare import parser

    done, seconds = run(["-m", "segexp.compare", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: python -m segexp.compare ")
    assert "compare.py" not in done.stdout
    assert not {"mlflow", "tensorflow"} & imported(done.stderr), f"{seconds:.1f} s"
    for action in parser()._actions:
        assert action.help, action.option_strings or action.dest
        assert (action.option_strings or [action.dest])[0] in done.stdout
    assert "default: experiment=segexp" in " ".join(done.stdout.split())


def test_compare_without_arguments_on_a_missing_store_says_so_in_one_line(tmp_path):
    done, _ = run(["-m", "segexp.compare"], tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        f"error: experiment=segexp: no runs to compare, the store sqlite:///{tmp_path.resolve()}"
        "/mlflow.db does not exist (python -m segexp.train creates it; --tracking-uri picks "
        "another store)"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # a read-only command makes no store


def test_a_sweep_with_cfg_job_is_one_error_line_not_a_traceback(tmp_path):
    done, _ = run(["-m", "segexp.train", "-m", "optimizer=adam,sgd", "--cfg", "job"], tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        "error: -m and --cfg cannot be combined: --cfg job shows one job's config (drop -m and "
        "pick one value per key), -m runs the sweep"
    ]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("command", "required"), [("evaluate", ["model"]), ("export", ["model", "output"])]
)
def test_a_missing_key_is_said_once_and_kept_in_the_job_log(command, required, tmp_path):
    done, _ = run(["-m", f"segexp.{command}"], tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        f"error: {key} is required: set it on the command line, e.g. {key}=VALUE"
        for key in required
    ]
    logs = list((tmp_path / "outputs").rglob(f"{command}.log"))
    assert len(logs) == 1 and logs[0].read_text().splitlines() == errors
