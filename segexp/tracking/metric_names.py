"""The metric and tag names that rank runs and mark trivial ones: shared by the sweep summary,
segexp.compare and the grouping of runs over seeds (a leaf of the tracking package)."""

METRIC = "val/mean_iou"
BASELINE_METRIC = "val/baseline_mean_iou"  # the train split's majority class everywhere
TRIVIAL_MARGIN = 0.01  # a best METRIC within this of the baseline: a trivial model
TRIVIAL_TAG = "segexp.trivial_model"  # "true" on such a run
PRUNED_TAG = "segexp.pruned"  # "true" on a sweep trial its pruner stopped early
