"""Find a dataset's files on disk: required folders, and image/mask pairs matched by file stem."""

import os
from collections.abc import Sequence
from pathlib import Path

from segexp.data.dataset import Split
from segexp.errors import SegexpError


class LayoutError(SegexpError):
    """A dataset folder or list file is missing; the message names it and the layout expected."""


def require_dir(path: Path, layout: str) -> Path:
    """Return `path` if it is a folder, else raise naming it and the expected layout."""
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise LayoutError(f"{path} {what}; expected layout: {layout}")
    return path


def require_file(path: Path, layout: str) -> Path:
    """Return `path` if it is a file, else raise naming it and the expected layout."""
    if not path.is_file():
        raise LayoutError(f"{path} does not exist; expected layout: {layout}")
    return path


def utf8_name(path: Path) -> bool:
    """Whether the file's name is valid UTF-8: Linux allows any bytes, TensorFlow does not."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: Path) -> Path:
    """`path` with the bytes of a name that is not UTF-8 written as \\xNN, safe to print."""
    return Path(os.fsencode(str(path)).decode("utf-8", "backslashreplace"))


def bad_name_detail(path: Path) -> str:
    """Why a file with a name that is not UTF-8 is refused, naming it by its bytes."""
    return f"file name {os.fsencode(path.name)!r} is not valid UTF-8: rename it"


def files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Files directly in `folder` with one of `suffixes` (any case), keyed by stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in found:
                raise LayoutError(
                    f"{folder} holds two files with the stem {path.stem!r}: "
                    f"{found[path.stem].name} and {path.name}; keep one"
                )
            found[path.stem] = path
    return found


def pair_by_stem(
    image_dir: Path,
    mask_dir: Path,
    image_suffixes: Sequence[str],
    mask_suffixes: Sequence[str],
    limit: int | None = None,
) -> Split:
    """Pair images with masks of the same stem, sorted by stem; keep the first `limit` pairs.

    Files without a partner are kept in the split's `unmatched_*` lists for checks to report,
    files whose name is not UTF-8 (and their partners: the same stem) in its `bad_names`.
    """
    images = files_by_stem(image_dir, image_suffixes)
    masks = files_by_stem(mask_dir, mask_suffixes)
    bad = [p for p in (*images.values(), *masks.values()) if not utf8_name(p)]
    for path in bad:
        images.pop(path.stem, None)
        masks.pop(path.stem, None)
    stems = sorted(images.keys() & masks.keys())[:limit]
    return Split(
        images=tuple(images[s] for s in stems),
        masks=tuple(masks[s] for s in stems),
        unmatched_images=tuple(images[s] for s in sorted(images.keys() - masks.keys())),
        unmatched_masks=tuple(masks[s] for s in sorted(masks.keys() - images.keys())),
        bad_names=tuple(bad),
    )


def pairs_from_list(
    stems: Sequence[str],
    image_dir: Path,
    image_suffix: str,
    mask_dir: Path,
    mask_suffix: str,
    limit: int | None = None,
) -> Split:
    """Pairs named by a split list (one stem per line, as Pascal VOC's ImageSets); keeps order.

    Listed files that do not exist go to the split's `missing` list, and their stem is dropped.
    """
    images, masks, missing = [], [], []
    for stem in stems[:limit]:
        image, mask = image_dir / f"{stem}{image_suffix}", mask_dir / f"{stem}{mask_suffix}"
        absent = [p for p in (image, mask) if not p.is_file()]
        missing.extend(absent)
        if not absent:
            images.append(image)
            masks.append(mask)
    return Split(images=tuple(images), masks=tuple(masks), missing=tuple(missing))
