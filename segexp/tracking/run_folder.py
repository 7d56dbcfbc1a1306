"""What a run's output folder holds for tracking: which store and run it logs to
(tracking/run.json) and where the resolved config is kept (what resume and segexp.sync read)."""

import dataclasses
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segexp import atomic
from segexp.errors import SegexpError
from segexp.secrets import MASK, redact, restore

TRACKING_DIR = "tracking"  # under the run's output folder
RUN_FILE = "run.json"  # which store and run the folder belongs to
RESOLVED_CONFIG = "config/resolved.yaml"  # artifact (and file under tracking/files/) of the config
LOCK_FILE = "train.lock"  # held by the process training the folder's run


@dataclass(frozen=True)
class RunLink:
    """Which MLflow store and run an output folder logs to (tracking/run.json)."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    pid: int = 0  # the training process that last opened the run, and its host
    host: str = ""
    started_ms: int = 0  # when the run was created: the timestamp of once-per-run metrics

    def process_gone(self) -> bool:
        """Whether the training process that last ran this folder is dead (same host only)."""
        if not self.pid or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def save(self, output_dir: Path) -> None:
        """Write run.json, the store URL's password redacted."""
        saved = {**self.__dict__, "tracking_uri": redact(self.tracking_uri)}
        atomic.write_text(output_dir / TRACKING_DIR / RUN_FILE, json.dumps(saved, indent=2) + "\n")

    @classmethod
    def load(cls, output_dir: Path) -> "RunLink":
        """Read run.json; a redacted store URL gets its credentials from tracking.uri or
        $MLFLOW_TRACKING_URI as given to this command (never from a file)."""
        path = output_dir / TRACKING_DIR / RUN_FILE
        if not path.is_file():
            raise SegexpError(f"{output_dir} is not a segexp run folder: {path} does not exist")
        link = cls(**json.loads(path.read_text()))
        uri = restore(link.tracking_uri)
        if MASK in uri:
            raise SegexpError(
                f"{path}: the run's store {link.tracking_uri} needs its password, which segexp "
                "never writes down: give it again with tracking.uri=... (or MLFLOW_TRACKING_URI), "
                "or keep it out of the URL (PGPASSWORD, ~/.pgpass, MLFLOW_TRACKING_PASSWORD)"
            )
        return dataclasses.replace(link, tracking_uri=uri)


def resume_command(output_dir: Path) -> str:
    """The command that continues the run of `output_dir` from its saved state."""
    return f"python -m segexp.train resume={output_dir}"


@contextmanager
def training_lock(output_dir: Path) -> Iterator[None]:
    """Hold the folder's lock for the block: one process trains a run at a time (a second
    `resume=` of it fails in one line). The kernel drops the lock of a process that dies."""
    path = output_dir / TRACKING_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SegexpError(
                f"{output_dir} is being trained by {holder} (it holds {path}); wait for it to "
                "end or stop it, then resume the run"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
