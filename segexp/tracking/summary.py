"""What a sweep's parent run records when the sweep ends: a table of its children (overrides,
status, best val/mean_iou), their val/mean_iou curves, the best child, and multirun.yaml; when
the sweep varies a seed, also the table of configurations over their seeds (mean +- std, n)."""

import csv
import io
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from segexp.tracking.metric_names import (
    BASELINE_METRIC,
    METRIC,
    PRUNED_TAG,
    TRIVIAL_MARGIN,
    TRIVIAL_TAG,
)

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
        [str(i), r.info.run_name or "", _status(r),
         "n/a" if value is None else f"{value:.4f}", *baseline_cells(r), r.info.run_id]
        for i, (value, r) in enumerate(scored, start=1)
    ]  # fmt: skip


def _status(run: Run) -> str:
    """The run's status, "(pruned)" added when a sweep's pruner stopped it early."""
    pruned = run.data.tags.get(PRUNED_TAG) == "true"
    return run.info.status + (" (pruned)" if pruned else "")


def as_csv(rows: list[list[str]]) -> str:
    """The table as CSV."""
    out = io.StringIO()
    csv.writer(out).writerows([COLUMNS, *rows])
    return out.getvalue()


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, "|" in cells escaped, ending in a newline."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                     for row in lines) + "\n"  # fmt: skip


def as_markdown(rows: list[list[str]], note: str | None = None) -> str:
    """The table as Markdown (and the trivial-runs note under it)."""
    return markdown_table(COLUMNS, rows) + (f"\n{note}\n" if note else "")


_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")  # 9: prime to the 10 colours
_LABEL_WIDTH = 40  # legend labels wrap at this many characters
_LEGEND_INSIDE = 6  # more curves than this: the legend goes right of the axes


def _run_labels(runs: list[Run]) -> tuple[list[str], str]:
    """Legend labels that keep only the overrides that differ between the runs' names (a run
    name is its overrides, space-separated), wrapped; and the overrides all runs share.

    Labels that would still be equal get the run id's first 8 characters."""
    import textwrap

    names = [(run.info.run_name or "").split() for run in runs]
    common = [t for t in dict.fromkeys(names[0] if names else []) if all(t in n for n in names)]
    if len(runs) < 2:
        common = []
    labels = [" ".join(t for t in n if t not in common) or "(shared settings only)" for n in names]
    counts = {label: labels.count(label) for label in labels}
    labels = [
        f"{label} [{run.info.run_id[:8]}]" if counts[label] > 1 else label
        for label, run in zip(labels, runs, strict=True)
    ]
    return [textwrap.fill(label, _LABEL_WIDTH) for label in labels], " ".join(common)


def _common_baseline(runs: list[Run]) -> float | None:
    """The runs' val/baseline_mean_iou when they all logged the same one (same val split)."""
    values = {round(r.data.metrics[BASELINE_METRIC], 6) for r in runs
              if BASELINE_METRIC in r.data.metrics}  # fmt: skip
    return values.pop() if len(values) == 1 else None


