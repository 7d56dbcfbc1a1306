"""dataset.cache: keep decoded, checked samples (uint8 image, label mask) so later epochs and
evaluations skip reading and decoding the files: in memory, or as .npz files on disk. A sample
is kept at its own size, or resized to the training size where nothing else changes it per
epoch (no augmentation), which also spares the resize."""

import hashlib
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from segexp.config.choices import CACHE_MODES

Sample = tuple[np.ndarray, np.ndarray]  # (H, W, 3) uint8 image, (H, W) int32 mask


class SampleCache:
    """Samples in memory (`folder` None) or under `folder` (one .npz per sample, named by the
    files' paths, sizes and modification times, so an edited file is read again)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[tuple[str, str, int | None], Sample] = {}
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict:
        # a worker process gets the folder and an empty memory of its own (and its own lock)
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def _entry(self, image_path: Path, mask_path: Path, size: int | None) -> Path:
        assert self.folder is not None
        parts = [f"size={size}"]
        for path in (image_path, mask_path):
            stat = path.stat()
            parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
        digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npz"

    def get(self, image_path: Path, mask_path: Path, size: int | None = None) -> Sample | None:
        """The cached sample (at its own size, or resized to `size` x `size`), or None (not
        cached yet, a source file changed or is gone, or a cache file is damaged: it is then
        read again from the source)."""
        if self.folder is None:
            return self._memory.get((str(image_path), str(mask_path), size))
        try:
            entry = self._entry(image_path, mask_path, size)
            with np.load(entry) as stored:
                return stored["image"], stored["mask"].astype(np.int32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def put(
        self, image_path: Path, mask_path: Path, sample: Sample, size: int | None = None
    ) -> None:
        image, mask = sample
        if self.folder is None:
            with self._lock:
                self._memory[(str(image_path), str(mask_path), size)] = sample
            return
        entry = self._entry(image_path, mask_path, size)
        entry.parent.mkdir(parents=True, exist_ok=True)
        small = mask.min(initial=0) >= 0 and mask.max(initial=0) <= 255
        # a private temporary name, then a rename: readers (other jobs sharing the folder
        # too) never see half a file; no fsync, a lost entry is only read again
        with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".partial", delete=False) as out:
            try:
                np.savez(out, image=image, mask=mask.astype(np.uint8 if small else np.int32))
            except BaseException:
                Path(out.name).unlink(missing_ok=True)
                raise
        os.replace(out.name, entry)

    def __len__(self) -> int:
        if self.folder is None:
            return len(self._memory)
        return sum(1 for _ in self.folder.glob("*/*.npz"))


def make_cache(mode: str, folder: Path) -> SampleCache | None:
    """The cache dataset.cache asks for: None (none), in memory, or on disk under `folder`."""
    if mode not in CACHE_MODES:
        raise ValueError(f"dataset.cache={mode!r}: must be {', '.join(CACHE_MODES)}")
    if mode == "none":
        return None
    return SampleCache(folder if mode == "disk" else None)
