"""System metrics: MLflow's own sampler, its records through the run's outbox."""

import json
import time

import pytest

from segexp.tracking import system_metrics
from tests.test_outbox import _run


def test_system_metrics_wait_in_the_outbox_and_reach_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    outbox, client = _run(tmp_path)
    with system_metrics.system_metrics(outbox):
        time.sleep(0.7)
    records = [json.loads(p.read_text()) for p in outbox.pending()]
    assert records and all(r["kind"] == "metrics" for r in records), "nothing sent directly"
    assert [r["step"] for r in records] == list(range(len(records)))
    assert len(records) >= 2  # 0.7 s at 0.2 s per sample, and the last partial period
    assert client.get_run(outbox.link.run_id).data.metrics == {}, "the outbox sends them"
    assert outbox.flush()
    history = client.get_metric_history(outbox.link.run_id, "system/cpu_utilization_percentage")
    assert sorted(m.step for m in history) == list(range(len(records)))
    # a resumed run goes on after the last step the run has
    assert system_metrics.next_system_step(outbox) == len(records)


def test_a_machine_where_the_monitor_cannot_start_trains_without_it(tmp_path, monkeypatch, capsys):
    def no_psutil() -> type:
        raise ModuleNotFoundError("No module named 'psutil'")

    monkeypatch.setattr(system_metrics, "_monitor_class", no_psutil)
    outbox, _ = _run(tmp_path)
    ran = []
    with system_metrics.system_metrics(outbox):
        ran.append(True)
    assert ran == [True] and outbox.pending() == []
    assert "warning: no system metrics for this run: No module named 'psutil'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("value", ["false", "False"])
def test_mlflows_switch_turns_them_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", value)
    outbox, _ = _run(tmp_path)
    with system_metrics.system_metrics(outbox):
        time.sleep(0.1)
    assert outbox.pending() == []
