"""The figures: what each shows (learning rate, best epoch, baseline, per-class IoU, split
colours, readable confusion cells, titles clear of each other, sweep legends), checked on the
artists and on a rendered canvas."""

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from segexp.data.palettes import CIHP_PALETTE
from segexp.reporting import plots
from segexp.reporting.regions import close_color_pairs, region_labels
from segexp.tracking.summary import curves_figure

CIHP_NAMES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
    "socks", "pants", "torso-skin", "scarf", "skirt", "face", "left-arm", "right-arm",
    "left-leg", "right-leg", "left-shoe", "right-shoe",
)  # fmt: skip
CIHP = np.asarray(CIHP_PALETTE, np.uint8)
MIN_READABLE_POINTS = 7.0


def _history(epochs: int = 6) -> dict[str, list[float]]:
    t = np.arange(epochs) / epochs
    iou = [0.07, 0.19, 0.27, 0.29, 0.38, 0.33, 0.36, 0.37][:epochs]
    return {
        "loss": list(2.0 - t), "val_loss": list(2.1 - t),
        "pixel_accuracy": list(0.8 + 0.1 * t), "val_pixel_accuracy": list(0.8 + 0.09 * t),
        "mean_iou": list(np.asarray(iou) + 0.02), "val_mean_iou": iou,
        "lr": list(1e-5 + 0.5 * (2e-3 - 1e-5) * (1 + np.cos(np.pi * (t + 1 / epochs)))),
    }  # fmt: skip


def _draw(figure):
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _axes_titled(figure, title: str):
    return next(ax for ax in figure.axes if ax.get_title() == title)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# learning curves


def test_learning_curves_lr_panel_draws_the_history_lr_on_a_log_axis_when_it_spans_decades():
    history = _history()
    figure = plots.learning_curves(history)
    ax = _axes_titled(figure, "learning rate")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), history["lr"])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), range(1, 7))
    assert ax.get_yscale() == "log"  # cosine from 2e-3 to ~1e-5


def test_learning_curves_lr_panel_is_linear_for_a_constant_lr_and_reads_learning_rate_too():
    history = _history()
    history["learning_rate"] = [1e-3] * 6
    del history["lr"]
    ax = _axes_titled(plots.learning_curves(history), "learning rate")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1e-3] * 6)
    assert ax.get_yscale() == "linear"


def test_learning_curves_lr_argument_is_drawn_when_the_history_has_none():
    history = _history()
    del history["lr"]
    lr = [2e-3 * (1 - e / 6) ** 0.9 for e in range(6)]  # poly
    ax = _axes_titled(plots.learning_curves(history, lr=lr), "learning rate")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), lr)
    assert "lr" not in history


def test_class_ious_reads_logged_per_class_metrics_in_label_order():
    metrics = {"val/iou/hat": 0.2, "val/iou/background": 0.9, "val/mean_iou": 0.5}
    np.testing.assert_allclose(
        plots.class_ious(metrics, ["background", "hat", "hair"]), [0.9, 0.2, np.nan]
    )


def test_learning_curves_without_lr_have_no_lr_panel_and_the_old_call_works():
    history = _history()
    del history["lr"]
    figure = plots.learning_curves(history)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "pixel accuracy", "mean IoU"]


def test_learning_curves_baseline_line_is_at_the_given_baseline_on_the_mean_iou_panel():
    figure = plots.learning_curves(_history(), baseline=0.0424)
    ax = _axes_titled(figure, "mean IoU")
    lines = [line for line in ax.lines if line.get_label().startswith("trivial baseline")]
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_ydata(), [0.0424, 0.0424])
    assert not any(
        line.get_label().startswith("trivial baseline")
        for ax in figure.axes
        if ax.get_title() != "mean IoU"
        for line in ax.lines
    )


