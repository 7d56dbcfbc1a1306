"""A GPU per parallel sweep job: with the joblib launcher (n_jobs != 1) and several visible GPUs,
each worker process claims a slot (a lock file in the sweep folder, held until the process
ends) and sees only that slot's GPU through CUDA_VISIBLE_DEVICES, set before TensorFlow starts.
A loky worker runs many jobs and TensorFlow reads the variable once, so the claim is the
worker's, not the job's. With more workers than GPUs, slot i gets GPU i mod the GPU count.
Imports no TensorFlow."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path
from typing import IO

ENV = "CUDA_VISIBLE_DEVICES"
SLOTS_DIR = ".gpu_slots"  # under the sweep folder: slot-<i>.lock, one per worker holding it
_claim: tuple[IO[str], str] | None = None  # this process's slot file (kept open) and its GPU


def visible_gpus(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set (a SLURM allocation or
    the user's choice), else the indices nvidia-smi lists; none without either."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV)
    if value is not None:
        return [g.strip() for g in value.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listed.returncode != 0:
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def claim_gpu(sweep_dir: Path, gpus: list[str]) -> str:
    """This worker process's GPU: the first free slot's (slot i -> gpus[i % len(gpus)]),
    exported as CUDA_VISIBLE_DEVICES; the same on every later call in this process."""
    global _claim
    if _claim is not None:
        return _claim[1]
    if not gpus:
        raise ValueError("claim_gpu needs at least one GPU id")
    folder = sweep_dir / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        handle = open(folder / f"slot-{slot}.lock", "a+")  # noqa: SIM115  (held for the process)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        gpu = gpus[slot % len(gpus)]
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}: GPU {gpu}\n")
        handle.flush()
        _claim = (handle, gpu)
        os.environ[ENV] = gpu
        return gpu


def claimed_gpu() -> str | None:
    """The GPU this process claimed for its sweep jobs, or None."""
    return None if _claim is None else _claim[1]


def parallel_jobs(launcher: dict) -> bool:
    """Whether a Hydra launcher config runs jobs in parallel worker processes (joblib, n_jobs
    other than 1)."""
    target = str(launcher.get("_target_", ""))
    processes = launcher.get("backend") in (None, "loky", "multiprocessing")  # not threading
    return "joblib" in target.lower() and launcher.get("n_jobs", -1) != 1 and processes


def gpu_for_sweep_job() -> str | None:
    """In a parallel sweep job with GPUs visible: claim this worker's GPU (before TensorFlow
    is imported) and return it; None otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    if not parallel_jobs(OmegaConf.to_container(hydra.launcher)):
        return claimed_gpu()
    gpus = visible_gpus() if _claim is None else [_claim[1]]
    if not gpus:
        return None
    return claim_gpu(Path(hydra.sweep.dir), gpus)
