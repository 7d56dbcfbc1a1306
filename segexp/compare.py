"""`python -m segexp.compare [experiment=NAME | parent=RUN_ID]`: runs side by side.

Prints the runs sorted by best val/mean_iou with only the params that differ between them, and
writes a figure of their val/mean_iou curves. With `--over trainer.seed` the runs that differ
only in the seed are one group: mean, std and n per group, and whether each group differs from
the next by more than the noise. Warns when the runs were not trained on the same data. With no
selection it compares the experiment `python -m segexp.train` logs to (conf/tracking/mlflow.yaml's
`experiment`). Reads MLflow through its client, so it works on a SQLite store and a tracking
server alike. `--format text|csv|markdown`.
MLflow is imported after the arguments are parsed, so `--help` and argument errors are fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from segexp.errors import SegexpError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def select_runs(client: MlflowClient, experiment: str | None, parent: str | None) -> list[Run]:
    """The training runs of an experiment (sweep parents left out) or the children of a parent."""
    from mlflow.exceptions import MlflowException

    if parent:
        try:
            experiment_id = client.get_run(parent).info.experiment_id
        except MlflowException:
            raise SystemExit(f"error: parent={parent}: no such run") from None
        return client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
        )
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise SystemExit(f"error: experiment={experiment} does not exist; experiments: {names}")
    runs = client.search_runs([found.experiment_id])
    return [r for r in runs if r.data.tags.get("segexp.task") not in ("sweep", "evaluate")]


def table(client: MlflowClient, runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank, run name, status, best val/mean_iou, the trivial baseline and
    whether the run beats it, the differing params, run id."""
    from segexp.tracking.groups import differing_params
    from segexp.tracking.summary import METRIC, baseline_cells, best_value

    params = differing_params(runs)
    scored = sorted(
        ((best_value(client, r), r) for r in runs),
        key=lambda pair: (pair[0] is None, -(pair[0] or 0.0)),
    )
    header = ["rank", "run", "status", f"best {METRIC}", "baseline", "trivial", *params, "run_id"]
    rows = [
        [str(i), r.info.run_name or "", r.info.status,
         "n/a" if v is None else f"{v:.4f}", *baseline_cells(r),
         *(r.data.params.get(p, "") for p in params), r.info.run_id]
        for i, (v, r) in enumerate(scored, start=1)
    ]  # fmt: skip
    return header, rows


def render(header: list[str], rows: list[list[str]], fmt: str) -> str:
    """The table as aligned text, CSV or Markdown."""
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerows([header, *rows])
        return out.getvalue()
    if fmt == "markdown":
        from segexp.tracking.summary import markdown_table

        return markdown_table(header, rows)
    widths = [max(len(line[c]) for line in [header, *rows]) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ) + "\n"  # fmt: skip


def default_experiment() -> str:
    """The experiment `python -m segexp.train` logs to: conf/tracking/mlflow.yaml's `experiment`."""
    from omegaconf import OmegaConf

    from segexp.config import CONFIG_DIR

    return str(OmegaConf.load(CONFIG_DIR / "tracking" / "mlflow.yaml").experiment)


def _examples(experiment: str) -> str:
    """The help page's examples."""
    return (
        "examples:\n"
        "  python -m segexp.compare                            # the runs of experiment "
        f"{experiment}\n"
        "  python -m segexp.compare experiment=optimizers --format markdown\n"
        "  python -m segexp.compare parent=PARENT_RUN_ID --figure sweep.png  # a sweep's jobs\n"
        "  python -m segexp.compare experiment=seeds --over trainer.seed  # mean, std, n"
    )


def parser() -> argparse.ArgumentParser:
    """The command line: an optional selection and the options, each with its help line."""
    experiment = default_experiment()
    parser = argparse.ArgumentParser(
        prog="python -m segexp.compare",
        description=(
            "Runs side by side: a table of the runs, best val/mean_iou first, with the params\n"
            "that differ between them, and a figure of their val/mean_iou curves."
        ),
        epilog=_examples(experiment),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "selection",
        nargs="?",
        default=f"experiment={experiment}",
        help="experiment=NAME (its training runs) or parent=RUN_ID (the jobs of a sweep); "
        f"default: experiment={experiment}, the experiment python -m segexp.train logs to",
    )
    parser.add_argument(
        "--format",
        choices=("text", "csv", "markdown"),
        default="text",
        help="how the table is printed on stdout: aligned text (default), CSV or Markdown",
    )
    parser.add_argument(
        "--over",
        action="append",
        default=[],
        metavar="KEY[,KEY]",
        help="group the runs that differ only in these params (e.g. trainer.seed): mean, "
        "sample std and n per group, and Welch's t-test between each group and the next",
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME[:min|max]",
        help="with --over: also aggregate this metric's best value per run (lowest for "
        "names ending in loss), e.g. val/iou/face or val/loss",
    )
    parser.add_argument(
        "--figure",
        type=Path,
        default=Path("compare_val_mean_iou.png"),
        metavar="PNG",
        help="PNG file the val/mean_iou curves are written to (default: %(default)s)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store to read (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the selection and options, print the table, write the figure."""
    cli = parser()
    args = cli.parse_args(argv)
    key, _, value = args.selection.partition("=")
    if key not in ("experiment", "parent") or not value:
        cli.error(f"{args.selection!r}: expected experiment=NAME or parent=RUN_ID")

    from segexp.tracking.store import check_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():  # MLflow would create an empty store here
        raise SystemExit(
            f"error: {args.selection}: no runs to compare, the store {uri} does not exist "
            "(python -m segexp.train creates it; --tracking-uri picks another store)"
        )
    try:
        check_store(uri, writable=False)  # compare only reads
    except SegexpError as err:  # names the URI
        raise SystemExit(f"error: {err}") from None

    from mlflow.tracking import MlflowClient

    from segexp.tracking.comparable import comparability_warning
    from segexp.tracking.summary import curves_figure, trivial_note

    client = MlflowClient(uri)
    runs = select_runs(
        client, value if key == "experiment" else None, value if key == "parent" else None
    )
    if not runs:
        raise SystemExit(f"error: {args.selection}: no runs to compare")
    over = [k.strip() for text in args.over for k in text.split(",") if k.strip()]
    if args.metric and not over:
        cli.error("--metric aggregates over replicates: give --over KEY too")
    warning = comparability_warning(runs)
    if warning:
        print(warning, file=sys.stderr)
    if over:
        try:
            note = _grouped(client, runs, over, args, f"{key} {value}")
        except SegexpError as err:
            raise SystemExit(f"error: {err}") from None
    else:
        header, rows = table(client, runs)
        sys.stdout.write(render(header, rows, args.format))
        title = f"experiment {value}: val/mean_iou per run" if key == "experiment" else None
        curves_figure(client, runs, title).savefig(args.figure, dpi=100)
        note = trivial_note(runs)
    sys.stdout.flush()  # the table first, then the notes on stderr
    if note:
        print(note, file=sys.stderr)
    print(f"curves: {args.figure}", file=sys.stderr)
    return 0


def _grouped(
    client: MlflowClient, runs: list[Run], over: list[str], args: argparse.Namespace, what: str
) -> str:
    """Print the table of groups over `over`, write their mean-and-band figure; the note."""
    from segexp.tracking.groups import group_report
    from segexp.tracking.summary import METRIC

    title = f"{what}: {METRIC} per group over {', '.join(over)}"
    report = group_report(client, runs, over, title, args.metric)
    sys.stdout.write(render(report.header, report.rows, args.format))
    report.figure.savefig(args.figure, dpi=100)
    return report.note


if __name__ == "__main__":
    sys.exit(main())
