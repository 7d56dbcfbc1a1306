"""Which tracking URIs MLflow can open, by scheme, without importing MLflow (the validator runs
before it loads); segexp.tracking.store checks reachability and writability."""

from importlib.metadata import entry_points
from urllib.parse import urlparse

# mlflow.tracking._tracking_service.utils._register_tracking_stores (MLflow 3): "" is a path.
BUILT_IN_SCHEMES = (
    "", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
    "databricks-uc", "uc",
)  # fmt: skip
USE = (
    "use sqlite:///ABSOLUTE/PATH/mlflow.db, http(s)://HOST:PORT of an MLflow server, "
    "file:///PATH, postgresql://, mysql://, mssql:// or databricks"
)


def uri_scheme(uri: str) -> str:
    """The store kind MLflow picks for `uri`: postgresql+psycopg2://... -> postgresql."""
    return urlparse(uri).scheme.lower().split("+")[0]


def scheme_problem(uri: str) -> str | None:
    """Why MLflow cannot open a store at `uri` by its scheme alone; None when it can."""
    scheme = uri_scheme(uri)
    if scheme in BUILT_IN_SCHEMES:
        return None
    plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    if scheme in plugins:
        return None
    return f"unknown scheme {scheme!r}; {USE}"