@pytest.mark.parametrize("given", [None, 4])
def test_learning_curves_best_epoch_marker_x(given):
    history = _history()
    best = given or int(np.argmax(history["val_mean_iou"])) + 1  # 5 when inferred
    figure = plots.learning_curves(history, best_epoch=given)
    ax = _axes_titled(figure, "mean IoU")
    star = next(line for line in ax.lines if line.get_marker() == "*")
    np.testing.assert_array_equal(star.get_xdata(), [best])
    np.testing.assert_allclose(star.get_ydata(), [history["val_mean_iou"][best - 1]])
    for panel in figure.axes:  # the dashed best-epoch line on every panel
        vline = next(line for line in panel.lines if line.get_label() == f"best epoch {best}")
        np.testing.assert_array_equal(vline.get_xdata(), [best, best])


def test_learning_curves_epoch_ticks_are_integers():
    figure = plots.learning_curves(_history(3))
    _draw(figure)
    for ax in figure.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


# per-class IoU


@pytest.mark.parametrize("n", [20, 11])
def test_class_iou_figure_names_classes_labels_values_and_stays_readable(n):
    ious = np.linspace(0.05, 0.9, n)
    ious[3] = np.nan
    figure = plots.class_iou_figure(CIHP_NAMES[:n], ious, baseline=0.042)
    renderer = _draw(figure)
    ax = figure.axes[0]
    ticks = ax.get_yticklabels()
    assert [t.get_text() for t in ticks] == [
        f"{name} ({i})" for i, name in enumerate(CIHP_NAMES[:n])
    ]
    assert all(t.get_fontsize() >= MIN_READABLE_POINTS for t in ticks)
    boxes = [t.get_window_extent(renderer) for t in ticks]
    assert not any(_overlap(a, b) for a, b in zip(boxes, boxes[1:], strict=False))
    values = [t.get_text().strip() for t in ax.texts]
    assert values[0] == "0.05" and values[3] == "n/a" and values[-1] == "0.90"
    mean = next(line for line in ax.lines if line.get_label().startswith("mean IoU"))
    np.testing.assert_allclose(mean.get_xdata(), [np.nanmean(ious)] * 2)
    baseline = next(line for line in ax.lines if line.get_label().startswith("trivial"))
    np.testing.assert_allclose(baseline.get_xdata(), [0.042, 0.042])


def test_class_iou_figure_draws_several_series_side_by_side():
    figure = plots.class_iou_figure(
        CIHP_NAMES[:11], {"best, epoch 5": np.full(11, 0.5), "last, epoch 6": np.full(11, 0.4)}
    )
    ax = figure.axes[0]
    assert len(ax.patches) == 22
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "best, epoch 5",
        "last, epoch 6",
    ]


# class histogram


def test_class_histogram_is_log_scaled_and_coloured_by_split():
    rng = np.random.default_rng(0)
    histograms = {"train": rng.integers(1, 10**6, 20), "val": rng.integers(0, 10**5, 20)}
    histograms["train"][0] = 10**8
    histograms["val"][3] = 0
    figure = plots.class_histogram(CIHP_NAMES, histograms, CIHP)  # old positional call
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    colors = {to_rgba(plots.SPLIT_COLORS["train"]), to_rgba(plots.SPLIT_COLORS["val"])}
    assert {bar.get_facecolor() for bar in ax.patches} == colors
    train = [bar for bar in ax.patches if bar.get_facecolor() == to_rgba("tab:blue")]
    assert len(train) == 20
    assert [t.get_text() for t in ax.get_yticklabels()][3] == "glove (3)"
    assert "0" in [t.get_text().strip() for t in ax.texts]  # the class without val pixels


# confusion matrix


