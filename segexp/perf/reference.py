"""`python -m segexp.perf.reference CONFIG.yaml`: the keras.io example's way of training, timed
in a process of its own under TensorFlow's default CPU settings (segexp.bench starts it with
TF_ENABLE_ONEDNN_OPTS unset, and nothing here sets it). Prints one JSON line of images/s."""

import json
import os
import sys

from omegaconf import OmegaConf

from segexp.perf.timing import fit_rate, reference_batches


def main(config_path: str) -> None:
    import keras

    from segexp.data.load import class_histograms, load_dataset
    from segexp.data.samples import FileProblems
    from segexp.training.build import build_compiled_model
    from segexp.training.distribute import make_strategy

    cfg = OmegaConf.load(config_path)
    b, batch = cfg.bench, cfg.trainer.batch_size
    dataset = load_dataset(cfg)
    histograms = class_histograms(dataset, False, FileProblems())
    train = dataset.split("train")
    keras.utils.set_random_seed(cfg.trainer.seed)
    model = build_compiled_model(
        cfg, dataset, histograms, max(1, len(train) // batch), make_strategy("auto")
    )
    rates = fit_rate(
        model,
        lambda: reference_batches(train, cfg.image_size, batch),
        b.warmup,
        b.steps,
        b.repeats,
        batch,
    )
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")  # None: TensorFlow's own choice
    print("RESULT " + json.dumps({"rates": rates, "onednn": onednn}))


if __name__ == "__main__":
    main(sys.argv[1])
