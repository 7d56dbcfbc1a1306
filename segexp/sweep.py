"""Old name of segexp.tracking.sweep, kept because the .hydra/hydra.yaml of runs and sweeps
made before the package layout names the callback `segexp.sweep.MlflowSweep`. New code
imports segexp.tracking.sweep."""

from segexp.tracking.sweep import PARENT_FILE, MlflowSweep, parent_run_id

__all__ = ["PARENT_FILE", "MlflowSweep", "parent_run_id"]
