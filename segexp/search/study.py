"""One Optuna study per search, shared by every worker that names the same storage and study
name, and its one MLflow parent run: the worker that creates the study creates the parent and
notes its id in the study; the others read it there."""

from __future__ import annotations

import time

import optuna
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError
from segexp.secrets import redact
from segexp.tracking.store import check_store, ensure_experiment
from segexp.tracking.study import PARENT_ATTR

_WAIT_FOR_PARENT_S = 60  # a worker joining a new study waits this long for its creator's parent


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """The study `name` in `storage` (and True when this call created it)."""
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != direction:
        raise SegexpError(
            f"hydra.sweeper.direction={direction}: study {name!r} in that storage was created "
            f"to {study.direction.name.lower()}; use that direction or another study_name"
        )
    return study, False


def study_parent(
    study: optuna.Study,
    created: bool,
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
) -> str:
    """The MLflow parent run of `study`'s trials in store `uri`: made (and noted in the study) by
    the worker that created the study, read by the others; a finished one is RUNNING again."""
    check_store(uri)
    client = MlflowClient(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    waited = 0.0
    while parent is None and not created and waited < _WAIT_FOR_PARENT_S:
        time.sleep(1.0)
        waited += 1.0
        parent = optuna.load_study(
            study_name=study.study_name, storage=study._storage
        ).user_attrs.get(PARENT_ATTR)
    if parent is None:
        experiment_id = ensure_experiment(uri, experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        study.set_user_attr(PARENT_ATTR, run.info.run_id)
        return run.info.run_id
    try:
        run = client.get_run(parent)
    except Exception:  # noqa: BLE001  (another store, or deleted)
        raise SegexpError(
            f"study {study.study_name!r} notes MLflow parent run {parent}, which tracking.uri="
            f"{redact(uri)} does not hold: point tracking.uri at the store the study's first "
            "worker used, or use another hydra.sweeper.study_name"
        ) from None
    if run.info.status != "RUNNING":
        attempts = int(run.data.tags.get("segexp.sweep_attempts", "1")) + 1
        client.update_run(parent, status="RUNNING")
        client.set_tag(parent, "segexp.sweep_attempts", str(attempts))
    return parent
