"""trainer.precision=auto: the Keras dtype policy for the device this job trains on.

mixed_float16 on GPUs with tensor cores (compute capability 7.0 and up: V100 and later), where
float16 matmuls run several times faster (loss scaling keeps small gradients); mixed_bfloat16 on
TPUs, and on CPUs with native bf16 (AVX512_BF16 or AMX) under TensorFlow, whose oneDNN kernels use
it, when it kept the accuracy of float32 on real data (measured with the command below and in
docs/benchmarks.md); float32 everywhere else. An explicit policy is used as given.
"""

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segexp.tracking.outbox import Outbox

# Measured on the 2-core AVX512_BF16 EPYC (2026-12-03): `python -m segexp.train dataset=digits
# dataset.num_train=128 trainer.precision=<policy>` (resnet50, 128 px, 6 epochs, seed 42):
# best val mean IoU float32 vs mixed_bfloat16, as in docs/benchmarks.md "Precision".
BF16_CPU_MEASURED = {"float32": 0.1643, "mixed_bfloat16": 0.2115}
BF16_TOLERANCE = 0.02  # the most val mean IoU bf16 may lose against float32 to be chosen
TENSOR_CORES = (7, 0)  # the first compute capability with tensor cores (Volta)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags


@dataclass(frozen=True)
class DeviceFacts:
    """What decides the precision: the first accelerator (or the CPU) the backend trains on."""

    kind: str  # gpu, tpu or cpu
    name: str = ""
    compute_capability: tuple[int, int] | None = None  # GPUs
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    backend: str = "tensorflow"


@dataclass(frozen=True)
class Precision:
    """The dtype policy a job trains with, and why."""

    policy: str
    reason: str


def bf16_keeps_accuracy(measured: dict[str, float] = BF16_CPU_MEASURED) -> bool:
    """Whether mixed_bfloat16 stayed within BF16_TOLERANCE of float32 on the real set."""
    return measured["float32"] - measured["mixed_bfloat16"] <= BF16_TOLERANCE


def choose_precision(requested: str, facts: DeviceFacts, bf16_ok: bool | None = None) -> Precision:
    """`requested` as it is, or for `auto` the policy of the module's rules on `facts`."""
    if requested != "auto":
        return Precision(requested, "set by trainer.precision")
    if facts.kind == "gpu":
        capability = facts.compute_capability or (0, 0)
        shown = ".".join(map(str, capability))
        if capability >= TENSOR_CORES:
            return Precision(
                "mixed_float16", f"GPU {facts.name} has tensor cores (compute capability {shown})"
            )
        return Precision("float32", f"GPU {facts.name} has no tensor cores (capability {shown})")
    if facts.kind == "tpu":
        return Precision("mixed_bfloat16", "TPUs compute in bfloat16")
    native = sorted(NATIVE_BF16_FLAGS & facts.cpu_flags)
    if not native:
        return Precision("float32", f"CPU {facts.name} has no native bfloat16")
    if facts.backend != "tensorflow":
        return Precision(
            "float32",
            f"CPU bfloat16 ({', '.join(native)}) measured only under TensorFlow's oneDNN kernels",
        )
    ok = bf16_keeps_accuracy() if bf16_ok is None else bf16_ok
    if not ok:
        return Precision(
            "float32",
            f"CPU has native bfloat16 ({', '.join(native)}) but mixed_bfloat16 lost more than "
            f"{BF16_TOLERANCE} val mean IoU to float32 on the digit scenes",
        )
    return Precision(
        "mixed_bfloat16",
        f"CPU has native bfloat16 ({', '.join(native)}) and mixed_bfloat16 kept float32's val "
        f"mean IoU within {BF16_TOLERANCE} on the digit scenes",
    )


def job_precision(requested: str) -> Precision:
    """trainer.precision resolved on this process's backend and device."""
    import keras

    return choose_precision(requested, device_facts(keras.backend.backend()))


def log_backend_and_precision(outbox: "Outbox", requested: str, resume: bool) -> Precision:
    """Log the Keras backend (param keras.backend) and the policy the job trains with (param
    trainer.precision_used, the reason as a tag); for auto, also say it on the console."""
    import keras

    outbox.params({"keras.backend": keras.backend.backend()})
    precision = job_precision(requested)
    outbox.tags({"trainer.precision_used": precision.policy, "precision.reason": precision.reason})
    if not resume:  # a param of the first attempt; a resumed one may be on another device
        outbox.params({"trainer.precision_used": precision.policy})
    if requested == "auto":
        print(f"segexp: trainer.precision=auto: {precision.policy} ({precision.reason})")
    return precision


@functools.cache
def device_facts(backend: str) -> DeviceFacts:
    """The device the backend trains on: its first GPU (or TPU) if it has one, else the CPU."""
    accelerator = _accelerator(backend)
    if accelerator is not None:
        return accelerator
    name, flags = cpu_info()
    return DeviceFacts("cpu", name, cpu_flags=flags, backend=backend)


def _accelerator(backend: str) -> DeviceFacts | None:
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "tpu":
            return DeviceFacts("tpu", device.device_kind, backend=backend)
        if device.platform in ("gpu", "cuda", "rocm"):
            capability = getattr(device, "compute_capability", "0.0")
            return DeviceFacts("gpu", device.device_kind, _capability(capability), backend=backend)
        return None
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(0)
        return DeviceFacts("gpu", name, tuple(torch.cuda.get_device_capability(0)), backend=backend)
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return DeviceFacts("tpu", "TPU", backend=backend)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    return DeviceFacts("gpu", details.get("device_name", gpus[0].name), tuple(capability),
                       backend=backend)  # fmt: skip


def _capability(text: object) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major or 0), int(minor or 0)


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (Linux); unknown elsewhere."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return os.uname().machine, frozenset()
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


def peak_device_memory_mib(backend: str) -> float | None:
    """The most memory the backend's first accelerator has held in this process (MiB), or
    None on a CPU or where the backend does not say."""
    facts = device_facts(backend)
    if facts.kind == "cpu":
        return None
    if backend == "jax":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    elif backend == "torch":
        import torch

        peak = torch.cuda.max_memory_allocated(0)
    else:
        import tensorflow as tf

        name = "GPU:0" if facts.kind == "gpu" else "TPU:0"
        peak = tf.config.experimental.get_memory_info(name).get("peak")
    return None if peak is None else float(peak) / 2**20
