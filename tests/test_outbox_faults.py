"""Store faults met while a run sends its records: the outbox waits through every error that may
pass, sets aside only what MLflow refuses for good, and never lets a run end FINISHED (or exit 0)
while something it recorded is not in MLflow."""

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError
from segexp.tracking.outbox import UNSENT_TAG, Outbox
from segexp.tracking.run import finishing
from segexp.tracking.run_folder import RunLink
from segexp.tracking.store import ensure_experiment


def _run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, "faults")
    run_id = MlflowClient(uri).create_run(experiment_id).info.run_id
    link = RunLink(uri, experiment_id, run_id)
    link.save(tmp_path / "run")
    return Outbox(tmp_path / "run", link), MlflowClient(uri)


def _steps(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _sync(folder, timeout=5):
    return subprocess.run(
        [sys.executable, "-m", "segexp.sync", str(folder), "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("damage", ["overwritten", "deleted"])
def test_a_store_file_overwritten_or_deleted_mid_run_only_delays_records(tmp_path, damage):
    outbox, client = _run(tmp_path)
    outbox.metrics({"loss": 1.0}, step=1)
    assert outbox.flush()
    db = tmp_path / "mlflow.db"
    saved = db.read_bytes()
    if damage == "overwritten":
        db.write_bytes(b"not a database " * 100)
    else:
        db.unlink()
    outbox.metrics({"loss": 0.5}, step=2)
    assert not outbox.flush(), "the record waits"
    assert len(outbox.pending()) == 1 and outbox.rejected() == []
    causes = ["not a database"] if damage == "overwritten" else ["readonly database", "no such"]
    assert any(cause in outbox.last_error for cause in causes), outbox.last_error
    db.write_bytes(saved)  # the user restores the file
    assert outbox.flush()
    assert _steps(client, outbox.link.run_id, "loss") == [(1, 1.0), (2, 0.5)]


class _Answers503(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"<html>the server is restarting</html>")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


def test_a_503_from_a_proxy_keeps_the_record_waiting(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers503)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        outbox = Outbox(tmp_path / "run", RunLink(uri, "1", "0" * 32))
        outbox.metrics({"loss": 1.0}, step=1)
        assert not outbox.flush()
        assert outbox.last_error == "MlflowException: HTTP status 503"
        assert len(outbox.pending()) == 1 and outbox.rejected() == []
    finally:
        server.shutdown()


def test_an_artifact_store_that_refuses_writes_keeps_the_record(tmp_path, monkeypatch):
    outbox, client = _run(tmp_path)
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    outbox.artifact(plot, "plots")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "mlartifacts"))

    monkeypatch.setattr(outbox.client, "log_artifact", read_only)
    assert not outbox.flush() and len(outbox.pending()) == 1
    assert outbox.last_error == "PermissionError: Permission denied"
    monkeypatch.undo()
    assert outbox.flush()
    assert [f.path for f in client.list_artifacts(outbox.link.run_id, "plots")] == [
        "plots/plot.png"
    ]


@pytest.mark.subprocess
def test_a_refused_record_fails_the_run_until_sync_sends_it(tmp_path):
    outbox, client = _run(tmp_path)
    run_id = outbox.link.run_id
    outbox.params({"lr": "0.1"})
    outbox.params({"lr": "0.2"})  # MLflow refuses to change a param: for good
    outbox.metrics({"loss": 1.0}, step=1)
    with pytest.raises(SegexpError) as caught, finishing(outbox, timeout_s=1.0):
        pass  # training finished
    message = str(caught.value)
    assert message.startswith(f"MLflow refused 1 record(s) of run {run_id} (first: the params")
    assert f"python -m segexp.sync {outbox.output_dir}" in message
    run = client.get_run(run_id)
    assert run.info.status == "FAILED", "no success while a record is not in MLflow"
    assert "segexp.sync" in run.data.tags[UNSENT_TAG]
    assert _steps(client, run_id, "loss") == [(1, 1.0)], "the rest went on"

    again = _sync(outbox.output_dir)  # the cause is not fixed: refused again, said so
    assert again.returncode == 1
    assert "MLflow refused 1 record(s)" in again.stderr and "INVALID_PARAMETER" not in again.stdout
    assert client.get_run(run_id).info.status == "FAILED"

    (refused,) = [p for p in outbox.rejected() if p.name.endswith("-params.json")]
    record = json.loads(refused.read_text())
    record["params"] = {"lr_second": "0.2"}  # the user fixes the record
    refused.write_text(json.dumps(record))
    fixed = _sync(outbox.output_dir)
    assert fixed.returncode == 0, fixed.stderr
    assert "sent 2 record(s)" in fixed.stdout  # the params and the held-back end
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and UNSENT_TAG not in run.data.tags
    assert run.data.params == {"lr": "0.1", "lr_second": "0.2"}
    assert outbox.rejected() == [] and outbox.pending() == []


def test_a_record_whose_file_is_gone_is_named_not_retried_forever(tmp_path):
    outbox, _ = _run(tmp_path)
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    outbox.artifact(plot)
    plot.unlink()
    assert outbox.flush()
    (refused,) = outbox.rejected()
    assert json.loads(refused.read_text())["error"] == f"Unsendable: {plot} to upload is gone"


def test_a_model_left_pending_by_a_killed_process_is_replaced(tmp_path):
    outbox, client = _run(tmp_path)
    link = outbox.link
    pending = client.create_logged_model(link.experiment_id, "model", link.run_id)
    sent = []
    outbox.send_model = lambda *args: sent.append(args)
    outbox.model(tmp_path / "last.keras", {"classes": 3})
    assert outbox.flush()
    assert len(sent) == 1, "the PENDING model did not count as logged"
    left = client.search_logged_models([link.experiment_id])
    assert pending.model_id not in [m.model_id for m in left]

    ready = client.create_logged_model(link.experiment_id, "model", link.run_id)
    client.finalize_logged_model(ready.model_id, "READY")
    outbox.model(tmp_path / "last.keras", {"classes": 3})
    assert outbox.flush()
    assert len(sent) == 1, "a READY model is not logged twice"


@pytest.mark.subprocess
def test_sync_moves_what_the_store_could_not_take_and_reports_waiting(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.metrics({"loss": 1.0}, step=1)
    db = tmp_path / "mlflow.db"
    saved = db.read_bytes()
    db.write_bytes(b"garbage" * 100)
    done = _sync(outbox.output_dir, timeout=1)
    assert done.returncode == 1
    assert "not a database" in done.stderr  # still waiting, or the store refused up front
    assert len(outbox.pending()) == 1
    db.write_bytes(saved)
    done = _sync(outbox.output_dir)
    assert done.returncode == 0 and "sent 1 record(s)" in done.stdout, done.stderr
    assert _steps(client, outbox.link.run_id, "loss") == [(1, 1.0)]


def test_a_ctrl_c_wrapped_by_a_library_still_ends_the_run_killed(tmp_path):
    """A second Ctrl-C during graph tracing reaches segexp inside TensorFlow's own error."""
    from segexp.errors import signal_behind

    outbox, client = _run(tmp_path)
    with pytest.raises(RuntimeError) as caught, finishing(outbox, timeout_s=1.0):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ctrl_c:
            raise RuntimeError("while tracing the train step") from ctrl_c
    assert isinstance(signal_behind(caught.value), KeyboardInterrupt)
    assert client.get_run(outbox.link.run_id).info.status == "KILLED"
    assert signal_behind(RuntimeError("no signal")) is None


def test_a_resume_retries_refused_records_and_drops_an_end_not_yet_sent(tmp_path):
    """A resumed run ends itself: an earlier end still waiting would mark it KILLED or FAILED
    while it trains; what MLflow refused before is tried again with the resumed run."""
    from segexp.tracking.run import reopen_run

    outbox, client = _run(tmp_path)
    outbox.params({"lr": "0.1"})
    outbox.params({"lr": "0.2"})  # refused
    assert outbox.flush() and len(outbox.rejected()) == 1
    outbox.status("KILLED")
    assert outbox.flush() and len(outbox.rejected()) == 2, "the end is held back with it"
    assert client.get_run(outbox.link.run_id).info.status == "FAILED"

    resumed = reopen_run(outbox.output_dir)
    assert client.get_run(outbox.link.run_id).info.status == "RUNNING"
    assert resumed.rejected() == []
    assert [json.loads(p.read_text())["kind"] for p in resumed.pending()] == ["params"]


def test_a_held_back_end_fails_the_run_naming_the_records_and_a_retry_finishes_it(tmp_path):
    """In process, what sync does: the run ends FAILED at its real end time with a tag naming
    the refused records and the command; the fixed records go back (their error dropped), and
    the run ends FINISHED at that same time, the tag removed."""
    outbox, client = _run(tmp_path)
    run_id = outbox.link.run_id
    outbox.params({"lr": "0.1"})
    outbox.params({"lr": "0.2"})  # refused for good
    outbox.status("FINISHED")
    end_time = json.loads(outbox.pending()[-1].read_text())["end_time"]
    assert abs(end_time - time.time() * 1000) < 60_000, "milliseconds since the epoch, now"
    assert outbox.flush() and outbox.pending() == []
    run = client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FAILED", end_time)
    note = (
        f"1 record(s) MLflow refused are kept in {outbox.rejected_folder}; fix the cause, then "
        f"send them with: python -m segexp.sync {outbox.output_dir}"
    )
    assert run.data.tags[UNSENT_TAG] == note
    refused = [json.loads(p.read_text()) for p in outbox.rejected()]
    assert [r["kind"] for r in refused] == ["params", "status"]
    assert refused[1]["error"] == f"held back: {note}"
    for path in outbox.rejected():  # the user fixes the param record
        record = json.loads(path.read_text())
        if record["kind"] == "params":
            path.write_text(json.dumps({**record, "params": {"lr_second": "0.2"}}))
    assert outbox.retry_rejected() == 2 and outbox.rejected() == []
    waiting = [json.loads(p.read_text()) for p in outbox.pending()]
    assert [r["kind"] for r in waiting] == ["params", "status"]
    assert all("error" not in r for r in waiting), "the error goes with the retry"
    assert outbox.flush()
    run = client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FINISHED", end_time)
    assert UNSENT_TAG not in run.data.tags
    assert run.data.params == {"lr": "0.1", "lr_second": "0.2"}
    assert outbox.retry_rejected() == 0


def test_flush_or_wait_retries_with_doubling_waits_up_to_ten_seconds_until_the_deadline(
    tmp_path, monkeypatch
):
    from segexp.tracking import outbox as outbox_module

    outbox, _ = _run(tmp_path)
    clock, sleeps = [1000.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(outbox_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(outbox_module.time, "sleep", sleep)
    answers = iter([False] * 7 + [True])
    monkeypatch.setattr(outbox, "flush", lambda: next(answers))
    assert outbox.flush_or_wait(timeout_s=60.0) is True
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    sleeps.clear()

    def never() -> bool:
        if len(sleeps) > 50:
            raise AssertionError("flush_or_wait did not stop at its deadline")
        return False

    monkeypatch.setattr(outbox, "flush", never)
    assert outbox.flush_or_wait(timeout_s=7.5) is False  # 0.5+1+2+4 = 7.5: no wait past it
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    sleeps.clear()
    assert outbox.flush_or_wait(timeout_s=0.4) is False and sleeps == []


def test_a_model_record_sends_its_checkpoint_config_and_name_and_links_its_epochs_metrics(
    tmp_path,
):
    """The sender gets the record's checkpoint, config and name; with a step, the READY
    LoggedModel gets the run's metrics of that step (not the other steps')."""
    outbox, client = _run(tmp_path)
    link = outbox.link
    sent = []

    def sender(link_, checkpoint, config, name):
        sent.append((checkpoint, config, name))
        model = client.create_logged_model(link_.experiment_id, name, link_.run_id)
        client.finalize_logged_model(model.model_id, "READY")

    outbox.send_model = sender
    outbox.metrics({"val/mean_iou": 0.25}, step=1)
    outbox.metrics({"val/mean_iou": 0.5}, step=2)
    outbox.model(tmp_path / "best.keras", {"classes": 3}, step=2, name="best")
    outbox.model(tmp_path / "last.keras", {"classes": 3})  # no step: no metrics linked
    assert outbox.flush() and outbox.last_error is None
    assert sent == [(tmp_path / "best.keras", {"classes": 3}, "best"),
                    (tmp_path / "last.keras", {"classes": 3}, "model")]  # fmt: skip
    models = {m.name: m for m in client.search_logged_models([link.experiment_id])}
    assert [(m.key, m.step, m.value) for m in models["best"].metrics] == [("val/mean_iou", 2, 0.5)]
    assert not models["model"].metrics


def test_records_past_mlflows_batch_limit_and_folders_are_sent_whole(tmp_path):
    outbox, client = _run(tmp_path)
    outbox.params({f"p{i:03d}": i for i in range(250)})  # MLflow takes 100 params a batch
    outbox.metrics({f"m{i:03d}": float(i) for i in range(150)}, step=4)
    folder = tmp_path / "plots"
    (folder / "inner").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / "inner" / "b.png").write_bytes(b"b")
    outbox.artifact(folder, "figures")
    before = int(time.time() * 1000)
    outbox.metrics({"late": 1.0}, step=5)  # no timestamp given: now, in milliseconds
    assert outbox.flush()
    run = client.get_run(outbox.link.run_id)
    assert len(run.data.params) == 250 and run.data.params["p249"] == "249"
    assert len(run.data.metrics) == 151 and run.data.metrics["m149"] == 149.0
    (late,) = client.get_metric_history(outbox.link.run_id, "late")
    assert before <= late.timestamp <= int(time.time() * 1000)
    listed = {a.path for a in client.list_artifacts(outbox.link.run_id, "figures")}
    assert listed == {"figures/a.png", "figures/inner"}


def test_a_refused_record_is_named_on_stderr_and_the_records_after_it_still_go(tmp_path, capsys):
    outbox, client = _run(tmp_path)
    outbox.params({"lr": "0.1"})
    outbox.params({"lr": "0.2"})  # refused for good
    outbox.params({"batch": "4"})
    assert outbox.flush() and outbox.last_error is None
    (refused,) = outbox.rejected()
    error = json.loads(refused.read_text())["error"]
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert err == (
        f"warning: MLflow refused params record {refused.name} of run {outbox.link.run_id}: "
        f"{error[:300]} (kept in {outbox.rejected_folder})"
    )
    assert client.get_run(outbox.link.run_id).data.params == {"lr": "0.1", "batch": "4"}