def test_confusion_figure_is_readable_at_20_classes():
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, (20, 20)) + np.diag(rng.integers(500, 5000, 20))
    confusion[4] = 0  # a class absent from the labels
    confusion[5, 6] = 1  # under 1 % of its row: no number
    figure = plots.confusion_figure(confusion, CIHP_NAMES)
    renderer = _draw(figure)
    ax = figure.axes[0]
    cells = [t for t in ax.texts if t.get_text().isdigit()]
    assert cells and all(t.get_fontsize() >= MIN_READABLE_POINTS for t in cells)
    shown = {(round(t.get_position()[1]), round(t.get_position()[0])) for t in cells}
    assert (5, 6) not in shown
    row = 100 * confusion[0] / confusion[0].sum()
    assert next(t.get_text() for t in cells if t.get_position() == (0, 0)) == f"{row[0]:.0f}"
    assert any(t.get_text() == "not in the labels" for t in ax.texts)
    boxes = [t.get_window_extent(renderer) for t in cells]  # each number inside its cell
    width = ax.get_window_extent(renderer).width / 20
    assert max(b.width for b in boxes) < width
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert len(figure.axes) == 2  # the colour bar
    smaller = plots.confusion_figure(confusion[:11, :11], CIHP_NAMES[:11])
    assert figure.get_size_inches()[0] > smaller.get_size_inches()[0]


# prediction figures: the worst-images layout and the names on regions


def _scenes(rows: int):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(rows):
        label = np.zeros((96, 80), np.uint8)
        label[10:20, 30:50] = 1  # hat
        label[20:30, 30:50] = 2  # hair
        label[30:80, 20:60] = 5
        label[30:80, 10:20] = 14
        label[30:80, 60:70] = 15
        image = rng.integers(0, 255, (96, 80, 3), np.uint8)
        out.append((image, label, np.where(label == 2, 1, label).astype(np.uint8)))
    return out


def test_worst_images_row_titles_never_overlap_the_header_or_each_other():
    scenes = _scenes(4)
    titles = [f"000000{i}_a_long_validation_file_name.jpg: mean IoU 0.0{i}" for i in range(4)]
    figure = plots.prediction_figure(
        *zip(*scenes, strict=True), CIHP, CIHP_NAMES, 255, row_titles=titles,
        title="the 4 val images of lowest mean IoU",
    )  # fmt: skip
    renderer = _draw(figure)
    row_titles = [sub._suptitle for sub in figure.subfigs]
    assert [t.get_text() for t in row_titles] == titles
    headers = [ax.title for ax in figure.axes if ax.get_title()]
    assert [h.get_text() for h in headers] == ["image", "ground truth", "prediction"]
    texts = [figure._suptitle, *row_titles, *headers]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes[i + 1 :], start=i + 1):
            assert not _overlap(a, b), (texts[i].get_text(), texts[j].get_text())
    # the first row's title above its column headers, under the figure title
    assert boxes[0].y0 >= boxes[1].y1 and all(boxes[1].y0 >= h.y1 for h in boxes[-3:])


def test_overlays_name_similar_coloured_classes_without_overlapping_names():
    figure = plots.prediction_figure(*zip(*_scenes(2), strict=True), CIHP, CIHP_NAMES)
    renderer = _draw(figure)
    truth = figure.axes[1]
    names = {t.get_text() for t in truth.texts}
    assert {"hat", "hair", "left-arm", "right-arm"} <= names  # similar colours, told apart
    assert "background" not in names
    for ax in figure.axes:
        boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in ax.texts]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert all(t.get_fontsize() >= MIN_READABLE_POINTS for t in truth.texts)


def test_region_label_anchor_is_inside_a_c_shaped_region():
    label = np.zeros((60, 60), np.uint8)
    label[10:50, 10:20] = 3
    label[10:20, 10:50] = 3
    label[40:50, 10:50] = 3  # a C: its centroid lies outside it
    (anchor,) = region_labels(label, CIHP_NAMES)
    assert anchor.class_id == 3 and label[anchor.row, anchor.col] == 3


def test_cihp_palette_has_confusable_pairs_the_overlay_names_resolve():
    pairs = close_color_pairs(CIHP)
    assert (1, 4) in pairs  # hat / sunglasses: dark reds


def test_overlay_figure_keeps_its_call_and_names_regions():
    image, label, _ = _scenes(1)[0]
    figure = plots.overlay_figure(image, label, CIHP, CIHP_NAMES)
    assert "hair" in {t.get_text() for t in figure.axes[0].texts}
    assert (
        not plots.overlay_figure(image, label, CIHP, CIHP_NAMES, names_on_regions=False)
        .axes[0]
        .texts
    )


