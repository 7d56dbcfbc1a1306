"""Whether an error from the MLflow store means "try later" or "never": the outbox retries the
first kind and sets the second aside, and neither is ever dropped.

Transient: every connection, timeout, lock, I/O and server-side (5xx) error, a store file that
is missing, replaced or unreadable, a run the store does not know (a store restored from an
older copy), and anything unrecognized. Permanent: MLflow's own refusal of the record itself
(an invalid value or key, a param that would change value), which no retry can change.
"""

import re

# MLflow error codes that judge the record, not the store (HTTP 400 / 409 from a tracking server
# or the same refusal from a local store).
PERMANENT_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"})
# A store file overwritten with something that is not a database: SQLAlchemy's DatabaseError,
# which MLflow reports as BAD_REQUEST, though restoring the file cures it.
_STORE_DAMAGE = ("file is not a database", "database disk image is malformed", "no such table")


def is_permanent(err: BaseException) -> bool:
    """Whether MLflow refused the record for good (re-sending it as it is cannot succeed)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, Unsendable):
        return True
    if not isinstance(err, MlflowException):
        return False
    text = str(err)
    if any(sign in text for sign in _STORE_DAMAGE):
        return False
    return err.error_code in PERMANENT_CODES


# Phrases that say what went wrong better than the long messages that carry them.
_KNOWN_CAUSES = (
    "Connection refused", "timed out", "Name or service not known", "database is locked",
    *_STORE_DAMAGE, "unable to open database file", "readonly database", "Permission denied",
    "No space left on device", "Read-only file system",
)  # fmt: skip


def describe(err: BaseException, limit: int = 300) -> str:
    """The error's type and cause in one short line (a connection error's message is a page)."""
    text = str(err)
    cause = next((c for c in _KNOWN_CAUSES if c in text), None)
    if cause is None and (
        status := re.search(r"error code (\d{3}) != 200|many (\d{3}) error", text)
    ):
        cause = f"HTTP status {status.group(1) or status.group(2)}"
    if cause is None and (db := re.search(r"^\((?:sqlite3|sqlalchemy)[.\w]*\) (.+)$", text, re.M)):
        cause = db.group(1)  # SQLAlchemy's first line is often advice about its session
    if cause is None:
        cause = (text.strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {cause}"[:limit]


class Unsendable(Exception):
    """A record that cannot be sent as it is (e.g. the file it uploads is gone)."""