def curves_figure(
    client: MlflowClient,
    runs: list[Run],
    title: str | None = None,
    *,
    metric: str = METRIC,
) -> object:
    """`metric` (val/mean_iou) by epoch, one line per run, each in its own colour, line style and
    (hollow) marker so equal curves stay apart; legend labels keep what differs between the run
    names (what all share is written under the title), beside the axes when there are many
    runs; the shared trivial baseline as a dotted line; whole epochs on the axis.

    `title` defaults to the sweep's; a comparison of a whole experiment passes its own."""
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels, common = _run_labels(runs)
    curves = {}  # run index -> (steps, values)
    for i, run in enumerate(runs):
        history = client.get_metric_history(run.info.run_id, metric)
        if history:
            curves[i] = tuple(zip(*sorted((m.step, m.value) for m in history), strict=True))
    outside = len(curves) > _LEGEND_INSIDE
    figure = Figure(figsize=(11 if outside else 8, 4.8), layout="constrained")
    ax = figure.subplots()
    first_of: dict[tuple, int] = {}  # a curve's values -> the first run that drew them
    for i, (steps, values) in curves.items():
        label = labels[i]
        same = first_of.setdefault((steps, values), i)
        if same != i:  # drawn over an earlier line: say so (the marker sizes differ too)
            label += "\n(same values as " + textwrap.shorten(labels[same], 30) + ")"
        ax.plot(steps, values, label=label, color=f"C{i % 10}",
                ls=_LINE_STYLES[(i // 10 + i) % len(_LINE_STYLES)],
                marker=_MARKERS[i % len(_MARKERS)], ms=9 - 2 * (i % 3), mfc="none", mew=1.3,
                lw=1.6, alpha=0.9)  # fmt: skip
    epochs = max((max(steps) for steps, _ in curves.values()), default=0)
    baseline = _common_baseline(runs) if metric == METRIC else None
    if baseline is not None and ax.lines:
        ax.axhline(baseline, color="0.3", ls=":", lw=1.2, label=f"trivial baseline {baseline:.3f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(0.5, epochs + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    figure.suptitle(title or f"sweep: {metric} per child")
    if common:
        ax.set_title(textwrap.fill(f"all runs: {common}", 110), fontsize="small", loc="left")
    if ax.lines:
        if outside:
            figure.legend(fontsize="small", loc="outside right upper",
                          ncol=1 if len(ax.lines) <= 16 else 2)  # fmt: skip
        else:
            ax.legend(fontsize="small")
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
        client.set_tag(parent, f"best.{name}", str(value))  # the latest best, also when resumed
        try:
            client.log_param(parent, f"best.{name}", value)
        except Exception:  # noqa: BLE001  (a resumed sweep found another best: params are fixed)
            print(f"note: param best.{name} keeps the first attempt's value; tag best.{name} "
                  f"has this one's ({value})")  # fmt: skip
    if results.get("best_value") is not None:
        client.log_metric(parent, "best/value", float(results["best_value"]))
    return results


def seed_keys(varying: list[str]) -> list[str]:
    """The keys of a sweep's varying ones that are seeds (trainer.seed, dataset.seed, ...)."""
    return [k for k in varying if k.rsplit(".", 1)[-1] == "seed"]


def grouped_over_seeds(
    client: MlflowClient, parent: str, runs: list[Run], seeds: list[str], sweep_dir: Path
) -> str:
    """The configurations of a sweep over seeds: sweep_summary_groups.csv and the groups'
    mean-and-band figure, logged to the parent; returns the Markdown section."""
    from segexp.tracking.groups import group_report

    title = f"sweep: {METRIC} per configuration over {', '.join(seeds)}"
    report = group_report(client, runs, seeds, title)
    out = io.StringIO()
    csv.writer(out).writerows([report.header, *report.rows])
    (sweep_dir / "sweep_summary_groups.csv").write_text(out.getvalue())
    client.log_artifact(parent, str(sweep_dir / "sweep_summary_groups.csv"))
    client.log_figure(parent, report.figure, "sweep_val_mean_iou_groups.png")
    table = markdown_table(report.header, report.rows)
    return f"\n## Over {', '.join(seeds)}\n\n{table}\n{report.note}\n"


def summarize(
    uri: str, parent: str, sweep_dir: Path, status: str, varying: list[str] | None = None
) -> str:
    """Write and log the summary, tag the best child, and end the parent run; return its status.
    With seeds among the `varying` keys, the summary also groups the children over them.

    The parent ends FAILED when `status` says so or any child failed.
    """
    client = MlflowClient(uri)
    runs = children(client, parent)
    rows = table_rows(client, runs)
    (sweep_dir / "sweep_summary.csv").write_text(as_csv(rows))
    note = trivial_note(runs)
    markdown = as_markdown(rows, note)
    seeds = seed_keys(varying or [])
    if seeds and any(r.data.params for r in runs):
        markdown += grouped_over_seeds(client, parent, runs, seeds, sweep_dir)
    (sweep_dir / "sweep_summary.md").write_text(markdown)
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
    killed = sum(r.info.status == "KILLED" for r in runs)
    final = "FAILED" if status == "FAILED" or failed else "FINISHED"
    if final == "FAILED" and killed and not failed:  # stopped by a signal, nothing broke
        final = "KILLED"
    client.set_terminated(parent, final)
    stopped = f", {killed} stopped" if killed else ""
    print(
        f"sweep: {len(runs)} runs ({failed} failed{stopped}) under parent {parent}; "
        f"summary in {sweep_dir / 'sweep_summary.md'}"
    )
    if killed and final != "FINISHED":
        print(f"  to continue the sweep: python -m segexp.train resume={sweep_dir}")
    if note:
        print(note)
    return final
