"""segexp: Hydra-configured DeepLabV3+ semantic segmentation experiments tracked in MLflow.

The top level holds the commands (`python -m segexp.<command>`: train, evaluate, predict,
export, check, compare, sync, bench, accuracy, model_table), the shared leaves (errors, atomic,
cli) and three old module names kept for runs trained before the package layout (losses,
schedules, sweep). Imports run one way:
commands -> perf -> training -> evaluation -> inference -> tracking -> data, models, reporting
-> config -> errors, atomic (tests/test_layout.py checks it).
"""

__version__ = "0.1.0"
