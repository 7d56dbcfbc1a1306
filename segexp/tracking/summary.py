"""What a sweep's parent run records when the sweep ends: a table of its children (overrides,
status, best val/mean_iou), their val/mean_iou curves, the best child, and multirun.yaml."""

import csv
import io
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

METRIC = "val/mean_iou"
BASELINE_METRIC = "val/baseline_mean_iou"  # the train split's majority class everywhere
TRIVIAL_MARGIN = 0.01  # a best METRIC within this of the baseline: a trivial model
TRIVIAL_TAG = "segexp.trivial_model"  # "true" on such a run
COLUMNS = ["child", "overrides", "status", f"best {METRIC}", "baseline", "trivial", "run_id"]


def children(client: MlflowClient, parent: str) -> list[Run]:
    """The runs nested under `parent`, oldest first."""
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        order_by=["attributes.start_time ASC"],
    )


def best_value(client: MlflowClient, run: Run) -> float | None:
    """The highest val/mean_iou a run logged, or None."""
    history = client.get_metric_history(run.info.run_id, METRIC)
    return max((m.value for m in history), default=None)


def baseline_cells(run: Run) -> list[str]:
    """The run's val/baseline_mean_iou and "yes" when its best score does not beat it (tagged
    by the run itself, see TRIVIAL_TAG): such runs rank on noise."""
    baseline = run.data.metrics.get(BASELINE_METRIC)
    return [
        "n/a" if baseline is None else f"{baseline:.4f}",
        "yes" if run.data.tags.get(TRIVIAL_TAG) == "true" else "",
    ]


def trivial_note(runs: list[Run]) -> str | None:
    """One line when some runs do not beat the trivial baseline; None otherwise."""
    trivial = sum(r.data.tags.get(TRIVIAL_TAG) == "true" for r in runs)
    if not trivial:
        return None
    return (
        f"note: {trivial} of {len(runs)} runs do not beat {BASELINE_METRIC} (the majority class "
        f"everywhere) by more than {TRIVIAL_MARGIN} (trivial: yes): their order is noise"
    )


def table_rows(client: MlflowClient, runs: list[Run]) -> list[list[str]]:
    """One row per child, best first; children without a score last."""
    scored = [(best_value(client, r), r) for r in runs]
    scored.sort(key=lambda pair: (pair[0] is None, -(pair[0] or 0.0)))
    return [
        [str(i), r.info.run_name or "", r.info.status,
         "n/a" if value is None else f"{value:.4f}", *baseline_cells(r), r.info.run_id]
        for i, (value, r) in enumerate(scored, start=1)
    ]  # fmt: skip


def as_csv(rows: list[list[str]]) -> str:
    """The table as CSV."""
    out = io.StringIO()
    csv.writer(out).writerows([COLUMNS, *rows])
    return out.getvalue()


def as_markdown(rows: list[list[str]], note: str | None = None) -> str:
    """The table as Markdown (and the trivial-runs note under it)."""
    lines = [COLUMNS, ["---"] * len(COLUMNS), *rows]
    table = "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                      for row in lines) + "\n"  # fmt: skip
    return table + (f"\n{note}\n" if note else "")


def curves_figure(client: MlflowClient, runs: list[Run]) -> object:
    """val/mean_iou by epoch, one line per child."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    for run in runs:
        history = client.get_metric_history(run.info.run_id, METRIC)
        if history:
            steps, values = zip(*sorted((m.step, m.value) for m in history), strict=True)
            ax.plot(steps, values, marker="o", label=(run.info.run_name or run.info.run_id)[:60])
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRIC)
    ax.set_title("sweep: val mean IoU per child")
    if ax.lines:
        ax.legend(fontsize="x-small")
    return figure


def log_search_results(client: MlflowClient, parent: str, sweep_dir: Path) -> dict | None:
    """An Optuna sweep's optimization_results.yaml: attached, its best parameters logged as
    params `best.<name>` and its best value as the metric `best/value`."""
    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.is_file():
        return None
    import yaml

    results = yaml.safe_load(results_file.read_text()) or {}
    client.log_artifact(parent, str(results_file))
    for name, value in (results.get("best_params") or {}).items():
        client.log_param(parent, f"best.{name}", value)
    if results.get("best_value") is not None:
        client.log_metric(parent, "best/value", float(results["best_value"]))
    return results


def summarize(uri: str, parent: str, sweep_dir: Path, status: str) -> str:
    """Write and log the summary, tag the best child, and end the parent run; return its status.

    The parent ends FAILED when `status` says so or any child failed.
    """
    client = MlflowClient(uri)
    runs = children(client, parent)
    rows = table_rows(client, runs)
    (sweep_dir / "sweep_summary.csv").write_text(as_csv(rows))
    note = trivial_note(runs)
    (sweep_dir / "sweep_summary.md").write_text(as_markdown(rows, note))
    client.log_artifact(parent, str(sweep_dir / "sweep_summary.csv"))
    client.log_artifact(parent, str(sweep_dir / "sweep_summary.md"))
    if (sweep_dir / "multirun.yaml").is_file():
        client.log_artifact(parent, str(sweep_dir / "multirun.yaml"))
    client.log_figure(parent, curves_figure(client, runs), "sweep_val_mean_iou.png")
    failed = sum(r.info.status == "FAILED" for r in runs)
    client.log_metric(parent, "sweep/children", len(runs))
    client.log_metric(parent, "sweep/failed", failed)
    best = next((row for row in rows if row[3] != "n/a"), None)
    if best is not None:
        client.log_metric(parent, f"best/{METRIC}", float(best[3]))
        client.set_tag(parent, "segexp.best_child_run_id", best[-1])
        client.set_tag(parent, "segexp.best_child", best[1])
    log_search_results(client, parent, sweep_dir)
    final = "FAILED" if status == "FAILED" or failed else "FINISHED"
    client.set_terminated(parent, final)
    print(
        f"sweep: {len(runs)} runs ({failed} failed) under parent {parent}; "
        f"summary in {sweep_dir / 'sweep_summary.md'}"
    )
    if note:
        print(note)
    return final
