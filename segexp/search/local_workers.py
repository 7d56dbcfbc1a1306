"""hydra.sweeper.n_jobs > 1: more workers of the same study on this machine, each this command
again with n_jobs=1 in the same sweep folder (its console in worker-<i>.log), each with its own
GPU when there are GPUs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WORKER_ENV = "SEGEXP_SWEEP_WORKER"  # set in the extra local workers n_jobs starts (1, 2, ...)


def start_helpers(n_jobs: int, sweep_dir: Path) -> list[subprocess.Popen]:
    """n_jobs - 1 more workers on this machine: this command again with n_jobs=1 in the same
    sweep folder, each with its own GPU when there are GPUs (worker i: GPU i mod the count)."""
    if n_jobs <= 1:
        return []
    from segexp.training.sweep_gpus import ENV, visible_gpus

    gpus = visible_gpus()
    if gpus:
        os.environ[ENV] = gpus[0]  # this process is worker 0 (no backend has started yet)
    args = [
        a for a in sys.argv[1:] if not a.startswith(("hydra.sweeper.n_jobs=", "hydra.sweep.dir="))
    ]
    helpers = []
    for i in range(1, n_jobs):
        env = {**os.environ, WORKER_ENV: str(i)}
        if gpus:
            env[ENV] = gpus[i % len(gpus)]
        log = open(sweep_dir / f"worker-{i}.log", "a")  # noqa: SIM115  (the child writes it)
        command = [sys.executable, "-m", "segexp.train", *args, "hydra.sweeper.n_jobs=1",
                   f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
        helpers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        print(f"sweep: worker {i} started (pid {helpers[-1].pid}, log {log.name})", flush=True)
    return helpers


def wait_for(helpers: list[subprocess.Popen]) -> None:
    """Wait for the extra workers; on an exception (a signal), stop them first."""
    failed = sys.exc_info()[0] is not None
    for helper in helpers:
        if failed and helper.poll() is None:
            helper.send_signal(signal.SIGTERM)
    for helper in helpers:
        try:
            helper.wait(timeout=None if not failed else 120)
        except subprocess.TimeoutExpired:
            helper.kill()
