"""The tracking outbox and segexp.sync: records kept on disk until MLflow has them, sent once."""

import json
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError
from segexp.tracking.outbox import Outbox
from segexp.tracking.run_folder import RunLink
from segexp.tracking.store import ensure_experiment


def _run(tmp_path, name="run"):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, "outbox")
    run_id = MlflowClient(uri).create_run(experiment_id).info.run_id
    folder = tmp_path / name
    link = RunLink(uri, experiment_id, run_id)
    link.save(folder)
    return Outbox(folder, link), MlflowClient(uri)


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_records_are_on_disk_until_sent_then_removed(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.params({"a": 1, "b": "x"})
    outbox.metrics({"val/mean_iou": 0.5}, step=1)
    outbox.text("hello\n", "notes/hello.txt")
    kinds = [json.loads(p.read_text())["kind"] for p in outbox.pending()]
    assert kinds == ["params", "metrics", "artifact"], "kept in the order recorded"
    assert outbox.flush() and outbox.pending() == []
    run = client.get_run(outbox.link.run_id)
    assert run.data.params == {"a": "1", "b": "x"}
    assert _history(client, outbox.link.run_id, "val/mean_iou") == [(1, 0.5)]
    assert [a.path for a in client.list_artifacts(outbox.link.run_id, "notes")] == [
        "notes/hello.txt"
    ]


def test_a_record_sent_twice_is_not_doubled(tmp_path):
    """A crash between sending and removing a record makes it go out again."""
    outbox, client = _run(tmp_path)
    outbox.metrics({"train/loss": 1.5, "lr": 0.01}, step=2, timestamp=1_700_000_000_000)
    outbox.params({"a": 1})
    copies = [(p.name, p.read_text()) for p in outbox.pending()]
    assert outbox.flush()
    for name, text in copies:  # as if the removal had not happened
        (outbox.folder / name).write_text(text)
    assert outbox.flush()
    assert _history(client, outbox.link.run_id, "train/loss") == [(2, 1.5)]
    assert _history(client, outbox.link.run_id, "lr") == [(2, 0.01)]


def test_epoch_images_are_log_image_steps_and_a_resend_adds_none(tmp_path):
    from PIL import Image

    outbox, client = _run(tmp_path)
    run_id = outbox.link.run_id
    pixels = {}
    for step in (1, 2):
        pixels[step] = np.full((6, 10, 3), 40 * step, np.uint8)
        path = tmp_path / f"step{step}.png"
        Image.fromarray(pixels[step]).save(path)
        outbox.image(path, "val_predictions/0_a", step, timestamp=1_700_000_000_000 + step)
    copies = [(p.name, p.read_text()) for p in outbox.pending()]
    assert outbox.flush()
    for name, text in copies:  # sent again, as after a crash before the records' removal
        (outbox.folder / name).write_text(text)
    assert outbox.flush()
    logged = [a.path for a in client.list_artifacts(run_id, "images")]
    full = sorted(p for p in logged if p.endswith(".png"))
    assert len(full) == 2 and len(logged) == 4  # one PNG and one compressed copy per step
    for step, path in zip((1, 2), full, strict=True):
        # MLflow's log_image naming: images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>
        assert path.startswith(f"images/val_predictions~0_a+step+{step}+timestamp+")
        local = client.download_artifacts(run_id, path, str(tmp_path / f"got{step}"))
        assert np.array_equal(np.asarray(Image.open(local)), pixels[step])
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"


def test_an_unreachable_server_keeps_the_records_and_fails_fast(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = RunLink(f"http://127.0.0.1:{port}", "1", "0" * 32)
    outbox = Outbox(tmp_path / "run", link)
    outbox.metrics({"train/loss": 1.0}, step=1)
    started = time.monotonic()
    assert outbox.flush() is False
    assert time.monotonic() - started < 10, "no minutes of MLflow retries"
    assert len(outbox.pending()) == 1
    assert outbox.flush_or_wait(timeout_s=1.0) is False


@pytest.mark.lock_wait
def test_a_locked_sqlite_store_keeps_the_records_until_released(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.metrics({"train/loss": 1.0}, step=1)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert outbox.flush() is False, "locked: try later"
        assert len(outbox.pending()) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outbox.flush() and _history(client, outbox.link.run_id, "train/loss") == [(1, 1.0)]


@pytest.mark.lock_wait
def test_a_store_locked_at_start_fails_with_a_message_naming_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "first")
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SegexpError, match=f"tracking store {uri} stayed locked"):
            ensure_experiment(uri, "second")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_refused_record_is_set_aside_with_its_error_and_the_rest_goes_on(tmp_path, capsys):
    outbox, client = _run(tmp_path)
    outbox.params({"a": 1})
    outbox.params({"a": 2})  # MLflow refuses to change a param
    outbox.metrics({"x": 1.0}, step=1)
    assert outbox.flush()
    rejected = list((outbox.output_dir / "tracking" / "rejected").glob("*.json"))
    assert len(rejected) == 1 and "error" in json.loads(rejected[0].read_text())
    assert "MLflow refused params record" in capsys.readouterr().err
    assert _history(client, outbox.link.run_id, "x") == [(1, 1.0)]


def test_status_record_ends_the_run(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.status("KILLED")
    assert outbox.flush()
    assert client.get_run(outbox.link.run_id).info.status == "KILLED"


def _sync(*args):
    return subprocess.run(
        [sys.executable, "-m", "segexp.sync", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.subprocess
def test_sync_sends_what_waits_and_marks_a_dead_process_killed(tmp_path):
    outbox, client = _run(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    RunLink(outbox.link.tracking_uri, outbox.link.experiment_id, outbox.link.run_id,
            int(dead), socket.gethostname()).save(outbox.output_dir)  # fmt: skip
    outbox.metrics({"train/loss": 0.7}, step=1)
    done = _sync(outbox.output_dir)
    assert done.returncode == 0, done.stderr
    assert "sent 2 record(s)" in done.stdout and "marking run" in done.stdout
    assert _history(client, outbox.link.run_id, "train/loss") == [(1, 0.7)]
    assert client.get_run(outbox.link.run_id).info.status == "KILLED"
    again = _sync(outbox.output_dir)
    assert again.returncode == 0 and "sent 0 record(s)" in again.stdout


@pytest.mark.subprocess
def test_sync_on_a_folder_that_is_not_a_run_says_so(tmp_path):
    done = _sync(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {tmp_path} is not a segexp run folder: "
        f"{tmp_path / 'tracking' / 'run.json'} does not exist"
    )


def test_a_run_that_ends_while_the_server_is_down_fails_with_the_sync_command(tmp_path):
    from segexp.tracking.run import finishing

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outbox = Outbox(tmp_path / "run", RunLink(f"http://127.0.0.1:{port}", "1", "0" * 32))
    outbox.metrics({"train/loss": 1.0}, step=1)
    with pytest.raises(SegexpError) as caught, finishing(outbox, timeout_s=1.0):
        pass  # training finished
    assert str(caught.value) == (
        f"tracking store http://127.0.0.1:{port} could not take records for 1 s "
        f"(MlflowException: Connection refused): 2 record(s) of run {'0' * 32} are kept in "
        f"{outbox.folder}. Send them with: python -m segexp.sync {outbox.output_dir}"
    )
    kinds = [json.loads(p.read_text())["kind"] for p in outbox.pending()]
    assert kinds == ["metrics", "status"]
    assert json.loads(outbox.pending()[1].read_text())["status"] == "FINISHED"


def test_tags_and_dataset_inputs_reach_the_run_as_strings_and_once(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.tags({"segexp.version": "0.1.0", "attempt": 2})
    spec = {"name": "digits", "digest": "abc123", "source": str(tmp_path), "context": "train",
            "tags": {"split": "train"}}  # fmt: skip
    outbox.inputs([spec])
    outbox.inputs([spec])  # recorded twice (a resume): logged once
    assert outbox.flush() and outbox.pending() == []
    run = client.get_run(outbox.link.run_id)
    assert run.data.tags["segexp.version"] == "0.1.0" and run.data.tags["attempt"] == "2"
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("digits", "abc123")]
    assert {t.key: t.value for t in inputs[0].tags} == {
        "mlflow.data.context": "train", "split": "train"
    }  # fmt: skip


def test_model_and_text_records_hold_what_sending_them_needs(tmp_path):
    outbox, _ = _run(tmp_path)
    (tmp_path / "ckpt").mkdir()
    outbox.model(tmp_path / "ckpt" / ".." / "ckpt" / "best.keras", {"a": 1}, step=3, name="best")
    outbox.model(tmp_path / "last.keras", {}, name="model")
    outbox.text("top\n", "summary.md")
    outbox.text("deep\n", "reports/eval/table.md")
    records = [json.loads(p.read_text()) for p in outbox.pending()]
    assert records[0] == {"kind": "model", "checkpoint": str(tmp_path / "ckpt" / "best.keras"),
                          "config": {"a": 1}, "step": 3, "name": "best"}  # fmt: skip
    assert records[1]["step"] is None and records[1]["name"] == "model"
    assert [(r["kind"], r["artifact_path"]) for r in records[2:]] == [
        ("artifact", None), ("artifact", "reports/eval")
    ]  # fmt: skip
    assert (outbox.files / "reports" / "eval" / "table.md").read_text() == "deep\n"
