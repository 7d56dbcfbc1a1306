"""Where the MLflow store is and whether it can be used; imports no TensorFlow, so commands
that only read or set up the store (compare, the sweep callback) start fast."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError


def resolve_tracking_uri(configured: str | None, cwd: Path) -> str:
    """tracking.uri if set, else $MLFLOW_TRACKING_URI, else an absolute sqlite:///<cwd>/mlflow.db."""
    if configured:
        return str(configured)
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{(cwd / 'mlflow.db').resolve()}"


def artifact_location_for(uri: str) -> str | None:
    """A folder `mlartifacts/` beside a SQLite store; None (the server decides) for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = Path(uri.removeprefix("sqlite:///"))
    return (db_path.resolve().parent / "mlartifacts").as_uri()


def ui_command(uri: str) -> str:
    """The command (or address) that shows this store's runs."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when the store cannot be used (MLflow itself retries for minutes).

    A tracking server counts as reachable when it answers HTTP at all; a SQLite store needs
    its folder to exist.
    """
    import requests

    source = (
        "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "tracking.uri"
    )
    if uri.startswith(("http://", "https://")):
        try:
            requests.get(uri, timeout=timeout_s)
        except requests.RequestException as err:
            raise SegexpError(
                f"{source}={uri}: cannot reach the MLflow tracking server "
                f"({type(err).__name__}). Start it, or point {source} at a reachable server "
                "or at sqlite:///ABSOLUTE/PATH/mlflow.db"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise SegexpError(f"{source}={uri}: the folder {folder} does not exist")


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: hold <db>.lock while MLflow creates or migrates its tables, which
    several jobs starting at once on a new store would otherwise do in parallel and fail."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_experiment(uri: str, name: str) -> str:
    """Return the id of experiment `name`, creating it (with an explicit artifact folder)."""
    mlflow.set_tracking_uri(uri)
    with _creation_lock(uri), failing_when_locked(uri):
        return _ensure_experiment(MlflowClient(uri), uri, name)


def is_locked(err: BaseException) -> bool:
    """Whether `err` is SQLite's "database is locked" (another process holds a write lock)."""
    return "database is locked" in str(err)


@contextmanager
def failing_when_locked(uri: str) -> Iterator[None]:
    """Turn SQLite's "database is locked" (after its own busy wait) into a message naming the
    store: another process holds a write lock on it for too long."""
    try:
        yield
    except Exception as err:
        if not is_locked(err):
            raise
        raise SegexpError(
            f"tracking store {uri} stayed locked by another process past SQLite's busy timeout; "
            "find the process holding it (e.g. an open sqlite3 shell or a stuck job) or use a "
            "tracking server for many parallel jobs"
        ) from None


def _ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location_for(uri))
        except MlflowException:  # created meanwhile by a parallel job
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise SegexpError(
            f"tracking.experiment={name!r} is deleted in {uri}: restore it with "
            f"'mlflow experiments restore --experiment-id {experiment.experiment_id}' "
            "or choose another name"
        )
    return experiment.experiment_id
