"""The end of a study, by whichever worker ends its last trial: optimization_results.yaml, the
sweep summary on the MLflow parent (which ends FINISHED), and keep_best's clean-up."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import yaml

from segexp.search.worker import OUTPUT_ATTR

RESULTS_FILE = "optimization_results.yaml"
_ACTIVE = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def finish_if_done(
    study: optuna.Study, s: Any, uri: str, parent: str, sweep_dir: Path, keys: list[str]
) -> None:
    """When no trial is left running or waiting: results file, summary, parent FINISHED (by
    whichever worker ends last), and keep_best's clean-up."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state in _ACTIVE for t in trials):
        running = sum(t.state in _ACTIVE for t in trials)
        print(f"sweep: {running} trial(s) still run in other workers; the last one to end "
              "closes the MLflow parent run", flush=True)  # fmt: skip
        return
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    results: dict[str, Any] = {"name": "optuna", "study": s.study_name}
    if done:
        best = study.best_trial
        results.update(best_params=dict(best.params), best_value=float(best.value),
                       best_trial=best.number)  # fmt: skip
    results["trials"] = {state.name.lower(): sum(t.state == state for t in trials)
                         for state in optuna.trial.TrialState}  # fmt: skip
    (sweep_dir / RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))
    from segexp.tracking.summary import summarize

    summarize(uri, parent, sweep_dir, "FINISHED", keys)
    if s.keep_best is not None:
        drop_checkpoints(trials, s.direction, s.keep_best)


def drop_checkpoints(trials: list, direction: str, keep_best: int) -> None:
    """Delete the checkpoints (not the logged models) of all trials but the best keep_best
    complete ones (pruned and failed trials keep none)."""
    scored = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    scored.sort(key=lambda t: t.value, reverse=direction == "maximize")
    kept = {t.number for t in scored[:keep_best]}
    freed = 0
    for trial in (t for t in trials if t.number not in kept):
        folder = trial.user_attrs.get(OUTPUT_ATTR)
        checkpoints = Path(folder) / "checkpoints" if folder else None
        if checkpoints is not None and checkpoints.is_dir():
            freed += sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file())
            shutil.rmtree(checkpoints)
    print(f"sweep: keep_best={keep_best}: removed the checkpoints of the other trials "
          f"({freed / 1e6:.0f} MB; their logged models stay in MLflow)", flush=True)  # fmt: skip
