"""A GPU per parallel sweep worker, with fake GPU ids (no GPU needed): which ids are visible,
and the slots worker processes claim at the same time (the end-to-end joblib sweep is in
test_sweep)."""

import subprocess
import sys
import time

from segexp.training.sweep_gpus import parallel_jobs, visible_gpus

CLAIM = """
import os, sys, time
from pathlib import Path
from segexp.training.sweep_gpus import claim_gpu, claimed_gpu
gpu = claim_gpu(Path(sys.argv[1]), ["3", "5"])
again = claim_gpu(Path(sys.argv[1]), ["7"])  # the worker keeps its claim
assert again == gpu == claimed_gpu() == os.environ["CUDA_VISIBLE_DEVICES"]
print(gpu, flush=True)
while not Path(sys.argv[2]).exists():  # hold the slot until the test lets go
    time.sleep(0.05)
"""


def test_the_visible_gpus_come_from_cuda_visible_devices_or_nvidia_smi(monkeypatch, tmp_path):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    fake = tmp_path / "nvidia-smi"  # prints the indices as the real one does
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus({}) == ["0", "1", "2"]
    fake.unlink()
    assert visible_gpus({}) == []  # no nvidia-smi: no GPU


def test_workers_running_at_once_claim_distinct_gpus_then_share_round_robin(tmp_path):
    release = tmp_path / "release"
    workers = []
    seen = []
    for _ in range(3):  # one after the other, each holding its slot: slots 0, 1, 2
        worker = subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path / "sweep"), str(release)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen.append(worker.stdout.readline().strip())
        workers.append(worker)
    assert seen == ["3", "5", "3"]  # slot i -> GPU i mod 2
    workers[0].kill()  # a worker that ends frees its slot for the next one
    workers[0].wait()
    late = subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(tmp_path / "sweep"), str(release)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert late.stdout.readline().strip() == "3"
    release.touch()
    deadline = time.monotonic() + 30
    for worker in [*workers[1:], late]:
        assert worker.wait(timeout=max(1, deadline - time.monotonic())) == 0
    slots = sorted(p.name for p in (tmp_path / "sweep" / ".gpu_slots").iterdir())
    assert slots == ["slot-0.lock", "slot-1.lock", "slot-2.lock"]


def test_only_a_joblib_launcher_with_several_jobs_runs_in_parallel():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert parallel_jobs({"_target_": joblib, "n_jobs": 2})
    assert parallel_jobs({"_target_": joblib, "n_jobs": -1})
    assert not parallel_jobs({"_target_": joblib, "n_jobs": 1})
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert not parallel_jobs({"_target_": basic})
