"""What the user sees: TensorFlow's and MLflow's own start-up lines and warnings kept off the
console (`verbose=true` brings them back), and every line the command prints kept in the Hydra
job log of its run folder (a leaf: it imports no other segexp module)."""

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from segexp.secrets import redact

# Native lines TensorFlow's C++ runtime writes to file descriptor 2 while it loads and probes
# devices: absl's preamble, info and warning lines, and the CUDA probe's error on a machine
# without a GPU driver. Other error lines (a broken CUDA library on a GPU machine) are kept.
_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|E\d{4} [\d:.]+\s+\d+ \S+:\d+\] (failed call to cuInit|Unable to register))"
)
# Terminal control in console text: colour codes, and what a progress bar redraws.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def quiet_by_default() -> None:
    """Environment settings read at import: MLflow logs errors only and draws no download bars,
    TensorFlow's C++ logging shows errors only. A value the user already set is kept."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_verbosity(verbose: bool) -> None:
    """verbose: every library line back (MLflow at INFO, TensorFlow's start-up lines); else the
    quiet default (MLflow's logger at ERROR, whenever MLflow was imported)."""
    if verbose:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        logging.getLogger("mlflow").setLevel(logging.INFO)
        return
    logging.getLogger("mlflow").setLevel(logging.ERROR)


@contextmanager
def native_noise_filtered(keep_all: bool = False) -> Iterator[None]:
    """Capture file descriptor 2 for the block (TensorFlow's import and device probe) and pass
    on every line that is not start-up noise; with `keep_all`, pass everything at once."""
    if keep_all:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if not _NATIVE_NOISE.match(line)]  # fmt: skip
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def plain(text: str) -> str:
    """Console text as a file should hold it: colour codes dropped, each carriage return and
    backspace applied (a redrawn progress bar keeps its last state)."""
    lines = []
    for line in _ANSI.sub("", text).split("\n"):
        shown = ""
        for part in line.split("\r"):  # each \r starts the line over; the last state stays
            kept = ""
            for char in part:
                kept = kept[:-1] if char == "\b" else kept + char
            shown = kept + shown[len(kept) :] if part else shown
        lines.append(shown.rstrip())
    return "\n".join(lines)


class _Tee:
    """A text stream writing to the console stream and, in plain lines, to the job log while one
    is open. A library that kept a reference to it (MLflow's log handler does) after the block
    ended writes to the console only: a later job in the same process never meets a closed file."""

    def __init__(self, console: TextIO) -> None:
        self.console, self.log, self.pending = console, None, ""

    def write(self, text: str) -> int:
        self.console.write(text)
        if self.log is None or self.log.closed:
            return len(text)
        self.pending += text
        if "\n" in self.pending:
            complete, self.pending = self.pending.rsplit("\n", 1)
            self.log.write(redact(plain(complete)) + "\n")
            self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.console.flush()

    def detach(self) -> None:
        """Write out a partial last line and stop copying to the log."""
        if self.log is not None and not self.log.closed:
            if self.pending:
                self.log.write(redact(plain(self.pending)) + "\n")
            self.log.flush()
        self.log, self.pending = None, ""

    def close(self) -> None:
        """Never closes the console: a library's log handler that kept this stream closes it
        at reconfiguration (absl's does, at the next Hydra job of a sweep)."""
        self.detach()

    def __getattr__(self, name: str) -> object:  # isatty, fileno, encoding, ...
        return getattr(self.console, name)


def job_log_path() -> Path | None:
    """The Hydra job log of the running job (its `<job name>.log`), if Hydra set one up."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


@contextmanager
def console_kept_in(log_path: Path | None) -> Iterator[None]:
    """For the block, every line written to stdout and stderr also goes, as plain text, to
    `log_path` (appended after what Hydra's logging wrote there)."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = sys.stdout, sys.stderr
    # Never a tee around a tee: a stream left from an earlier job is unwrapped first.
    out = _Tee(getattr(sys.stdout, "console", sys.stdout))
    err = _Tee(getattr(sys.stderr, "console", sys.stderr))
    with open(log_path, "a", encoding="utf-8") as log:
        out.log = err.log = log
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved
            out.detach()
            err.detach()
