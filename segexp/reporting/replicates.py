"""Replicates: runs of one configuration that differ only in their seed(s). Their mean, sample
standard deviation and n; whether two configurations differ by more than the seed-to-seed noise
(Welch's two-sided t-test); a figure of each configuration's curve as its mean with a band."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ALPHA = 0.05  # a p-value below this counts as a difference
TEST = "Welch's two-sided t-test (unequal variances)"


@dataclass(frozen=True)
class Spread:
    """n values' mean and sample standard deviation (ddof=1; NaN for fewer than 2)."""

    n: int
    mean: float
    std: float

    def cells(self, digits: int = 4) -> list[str]:
        """[mean, std] as text; 'n/a' where there is no value."""
        return [
            "n/a" if math.isnan(self.mean) else f"{self.mean:.{digits}f}",
            "n/a" if math.isnan(self.std) else f"{self.std:.{digits}f}",
        ]


def spread(values: Sequence[float]) -> Spread:
    """The Spread of `values` (NaN mean for none)."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean()) if array.size else math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Spread(int(array.size), mean, std)


@dataclass(frozen=True)
class Verdict:
    """Whether two groups' values differ by more than their noise: `differs` is None when the
    test cannot say (fewer than 2 values in a group)."""

    differs: bool | None
    p: float | None
    text: str


def noise_verdict(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Verdict:
    """Welch's t-test of `a` against `b`: 'differs' when p < alpha, else 'within noise'."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Verdict(None, None, f"n/a (the test needs n >= 2 per group; n={na} vs {nb})")
    if np.var(a) == 0 and np.var(b) == 0:  # the t statistic is undefined without spread
        same = float(np.mean(a)) == float(np.mean(b))
        text = "within noise (identical values)" if same else "differs (no spread in either group)"
        return Verdict(not same, None, f"{text}, n={na} vs {nb}")
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # a group with equal values: scipy warns, the test holds
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    p = float(result.pvalue)
    differs = p < alpha
    word = "differs" if differs else "within noise"
    stats_text = f"t={result.statistic:.2f}, df={result.df:.1f}, p={p:.3f}, n={na} vs {nb}"
    return Verdict(differs, p, f"{word} ({stats_text})")


def band_figure(
    curves: Mapping[str, Sequence[Mapping[int, float]]],
    ylabel: str,
    title: str,
    baseline: float | None = None,
) -> Figure:
    """One line per group: the mean over its runs at each epoch, with a band of +- one sample
    standard deviation where at least 2 runs reached that epoch; `curves` maps a group's label to
    its runs' {epoch: value}. The shared trivial baseline as a dotted line."""
    import textwrap

    figure = Figure(figsize=(9, 4.8), layout="constrained")
    ax = figure.subplots()
    for i, (label, runs) in enumerate(curves.items()):
        epochs = sorted({e for run in runs for e in run})
        if not epochs:
            continue
        at = [[run[e] for run in runs if e in run] for e in epochs]
        mean = np.array([np.mean(v) for v in at])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else np.nan for v in at])
        color = f"C{i % 10}"
        ax.plot(epochs, mean, color=color, marker="o", ms=4, lw=1.6,
                label=textwrap.fill(f"{label} (n={len(runs)})", 50))  # fmt: skip
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    if baseline is not None and ax.lines:
        ax.axhline(baseline, color="0.3", ls=":", lw=1.2, label=f"trivial baseline {baseline:.3f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    figure.suptitle(title)
    ax.set_title("line: mean over the group's runs; band: +- 1 sample std", fontsize="small",
                 loc="left")  # fmt: skip
    if ax.lines:
        ax.legend(fontsize="small")
    return figure
