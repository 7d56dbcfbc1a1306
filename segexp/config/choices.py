"""Every allowed value of a config key that is a choice from a list, in one place: the validator
checks against these and the code that acts on a key imports them from here (TensorFlow-free)."""

# Keras dtype policies, or auto (segexp.training.precision: by device)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")  # segexp.training.distribute
CACHE_MODES = ("none", "memory", "disk")  # segexp.data.cache
GENERATED_DATASETS = ("synthetic", "digits")  # drawn by segexp into paths.data_dir: no root
AUGMENT_RECIPES = ("none", "standard")  # segexp.data.augment
SCHEDULE_KINDS = ("constant", "poly", "cosine")  # segexp.training.schedules
VAL_METRICS = ("loss", "pixel_accuracy", "mean_iou", "mean_accuracy", "mean_dice")  # val/<name>
TRAIN_METRICS = ("loss", "pixel_accuracy", "mean_iou")  # train/<name>
TTA_MODES = ("whole", "slide")  # segexp.inference.predictor: one pass, or a sliding window
EXPORT_FORMATS = ("keras", "saved_model", "onnx", "litert")  # segexp.export
# trainer.checkpoints: the model files an epoch end writes (segexp.training.checkpoints; the
# training state, which resume reads, is written whatever it says)
CHECKPOINT_CHOICES = ("best", "last", "best_and_last")
# The paper's ASPP rates for an output stride: 6/12/18 at 16, doubled at 8 (${aspp_rates:16}).
STANDARD_RATES = {16: [6, 12, 18], 8: [12, 24, 36]}


def one_of(choices: tuple[str, ...]) -> str:
    """'must be a, b or c': the rule a validation message states."""
    if len(choices) == 1:
        return f"must be {choices[0]}"
    return f"must be {', '.join(choices[:-1])} or {choices[-1]}"
