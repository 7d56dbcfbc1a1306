"""Shared fixtures: config composition and one tiny training run shared by the end-to-end tests."""

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from segexp.config import CONFIG_DIR

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first, each file's tests in their order: with a file per xdist
    worker at a time (make test), the long files start at once and the short ones fill in at the
    end, instead of a long file running alone while the other worker idles."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; undo that after every test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def pyfunc_imports_undone():
    """Loading a pyfunc model puts its copy of segexp (code_paths, without conf/) first on
    sys.path and drops the imported segexp modules, for the rest of the process: later tests in
    this worker, and the processes they spawn, would import that copy. Undone after the test."""
    saved_path = list(sys.path)
    saved = {k: m for k, m in sys.modules.items() if k == "segexp" or k.startswith("segexp.")}
    yield
    sys.path[:] = saved_path
    for name in [k for k in sys.modules if k == "segexp" or k.startswith("segexp.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def compose_config(name: str, *overrides: str) -> DictConfig:
    """Compose conf/NAME.yaml with overrides, as `python -m segexp.NAME` would."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture
def compose_train():
    """Compose conf/train.yaml with overrides, as `python -m segexp.train` would."""

    def _compose(*overrides: str) -> DictConfig:
        return compose_config("train", *overrides)

    return _compose


def run_segexp(
    args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m segexp.train ARGS` in `cwd` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "segexp.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **(env or {})},
    )


def backend_env(backend: str, fault: str | None = None, devices: int = 1) -> dict[str, str]:
    """The environment of a segexp subprocess on `backend` (with SEGEXP_FAULT and that many JAX
    CPU devices), without the outer MLFLOW_TRACKING_URI."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "SEGEXP_FAULT", "XLA_FLAGS")}  # fmt: skip
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if fault:
        env["SEGEXP_FAULT"] = fault
    if devices > 1:  # JAX then sees that many CPU devices
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


# `python -c WITHOUT_TENSORFLOW segexp.<command> args...`: the command with TensorFlow unimportable
WITHOUT_TENSORFLOW = """
import runpy, sys
sys.modules["tensorflow"] = None  # an import of TensorFlow now fails
command = sys.argv[1]
sys.argv = [command, *sys.argv[2:]]
runpy.run_module(command, run_name="__main__")
"""

# A tiny but complete run: 64 px, the tiny backbone (8 convolutions, traced in seconds) with a
# 16-filter ASPP, 8 train / 4 val images.
TINY_EPOCHS = 2
TINY_ARGS = [
    "backbone=tiny",
    "image_size=64",
    "aspp.filters=16",
    f"trainer.epochs={TINY_EPOCHS}",
    "trainer.batch_size=4",
    "dataset.num_train=8",
    "dataset.num_val=4",
    "dataset.min_size=48",
    "dataset.max_size=80",
    "tracking.experiment=tiny",
    "tracking.num_prediction_samples=2",
]


@dataclass(frozen=True)
class TinyRun:
    workdir: Path
    output_dir: Path
    tracking_uri: str
    process: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic images of TINY_ARGS, written once, for runs that share a data folder (made
    before they start, so parallel processes do not write it at the same time)."""
    from segexp.data.registry import build_dataset

    data_dir = tmp_path_factory.mktemp("tiny_data")
    build_dataset(compose_config("train", *TINY_ARGS, f"paths.data_dir={data_dir}").dataset)
    return data_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TinyRun:
    """One tiny training subprocess into a fresh SQLite store, shared by the tests reading it.

    Under pytest-xdist the workers share one: the first to take the lock runs it and writes
    its output beside it, the others wait and read that."""
    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent  # the folder all workers share
    workdir = root / "tiny_run"
    output_dir = workdir / "out"
    record = workdir / "process.json"
    args = [*TINY_ARGS, f"paths.data_dir={workdir / 'data'}", f"hydra.run.dir={output_dir}"]
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            workdir.mkdir(exist_ok=True)
            done = run_segexp(args, cwd=workdir)
            saved = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
            record.write_text(json.dumps(saved))
    process = subprocess.CompletedProcess(args, **json.loads(record.read_text()))
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    return TinyRun(workdir, output_dir, f"sqlite:///{workdir / 'mlflow.db'}", process)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for this test session (tests.helpers.postgres): each test
    creates its own databases on it. Skips without PostgreSQL's binaries, except in CI."""
    from tests.helpers import postgres as pg

    if pg.binaries() is None:
        if os.environ.get(pg.REQUIRE_ENV):
            pytest.fail("PostgreSQL's binaries (initdb) are missing: .ci/run installs them")
        pytest.skip("no PostgreSQL binaries here (apt-get install postgresql)")
    server = pg.start_server()
    try:
        yield server
    finally:
        pg.remove(server)
