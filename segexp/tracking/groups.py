"""Runs as replicates: group the runs that differ only in some keys (`--over trainer.seed`),
and per group the mean, sample std and n of each run's best value of a metric, best first,
with the noise verdict between each group and the next; used by segexp.compare and by a sweep's
parent run when the sweep varies a seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segexp.errors import SegexpError
from segexp.reporting.replicates import TEST, Spread, noise_verdict, spread
from segexp.tracking.metric_names import BASELINE_METRIC, METRIC, TRIVIAL_MARGIN

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Params that differ between runs but do not change what is trained (where files go, what is
# logged, how much is printed); the data itself is compared by segexp.tracking.comparable.
IGNORED = (
    "paths.", "hydra.", "tracking.", "launcher.", "trainer.checkpoint_dir", "trainer.verbose",
    "verbose", "resume_finished", "dataset.root", "dataset.cache",
)  # fmt: skip


def differing_params(runs: list[Run]) -> list[str]:
    """Param names whose value is not the same in every run that logged params (a job that
    failed before training logged none and does not count)."""
    logged = [r for r in runs if r.data.params]
    keys = sorted({k for r in logged for k in r.data.params})
    return [
        k
        for k in keys
        if not k.startswith(IGNORED) and len({r.data.params.get(k) for r in logged}) > 1
    ]


@dataclass(frozen=True)
class MetricChoice:
    """A metric to aggregate and which way is better ('max', or 'min' for losses)."""

    name: str
    mode: str

    @classmethod
    def parse(cls, text: str) -> MetricChoice:
        """'val/loss' (min, as its name says loss), 'val/iou/face' (max) or 'NAME:min|max'."""
        name, _, mode = text.partition(":")
        mode = mode or ("min" if name.rsplit("/", 1)[-1].endswith("loss") else "max")
        if not name or mode not in ("min", "max"):
            raise SegexpError(f"--metric {text}: expected NAME, NAME:max or NAME:min")
        return cls(name, mode)

    @property
    def label(self) -> str:
        return f"{'best' if self.mode == 'max' else 'lowest'} {self.name}"


def best_of(client: MlflowClient, run: Run, metric: MetricChoice) -> float | None:
    """The run's best value of `metric` over its history, or None when it logged none."""
    values = [m.value for m in client.get_metric_history(run.info.run_id, metric.name)]
    if not values:
        return None
    return max(values) if metric.mode == "max" else min(values)


@dataclass
class RunGroup:
    """Runs that share every differing param except the `over` keys."""

    label: str  # 'optimizer.name=adam' (what sets the group apart), '(all runs)' for one group
    runs: list[Run]  # its FINISHED runs (a stopped or failed run is no replicate)
    over_values: list[str]  # the `over` keys' values of its runs, e.g. the seeds
    scores: dict[str, list[float]]  # metric name -> the scored runs' best values
    unfinished: int = 0  # its runs that did not finish, left out

    def spread(self, metric: str) -> Spread:
        return spread(self.scores.get(metric, []))

    def baseline(self) -> float | None:
        values = {round(r.data.metrics[BASELINE_METRIC], 6) for r in self.runs
                  if BASELINE_METRIC in r.data.metrics}  # fmt: skip
        return values.pop() if len(values) == 1 else None

    def trivial(self) -> bool:
        """Whether the group's mean best val/mean_iou does not beat its trivial baseline."""
        baseline, mean = self.baseline(), self.spread(METRIC).mean
        return baseline is not None and not math.isnan(mean) and mean - baseline <= TRIVIAL_MARGIN


def check_over(runs: list[Run], over: list[str]) -> None:
    """Every `over` key must be a param some run logged; the message lists those that vary."""
    logged = {k for r in runs for k in r.data.params}
    missing = [k for k in over if k not in logged]
    if missing:
        varying = ", ".join(differing_params(runs)) or "none"
        raise SegexpError(
            f"--over {','.join(missing)}: no run logged such a param; params that vary "
            f"between these runs: {varying}"
        )


def group_runs(
    client: MlflowClient, runs: list[Run], over: list[str], metrics: list[MetricChoice]
) -> list[RunGroup]:
    """Groups of `runs` that differ only in the `over` keys, each with its runs' best values of
    `metrics` (the first is the ranking one), best mean first; groups without a score last."""
    check_over(runs, over)
    keys = [k for k in differing_params(runs) if k not in over]
    shown = label_keys(keys, runs)
    groups: dict[tuple, RunGroup] = {}
    for run in runs:
        if not run.data.params:  # failed before training: nothing to group it by
            continue
        values = tuple(run.data.params.get(k, "") for k in keys)
        label = " ".join(f"{k}={run.data.params.get(k, '')}" for k in shown) or "(all runs)"
        group = groups.setdefault(values, RunGroup(label, [], [], {m.name: [] for m in metrics}))
        if run.info.status != "FINISHED":
            group.unfinished += 1
            continue
        group.runs.append(run)
        group.over_values.append(",".join(run.data.params.get(k, "?") for k in over))
        for metric in metrics:
            value = best_of(client, run, metric)
            if value is not None:
                group.scores[metric.name].append(value)
    first = metrics[0]
    sign = -1.0 if first.mode == "max" else 1.0

    def order(group: RunGroup) -> tuple[bool, float]:
        mean = group.spread(first.name).mean
        return math.isnan(mean), sign * (0.0 if math.isnan(mean) else mean)

    for group in groups.values():
        group.over_values.sort(key=_natural)
    return sorted(groups.values(), key=order)


