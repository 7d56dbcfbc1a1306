"""What every `python -m segexp.<command>` shares: TensorFlow settings, one-line errors, checks."""

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hydra.core.hydra_config import HydraConfig

from segexp import console
from segexp.config import CONFIG_DIR
from segexp.config.backends import keras_backend
from segexp.config.overrides import (
    check_group_choices,
    check_keys,
    check_yaml_files,
    extra_config_dirs,
)
from segexp.errors import SegexpError
from segexp.secrets import redact, redact_console, remember

console.quiet_by_default()  # before MLflow or TensorFlow is imported


# the pip extra that installs each Keras backend segexp trains on (pyproject.toml)
BACKEND_EXTRAS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def check_backend_installed(backend: str | None = None) -> None:
    """Stop with one error line when the Keras backend this process runs is not installed."""
    import importlib.util

    backend = backend or keras_backend()
    extra = BACKEND_EXTRAS.get(backend)
    if extra is not None and importlib.util.find_spec(backend) is None:
        raise SegexpError(
            f"KERAS_BACKEND={backend} but {backend} is not installed: "
            f"pip install -e '.[{extra}]' (or set KERAS_BACKEND to an installed backend)"
        )


def start_backend(verbose: bool = False) -> None:
    """Start the Keras backend with its start-up lines kept off the console unless `verbose`;
    under TensorFlow, first the settings it reads once at import (a value the user already set
    is kept) and its device probe. Other backends never import TensorFlow (their input pipeline
    is segexp.data.loader).

    oneDNN kernels: TensorFlow leaves them off on CPUs without AVX-512, where they still train
    DeepLabV3+ about 2x faster (1.7 s vs 3.7 s per batch of 8 at 128 px on a 2-core AMD CPU).
    """
    backend = keras_backend()
    check_backend_installed(backend)
    console.set_verbosity(verbose)
    with console.native_noise_filtered(keep_all=verbose):
        if backend != "tensorflow":
            logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no-TPU notes
            import keras  # noqa: F401

            return
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe, and its lines, happen here


def error_lines(err: SegexpError) -> str:
    """One 'error: ...' line per problem (store passwords redacted)."""
    return "\n".join(f"error: {redact(line)}" for line in str(err).splitlines())


def one_line_errors(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a Hydra task so a SegexpError ends the command with its `error:` lines, exit 1, and
    every line the command prints is also kept in the job's log."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> Any:
        with console_kept_in_job_log():
            try:
                return task(cfg)
            except SegexpError as err:
                raise SystemExit(error_lines(err)) from None

    return wrapped


@contextlib.contextmanager
def console_kept_in_job_log() -> Iterator[None]:
    """Tee stdout and stderr into the Hydra job log; a SystemExit with a message prints it
    there too (Python would print it after the tee is gone) and exits 1."""
    with console.console_kept_in(console.job_log_path()):
        try:
            yield
        except SystemExit as stop:
            if not isinstance(stop.code, str):
                raise
            print(stop.code, file=sys.stderr)
            raise SystemExit(1) from None


def command_line_overrides() -> list[str]:
    """The overrides of the running Hydra job, as typed."""
    return list(HydraConfig.get().overrides.task)


def overridden(prefix: str) -> bool:
    """Whether the command line sets `prefix` or a key under it (dataset=..., dataset.root=...)."""
    for override in command_line_overrides():
        key = override.lstrip("+~").split("=", 1)[0]
        if key == prefix or key.startswith(f"{prefix}."):
            return True
    return False


def run_app(main: Callable[[], object], config_name: str) -> None:
    """Reject unknown group options, unknown keys and YAML errors in --config-dir files in one
    line, then hand over to the Hydra app `main` (composed from conf/<config_name>.yaml). With
    --config-path (another primary config folder) Hydra checks alone."""
    args = sys.argv[1:]
    redact_console()  # no password of a store URL reaches the console or the job log
    for arg in args:  # URLs as given, with their credentials (resume reads redacted copies)
        remember(arg.split("=", 1)[1] if "=" in arg else None)
    kinds = {"-m": "-m", "--multirun": "-m", "--cfg": "--cfg", "-c": "--cfg", "--info": "--info",
             "-i": "--info"}  # fmt: skip
    modes = [a for a in args if a in kinds]
    if len({kinds[m] for m in modes}) > 1:
        raise SystemExit(  # Hydra's own answer is a traceback
            f"error: {' and '.join(modes)} cannot be combined: --cfg job shows one job's config "
            "(drop -m and pick one value per key), -m runs the sweep"
        )
    if not any(a.startswith(("--config-path", "-cp")) for a in args):
        try:
            extra = extra_config_dirs(args)
            check_yaml_files(extra)
            check_group_choices(args, CONFIG_DIR, extra)
            check_keys(args, CONFIG_DIR, config_name, extra)
        except SegexpError as err:
            raise SystemExit(error_lines(err)) from None
    main()
