"""Credentials in store URLs never leave the process: `redact` replaces the password or token of
every URL in a text with ***, keeping the user, host and database, so a run still says where it
logged. Params, tags, logged configs, the run and sweep folders' files, the console, the job
log and error lines all pass through it.

A URL given on the command line or in the environment is remembered with its password
(`remember`), so that a redacted one read back from a run folder (resume, sync) can be given
its credentials again (`restore`); they are never read from anything segexp wrote."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, TextIO

MASK = "***"
# scheme://user:SECRET@host  (the user may be empty: scheme://:SECRET@host)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^\s:/@'\"]*:)(?P<secret>[^\s@/'\"]+)(?=@)")
# ?password=SECRET, &token=SECRET, ... in a query string or a libpq key=value list
_QUERY = re.compile(
    r"(?P<head>(?:[?&;\s]|^)(?:password|passwd|pwd|token|access_token|api_key|apikey|secret)=)"
    r"(?P<secret>[^&\s'\"]+)",
    re.IGNORECASE,
)
_known: dict[str, str] = {}  # redacted URL -> the URL with its credentials, as given


def redact(text: str) -> str:
    """`text` with every URL password and token replaced by ***."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m["head"] + MASK, text)
    return _QUERY.sub(lambda m: m["head"] + MASK, text)


def redact_tree(value: Any) -> Any:
    """A config-like tree (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_tree(v) for v in value)
    return value


def remember(url: str | None) -> None:
    """Note a URL given to this process (command line, environment) with its credentials."""
    if url and redact(url) != url:
        _known[redact(url)] = url


def restore(url: str) -> str:
    """`url` with the credentials a redacted copy lost: from a URL given to this process, or
    $MLFLOW_TRACKING_URI; unchanged when it lost none or none is known."""
    if MASK not in url:
        return url
    remember(os.environ.get("MLFLOW_TRACKING_URI"))
    return _known.get(url, url)


def scrub_file(path: Path) -> None:
    """Rewrite a text file segexp or Hydra wrote with its secrets redacted (in place)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    clean = redact(text)
    if clean != text:
        path.write_text(clean)


def scrub_folder(folder: Path, pattern: str = "*.yaml") -> None:
    """scrub_file for the files in `folder` matching `pattern` (not recursive)."""
    if folder.is_dir():
        for path in folder.glob(pattern):
            if path.is_file():
                scrub_file(path)


class RedactingStream:
    """A console stream whose every write is redacted (lines are written whole, so a URL split
    across writes is still caught); everything else (isatty, fileno, encoding) is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            complete, self.pending = self.pending.rsplit("\n", 1)
            self.stream.write(redact(complete) + "\n")
        elif "\r" in self.pending or len(self.pending) > 4096:  # a progress bar's redraw
            self.stream.write(redact(self.pending))
            self.pending = ""
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(redact(self.pending))
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name: str) -> object:  # isatty, fileno, encoding, buffer, ...
        return getattr(self.stream, name)


def redact_console() -> None:
    """From now on, stdout, stderr and every logging record of this process are redacted."""
    import sys

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacting", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a bad format string: left to logging)
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    redacting_factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
