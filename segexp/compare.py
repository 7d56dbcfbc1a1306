"""`python -m segexp.compare experiment=NAME` (or `parent=RUN_ID`): runs side by side.

Prints the runs sorted by best val/mean_iou with only the params that differ between them, and
writes a figure of their val/mean_iou curves. Reads MLflow through its client, so it works on a
SQLite store and a tracking server alike. `--format text|csv|markdown`.
"""

import argparse
import csv
import io
import sys
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError
from segexp.tracking.summary import METRIC, baseline_cells, best_value, curves_figure, trivial_note

# Params that differ between any two runs but say nothing about the experiment.
_IGNORED = ("paths.", "hydra.", "trainer.checkpoint_dir", "tracking.run_name")


def select_runs(client: MlflowClient, experiment: str | None, parent: str | None) -> list[Run]:
    """The training runs of an experiment (sweep parents left out) or the children of a parent."""
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


def differing_params(runs: list[Run]) -> list[str]:
    """Param names whose value is not the same in every run that logged params (a job that
    failed before training logged none and does not count)."""
    logged = [r for r in runs if r.data.params]
    keys = sorted({k for r in logged for k in r.data.params})
    return [
        k
        for k in keys
        if not k.startswith(_IGNORED) and len({r.data.params.get(k) for r in logged}) > 1
    ]


def table(client: MlflowClient, runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank, run name, status, best val/mean_iou, the trivial baseline and
    whether the run beats it, the differing params, run id."""
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
        lines = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
                         for line in lines) + "\n"  # fmt: skip
    widths = [max(len(line[c]) for line in [header, *rows]) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse `experiment=NAME` / `parent=ID` and options, print the table, write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("selection", help="experiment=NAME or parent=RUN_ID")
    parser.add_argument("--format", choices=("text", "csv", "markdown"), default="text")
    parser.add_argument("--figure", type=Path, default=Path("compare_val_mean_iou.png"))
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    args = parser.parse_args(argv)
    key, _, value = args.selection.partition("=")
    if key not in ("experiment", "parent") or not value:
        parser.error(f"{args.selection!r}: expected experiment=NAME or parent=RUN_ID")

    from segexp.tracking.store import check_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    try:
        check_store(uri, writable=False)  # compare only reads
    except SegexpError as err:  # names the URI
        raise SystemExit(f"error: {err}") from None
    client = MlflowClient(uri)
    runs = select_runs(
        client, value if key == "experiment" else None, value if key == "parent" else None
    )
    if not runs:
        raise SystemExit(f"error: {args.selection}: no runs to compare")
    header, rows = table(client, runs)
    sys.stdout.write(render(header, rows, args.format))
    curves_figure(client, runs).savefig(args.figure, dpi=100)
    sys.stdout.flush()  # the table first, then the notes on stderr
    note = trivial_note(runs)
    if note:
        print(note, file=sys.stderr)
    print(f"curves: {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
