"""Crash-safe file writes: write a temporary file beside the target, then rename it over.

A process killed at any moment leaves either the old file or the new one, never half of one.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write the new content to; it replaces `target` on success.

    The temporary name keeps the target's suffix (Keras insists on `.keras`). If the block
    raises, the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
        _fsync_dir(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def open_replacing(target: Path) -> Iterator[BinaryIO]:
    """An open binary file whose content replaces `target` when the block ends without error."""
    with replacing(target) as temporary, open(temporary, "wb") as handle:
        yield handle


def write_text(target: Path, text: str) -> None:
    """Replace `target` with `text` (UTF-8) atomically."""
    with open_replacing(target) as handle:
        handle.write(text.encode())
