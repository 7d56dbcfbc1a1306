"""Where the MLflow store is and whether it can be used; imports no TensorFlow, so commands
that only read or set up the store (compare, the sweep callback) start fast."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segexp.config.tracking_uri import scheme_problem
from segexp.errors import SegexpError
from segexp.secrets import remember, restore


def resolve_tracking_uri(configured: str | None, cwd: Path) -> str:
    """tracking.uri if set, else $MLFLOW_TRACKING_URI, else an absolute sqlite:///<cwd>/mlflow.db.
    A redacted URL (read back from a run's config) gets the credentials given to this command."""
    if configured:
        remember(str(configured))
        return restore(str(configured))
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        remember(from_env)
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


def run_page(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server, or on `mlflow ui`'s default
    address for a local store. A direct link skips the 3.17 UI's GenAI overview."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def check_store(uri: str, timeout_s: float = 5.0, writable: bool = True) -> None:
    """Fail fast, naming the URI, when the store cannot be used (MLflow itself retries for minutes
    or fails with a traceback): an unknown scheme, a server that does not answer or is not MLflow,
    a SQLite file that is not a database, or (`writable`) a SQLite store segexp cannot write."""
    source = (
        "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "tracking.uri"
    )
    problem = scheme_problem(uri)
    if problem is None and uri.startswith(("http://", "https://")):
        problem = _server_problem(uri, source, timeout_s)
    elif problem is None and uri.startswith("sqlite:///"):
        problem = _sqlite_problem(Path(uri.removeprefix("sqlite:///")), writable)
    if problem is not None:
        raise SegexpError(f"{source}={uri}: {problem}")


def _server_problem(uri: str, source: str, timeout_s: float) -> str | None:
    """Ask the server for an experiment, as MLflow's client would: it must answer MLflow JSON."""
    import requests

    endpoint = "/api/2.0/mlflow/experiments/get-by-name"
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    try:
        answer = requests.get(
            uri.rstrip("/") + endpoint,
            params={"experiment_name": "Default"},
            headers={"Authorization": f"Bearer {token}"} if token else {},
            auth=(user, password) if user and password else None,
            verify=_verify(),
            timeout=timeout_s,
        )
    except requests.RequestException as err:
        return (
            f"cannot reach the MLflow tracking server ({type(err).__name__}). Start it, or point "
            f"{source} at a reachable server or at sqlite:///ABSOLUTE/PATH/mlflow.db"
        )
    if answer.status_code in (401, 403):
        return (
            f"the server refused access (HTTP {answer.status_code}); set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
        )
    if answer.status_code >= 500:
        return (
            f"the server answered HTTP {answer.status_code} {answer.reason}; if it is starting, "
            "run again when it answers"
        )
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("experiment" in body or "error_code" in body):
        return None
    kind = answer.headers.get("Content-Type", "no content type").split(";")[0]
    return (
        f"not an MLflow tracking server (GET {endpoint} answered HTTP {answer.status_code}, "
        f"{kind}); point {source} at the address `mlflow server` listens on"
    )


def _verify() -> bool | str:
    """TLS verification as MLflow's client does it: off, a CA bundle, or the default."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


def _sqlite_problem(path: Path, writable: bool) -> str | None:
    """A missing or read-only folder, or a file SQLite cannot read as a database."""
    import sqlite3
    import tempfile

    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    if path.is_dir():
        return f"{path} is a folder, not a SQLite database file"
    if path.exists():
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as err:
            if not is_locked(err):
                return (
                    f"{path} is not a readable SQLite database ({err}); move it away to start a "
                    "new store, or restore it from a backup"
                )
    if not writable:
        return None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segexp-write-check-"):
            pass
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as err:
        where = path if path.exists() and not os.access(path, os.W_OK) else folder
        return (
            f"cannot write in {where} ({err.strerror}); point tracking.uri at a store in a "
            "writable folder"
        )
    return None


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


# MLflow 3's experiment type (the UI's "Experiment type"): model training, not GenAI. The 3.17 UI
# still opens on its GenAI overview until "Model training" is pressed once (the browser keeps it).
TRAINING_EXPERIMENT = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(uri: str, name: str) -> str:
    """Return the id of experiment `name`, creating it (with an explicit artifact folder, and
    typed as a model-training experiment)."""
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
            return client.create_experiment(
                name, artifact_location=artifact_location_for(uri), tags=TRAINING_EXPERIMENT
            )
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
