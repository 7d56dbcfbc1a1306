"""Everything needed to continue training exactly where it stopped, in one file written atomically:
model variables (weights, BatchNorm statistics, dropout seed state), optimizer variables (moments,
iteration count), the position in the run (epochs done, batches done in the next one), the
per-epoch metrics as logged, best-checkpoint and early-stopping bookkeeping.

Written at every epoch end and at an interrupt's safe point (then with the train metrics'
running sums, so the interrupted epoch's train scores come out as if never stopped).
"""

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from segexp import atomic
from segexp.errors import SegexpError
from segexp.training import faults

STATE_FILE = "train_state.npz"


@dataclass
class Progress:
    """Where a run stands, and what it has logged so far (JSON-serializable)."""

    epochs_done: int = 0
    steps_done: int = 0  # batches of epoch `epochs_done` already trained (an interrupt's point)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per epoch: metrics, timestamp
    history: dict[str, list[float]] = field(default_factory=dict)  # Keras log name -> values
    best_value: float | None = None  # of the best checkpoint's watched metric
    best_epoch: int = 0  # 1-based; 0: none yet
    stop_best: float | None = None  # early stopping's reference value
    stop_wait: int = 0  # epochs since it improved
    stopped_early: bool = False
    pruned: bool = False  # stopped by an Optuna sweep's pruner (stopped_early is set too)


def _variables(model: keras.Model) -> dict[str, list[keras.Variable]]:
    groups = {"model": list(model.variables)}
    if model.optimizer is not None:
        groups["optimizer"] = list(model.optimizer.variables)
    return groups


def save_state(
    folder: Path,
    model: keras.Model,
    progress: Progress,
    metric_sums: list[np.ndarray] | None = None,
) -> Path:
    """Write the state file atomically (temp file + rename); returns its path."""
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, list[list[Any]]] = {}
    for group, variables in _variables(model).items():
        layout[group] = [[v.path, list(v.shape)] for v in variables]
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:06d}"] = np.asarray(v.numpy())  # (a distributed variable too)
    for i, value in enumerate(metric_sums or []):
        arrays[f"metrics/{i:06d}"] = np.asarray(value)
    meta = {"progress": asdict(progress), "layout": layout}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    target = Path(folder) / STATE_FILE
    if progress.steps_done == 0:
        faults.disk_full(progress.epochs_done, str(target))
    with atomic.open_replacing(target) as handle:
        np.savez(handle, **arrays)
        if progress.steps_done == 0:
            faults.while_saving(progress.epochs_done)
    return target


def has_state(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


@dataclass
class LoadedState:
    progress: Progress
    metric_sums: list[np.ndarray]


def load_state(folder: Path, model: keras.Model) -> LoadedState:
    """Restore model and optimizer variables from the state file into a compiled `model`.

    Fails naming the first variable whose name or shape differs (a checkpoint of another
    architecture), and on a file that is not a segexp state file.
    """
    path = Path(folder) / STATE_FILE
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise SegexpError(f"{path}: not a readable segexp training state ({err})") from None
    if "meta" not in arrays:
        raise SegexpError(f"{path}: not a segexp training state (no meta record)")
    meta = json.loads(arrays["meta"].tobytes().decode())
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for group, variables in _variables(model).items():
        saved = meta["layout"].get(group, [])
        _check_layout(path, group, saved, variables)
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{group}/{i:06d}"])
    sums = [arrays[k] for k in sorted(k for k in arrays if k.startswith("metrics/"))]
    return LoadedState(Progress(**meta["progress"]), sums)


def _check_layout(
    path: Path, group: str, saved: list[list[Any]], variables: list[keras.Variable]
) -> None:
    for i, variable in enumerate(variables):
        if i >= len(saved):
            raise SegexpError(
                f"{path} was saved from a different architecture: it has no {group} variable "
                f"for {variable.path} (it holds {len(saved)}, this model {len(variables)})"
            )
        name, shape = saved[i]
        if not _same_name(group, name, variable.path) or tuple(shape) != tuple(variable.shape):
            raise SegexpError(
                f"{path} was saved from a different architecture: {group} variable {i} is "
                f"{name} {tuple(shape)} in the checkpoint but {variable.path} "
                f"{tuple(variable.shape)} in the model built from the config"
            )
    if len(saved) != len(variables):
        raise SegexpError(
            f"{path} was saved from a different architecture: it holds {len(saved)} {group} "
            f"variables, this model {len(variables)} (first extra: {saved[len(variables)][0]})"
        )


def _same_name(group: str, saved: str, current: str) -> bool:
    """Model variables must match by path; optimizer slots by their own name only, as the
    optimizer's scope differs with how it was built (e.g. under a LossScaleOptimizer)."""
    if group == "optimizer":
        return saved.rsplit("/", 1)[-1] == current.rsplit("/", 1)[-1]
    return saved == current