# sweep / compare curves


class _Client:
    def __init__(self, curves):
        self.curves = curves

    def get_metric_history(self, run_id, key):
        return [SimpleNamespace(step=i + 1, value=v) for i, v in enumerate(self.curves[run_id])]


def _runs(names, curves):
    runs = [
        SimpleNamespace(info=SimpleNamespace(run_id=f"run{i:02d}xxxxxxxx", run_name=name),
                        data=SimpleNamespace(metrics={"val/baseline_mean_iou": 0.042}, tags={}))
        for i, name in enumerate(names)
    ]  # fmt: skip
    return runs, _Client({r.info.run_id: c for r, c in zip(runs, curves, strict=True)})


def test_curves_figure_legend_keeps_what_differs_and_tells_identical_curves_apart():
    shared = "dataset=synthetic backbone=resnet50 image_size=128 trainer.epochs=3 optimizer=adam"
    names = [f"{shared} optimizer.learning_rate={lr}" for lr in (0.001, 0.002, 0.005)]
    same = [0.1, 0.2, 0.3]
    runs, client = _runs(names, [same, same, [0.1, 0.15, 0.2]])
    figure = curves_figure(client, runs, title="experiment segexp: val/mean_iou per run")
    assert figure._suptitle.get_text() == "experiment segexp: val/mean_iou per run"
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "optimizer.learning_rate=0.001"
    assert labels[1].startswith("optimizer.learning_rate=0.002\n(same values as")
    assert labels[2] == "optimizer.learning_rate=0.005"
    assert labels[3] == "trivial baseline 0.042"
    first, second = ax.lines[0], ax.lines[1]
    assert first.get_linestyle() != second.get_linestyle()
    assert first.get_marker() != second.get_marker()
    assert first.get_markersize() != second.get_markersize()
    assert "backbone=resnet50" in ax.get_title(loc="left")  # what all runs share
    _draw(figure)
    lo, hi = ax.get_xlim()
    assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)


def test_curves_figure_defaults_to_the_sweep_title_and_moves_a_long_legend_outside():
    names = [f"aspp.rates=[{r},12,18] optimizer.learning_rate={lr}" for r in (6, 12, 18)
             for lr in (1e-3, 2e-3, 5e-3)]  # fmt: skip
    runs, client = _runs(names, [[0.1 * i, 0.1 * i + 0.05] for i in range(9)])
    figure = curves_figure(client, runs)
    assert figure._suptitle.get_text().startswith("sweep")
    assert figure.axes[0].get_legend() is None and len(figure.legends) == 1
    renderer = _draw(figure)
    legend = figure.legends[0].get_window_extent(renderer)
    assert not _overlap(legend, figure.axes[0].get_window_extent(renderer))
    markers = {(line.get_color(), line.get_marker(), line.get_linestyle())
               for line in figure.axes[0].lines[:9]}  # fmt: skip
    assert len(markers) == 9


def test_write_report_writes_the_per_class_iou_figure(tmp_path):
    from segexp.data.dataset import SegmentationDataset
    from segexp.evaluation.evaluator import EvalResult
    from segexp.evaluation.metrics import confusion_scores
    from segexp.evaluation.report import write_report

    image, label, predicted = _scenes(1)[0]
    confusion = np.zeros((20, 20), np.int64)
    np.add.at(confusion, (label.ravel(), predicted.ravel()), 1)
    worst = [SimpleNamespace(image=image, label=label, predicted=predicted,
                             mean_iou=0.2, path=tmp_path / "a.jpg")]  # fmt: skip
    result = EvalResult(confusion, confusion_scores(confusion), 0.5, 1, worst=worst)
    dataset = SegmentationDataset("t", {}, CIHP_NAMES, CIHP)
    write_report(result, dataset, tmp_path / "out")
    for name in ("per_class_iou.png", "confusion_matrix.png", "worst_images.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