def _natural(text: str) -> tuple:
    """Sort key that puts '2' before '10'."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def label_keys(keys: list[str], runs: list[Run]) -> list[str]:
    """The keys that name a group: a config group's choice ('optimizer.name') stands for the
    keys under it that its choice decides (optimizer._target_, optimizer.momentum, ...); a key
    under it that also varies within one choice (optimizer.learning_rate) is shown."""
    chosen = {k.removesuffix(".name") for k in keys if k.endswith(".name")}

    def decided(key: str, group: str) -> bool:
        seen: dict[str, set[str | None]] = {}
        for run in runs:
            if run.data.params:
                choice = run.data.params.get(f"{group}.name")
                seen.setdefault(choice, set()).add(run.data.params.get(key))
        return all(len(values) == 1 for values in seen.values())

    return [
        k for k in keys
        if k.endswith(".name")
        or not any(k.startswith(f"{g}.") and decided(k, g) for g in chosen)
    ]  # fmt: skip


def group_table(
    groups: list[RunGroup], over: list[str], metrics: list[MetricChoice]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank, group, n, mean and std of each metric, the baseline, trivial,
    the noise verdict against the next group (on the first metric), the `over` values."""
    header = ["rank", "group", "n"]
    for metric in metrics:
        header += [f"{metric.label} mean", "std"]
    header += ["baseline", "trivial", "vs next", ",".join(over)]
    rows = []
    for i, group in enumerate(groups):
        row = [str(i + 1), group.label, str(group.spread(metrics[0].name).n)]
        for metric in metrics:
            row += group.spread(metric.name).cells()
        baseline = group.baseline()
        following = groups[i + 1] if i + 1 < len(groups) else None
        verdict = (
            noise_verdict(group.scores[metrics[0].name], following.scores[metrics[0].name]).text
            if following is not None
            else ""
        )
        row += ["n/a" if baseline is None else f"{baseline:.4f}",
                "yes" if group.trivial() else "", verdict, " ".join(group.over_values)]  # fmt: skip
        rows.append(row)
    return header, rows


def groups_note(groups: list[RunGroup], over: list[str], metrics: list[MetricChoice]) -> str:
    """How to read the grouped table: the test, its threshold, what counts as a run."""
    from segexp.reporting.replicates import ALPHA

    unscored = sum(len(g.runs) - g.spread(metrics[0].name).n for g in groups)
    unfinished = sum(g.unfinished for g in groups)
    text = (
        f"groups: runs that differ only in {', '.join(over)}; mean and sample std (ddof=1) of "
        f"each run's {metrics[0].label}. vs next: {TEST} against the next group, 'differs' "
        f"at p < {ALPHA}."
    )
    trivial = sum(g.trivial() for g in groups)
    if trivial:
        text += (
            f" {trivial} group(s) do not beat {BASELINE_METRIC} by more than {TRIVIAL_MARGIN} "
            "(trivial: yes)."
        )
    if unscored:
        text += f" {unscored} run(s) logged no {metrics[0].name} and are not counted."
    if unfinished:
        text += f" {unfinished} run(s) that did not finish (KILLED, FAILED, RUNNING) are left out."
    return text


def groups_figure(client: MlflowClient, groups: list[RunGroup], metric: str, title: str) -> Figure:
    """Each group's `metric` curve as its mean over runs with a +- std band."""
    from segexp.reporting.replicates import band_figure

    curves = {}
    for group in groups:
        runs = []
        for run in group.runs:
            history = client.get_metric_history(run.info.run_id, metric)
            if history:
                runs.append({m.step: m.value for m in history})
        label = group.label if group.label not in curves else f"{group.label} ({len(curves)})"
        curves[label] = runs
    baselines = {g.baseline() for g in groups} - {None}
    baseline = baselines.pop() if len(baselines) == 1 and metric == METRIC else None
    return band_figure(curves, metric, title, baseline)


@dataclass(frozen=True)
class GroupReport:
    """What compare and a seed sweep's parent show of the groups: the table, how to read it,
    and the mean-and-band figure."""

    header: list[str]
    rows: list[list[str]]
    note: str
    figure: Figure


def group_report(
    client: MlflowClient, runs: list[Run], over: list[str], title: str, extra: Sequence[str] = ()
) -> GroupReport:
    """The groups of `runs` over `over`, ranked by best val/mean_iou; `extra` metrics
    ('NAME[:min|max]') aggregated beside it, each once."""
    metrics = [MetricChoice(METRIC, "max")]
    for text in extra:
        choice = MetricChoice.parse(text)
        if choice.name not in {m.name for m in metrics}:
            metrics.append(choice)
    groups = group_runs(client, runs, over, metrics)
    header, rows = group_table(groups, over, metrics)
    figure = groups_figure(client, groups, METRIC, title)
    return GroupReport(header, rows, groups_note(groups, over, metrics), figure)
