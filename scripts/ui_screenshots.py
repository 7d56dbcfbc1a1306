"""Screenshots of the MLflow UI for docs/ui/: a small sweep on the embedded dataset, served by
`mlflow server`, photographed by headless Chromium (Debian's `chromium` package) driven by
Playwright (`pip install -e '.[docs]'`; it uses the system's Chromium, it downloads none).

    python scripts/ui_screenshots.py                 # train the sweep, then take the pictures
    python scripts/ui_screenshots.py --reuse DIR     # photograph the store DIR/mlflow.db again

Pages: the experiment's runs list, a run's metrics tab (val and train mean IoU), its per-epoch
val predictions (the image slider), its system metrics, and the compare page of the sweep's
runs (its figures side by side). Each picture is a PNG in --out.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "ui-tour"
# A sweep that learns visibly in a few minutes on 2 CPU cores: two optimizers, tiny backbone.
SWEEP = [
    "-m", "optimizer=adam,sgd", "backbone=tiny", "image_size=96", "trainer.epochs=8",
    "dataset.num_train=64", "dataset.num_val=16", "tracking.num_prediction_samples=2",
    f"tracking.experiment={EXPERIMENT}",
]  # fmt: skip


def train_sweep(workdir: Path) -> None:
    """The sweep, logged to workdir/mlflow.db (its outputs under workdir/outputs)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "segexp.train", *SWEEP, f"paths.data_dir={workdir / 'data'}",
               f"hydra.sweep.dir={workdir / 'outputs' / 'sweep'}"]  # fmt: skip
    print("training:", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=workdir, env=env, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on the store, one worker and no job runner; returns once /health answers."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1",
         "--port", str(port), "--backend-store-uri", f"sqlite:///{store}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit(f"error: mlflow server on port {port} did not answer /health in 90 s")


def ui_state(experiment_id: str, parent_id: str) -> dict[str, str]:
    """What a user would have clicked, as the UI keeps it in localStorage (MLflow 3.17): the
    "Model training" view, the assistant panel closed, the sweep's parent row expanded and the
    columns optimizer.name, val/mean_iou, val/baseline_mean_iou and Models shown."""
    table = {
        "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [
            "params.`optimizer.name`", "metrics.`val/mean_iou`", "metrics.`val/baseline_mean_iou`",
            "metrics.`train/loss`", "attributes.`Models`",
        ],
        "columnOrder": [], "columnWidths": {}, "runsExpanded": {parent_id: True},
        "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": None, "groupsExpanded": {}, "autoRefreshEnabled": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                  "selectedXAxisMetricKey": ""},
    }  # fmt: skip
    return {
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState': (
            json.dumps(table)
        ),
    }


def sweep_runs(store: Path) -> tuple[str, str, list[str], str]:
    """(experiment id, parent run id, children's run ids, the best child's id) of the sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"error: no experiment {EXPERIMENT!r} in {store}")
    eid = experiment.experiment_id
    runs = client.search_runs([eid], order_by=["attributes.start_time ASC"])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if len(children) < 2:
        raise SystemExit(f"error: {store} holds {len(children)} sweep runs; 2 are needed")
    parent = children[0].data.tags["mlflow.parentRunId"]
    best = max(children, key=lambda r: r.data.metrics.get("val/mean_iou", -1.0))
    return eid, parent, [r.info.run_id for r in children], best.info.run_id


def photograph(base: str, store: Path, out: Path, browser: str) -> None:
    """Each page, loaded until its data is drawn, as a PNG in `out`."""
    from playwright.sync_api import sync_playwright

    eid, parent, children, best = sweep_runs(store)
    seed = "".join(
        f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
        for k, v in ui_state(eid, parent).items()
    )
    compare = urllib.parse.urlencode(
        {"runs": json.dumps(children), "experiments": json.dumps([eid])}
    )
    run_page = f"{base}/#/experiments/{eid}/runs/{best}"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=browser, args=["--no-sandbox", "--disable-gpu"]
        )
        context = chromium.new_context(viewport={"width": 1600, "height": 900})
        context.add_init_script(seed)
        page = context.new_page()

        def shoot(
            name: str, url: str, search: str | None = None, click: str | None = None,
            height: int = 900,
        ) -> None:  # fmt: skip
            page.set_viewport_size({"width": 1600, "height": height})
            page.goto(url)  # the UI polls the server: it never goes network-idle
            page.wait_for_timeout(5000)
            if search is not None:  # the run page's chart filter, as a user types it
                page.get_by_placeholder("Search metric charts").fill(search, timeout=30000)
            if click is not None:  # e.g. a figure in the compare page's artifact list
                page.get_by_text(click, exact=True).first.click(timeout=30000)
            page.wait_for_timeout(4000)  # charts and images draw after the data arrives
            page.screenshot(path=out / name)
            print(f"wrote {out / name}")

        shoot("runs_list.png", f"{base}/#/experiments/{eid}/runs", height=520)
        shoot("run_metrics.png", f"{run_page}/model-metrics", search="mean_iou")
        slider_at_last_epoch(page, f"{run_page}/model-metrics", out / "run_images.png")
        shoot("system_metrics.png", f"{run_page}/system-metrics", search="system/")
        shoot("compare.png", f"{base}/#/compare-runs?{compare}", click="learning_curves.png",
              height=2600)  # fmt: skip
        chromium.close()


def slider_at_last_epoch(page: "Page", url: str, path: Path) -> None:
    """The first val_predictions chart opened full size, its step slider moved to the last
    epoch (MLflow 3.17 starts the slider at step 0, below the first logged step, and shows no
    image there)."""
    page.set_viewport_size({"width": 1600, "height": 1400})
    page.goto(url)
    page.wait_for_timeout(5000)
    page.get_by_placeholder("Search metric charts").fill("val_predictions", timeout=30000)
    page.wait_for_timeout(3000)
    expand = page.locator("button[data-component-id='fullscreen_button_chartcard']")
    if not expand.count():
        raise SystemExit("error: no full-screen button on the image chart (MLflow UI changed?)")
    expand.first.click()
    page.wait_for_timeout(2000)
    dialog = page.locator("[role=dialog]")
    handle = dialog.locator("[role=slider]").first.bounding_box()
    number = dialog.locator("input").last.bounding_box()
    page.mouse.click(number["x"] - 28, handle["y"] + handle["height"] / 2)  # the last dot
    page.wait_for_timeout(5000)
    page.screenshot(path=path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=Path, help="a folder holding mlflow.db from an earlier run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui", help="where PNGs go")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("error: chromium not found; on Debian: apt-get install chromium")
    workdir = args.reuse or Path(tempfile.mkdtemp(prefix="segexp-ui-"))
    store = workdir / "mlflow.db"
    if args.reuse is None:
        train_sweep(workdir)
    elif not store.is_file():
        raise SystemExit(f"error: --reuse {workdir}: no mlflow.db there")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(store, port)
    try:
        photograph(f"http://127.0.0.1:{port}", store, args.out, browser)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"store kept in {workdir} (reuse it with --reuse {workdir})")


if __name__ == "__main__":
    main()
