"""`python -m segexp.accuracy [--datasets synthetic digits] [OVERRIDES]`: accuracy over time.

Trains segexp's default recipe and the keras.io way (the same reference model with Keras'
BatchNorm momentum 0.99 and no precise BatchNorm, fed by the example's pipeline: no shuffle,
bilinear mask resize, no prefetch) on the embedded set and on the digit scenes, scores both the
same way after every epoch (segexp's evaluator, each val image at its original size) next to the
trivial baseline, and reports the wall time each takes to reach a stated val mean IoU. Prints
the tables and writes docs/accuracy.md. OVERRIDES (e.g. trainer.epochs=8) apply to both.
"""

import argparse
import sys
from pathlib import Path

from segexp.errors import SegexpError
from segexp.perf.accuracy import DATASETS, compare, report, time_to_accuracy
from segexp.perf.report import write_section


def main(argv: list[str] | None = None) -> int:
    """Parse the datasets and overrides, run the comparisons, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="training overrides for both recipes")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="val mean IoU the time to accuracy is measured to "
        "(default: halfway from the trivial baseline to segexp's best, per dataset)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        help="dataset options to compare on (default: synthetic digits)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs/accuracy.md"),
        help="Markdown report to write (default: docs/accuracy.md)",
    )
    parser.add_argument(
        "--bench-output",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="benchmark report that gets the time-to-accuracy table (default: docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)  # fmt: skip

    from segexp.cli import error_lines, start_backend

    start_backend()
    try:
        comparisons = [
            compare(name, args.overrides, lambda line: print(f"accuracy: {line}", file=sys.stderr),
                    args.target)
            for name in args.datasets
        ]  # fmt: skip
    except SegexpError as err:
        raise SystemExit(error_lines(err)) from None
    command = " ".join(["python -m segexp.accuracy", *(argv if argv is not None else
                                                       sys.argv[1:])])  # fmt: skip
    text = report(comparisons, command)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"accuracy: wrote {args.output}", file=sys.stderr)
    if args.bench_output is not None:
        write_section(args.bench_output, "time-to-accuracy", time_to_accuracy(comparisons, command))
        print(f"accuracy: wrote its time to accuracy into {args.bench_output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
