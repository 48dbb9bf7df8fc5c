"""What this machine is: CPU model and vector extensions, cores, memory, GPUs, and the precision to train in.

Chapter 5 opens with `describe_machine()`: before asking how fast training is, ask what the
machine could do. `best_precision()` turns the answer into a choice: bfloat16 where
it pays (CPUs with AMX-BF16, GPUs of compute capability 8.0 and later), float16 on older GPUs with tensor cores (7.x), else float32.
TensorFlow is imported only by the functions that ask it about GPUs.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU flags (as /proc/cpuinfo spells them) that decide how fast the arithmetic of training can be.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# bfloat16 on a CPU pays for large models only. On this course's 2-core AMD EPYC (AVX512-BF16,
# no AMX), bf16 trains full-width models at 128-256 px 1.8-2.0x as fast as fp32, but the `cpu`
# preset (width 0.25) gains nothing (126 against 151 images/s), nor does the demo (2.3 against
# 2.6 min): benchmarks/results/cpu-epyc-2core-*.md. On an Intel Xeon with AMX-BF16, chapter 5
# measured the `cpu` preset in bf16 at 0.72x fp32. So `auto` picks bf16 on a CPU only for
# full-width models (width >= BF16_CPU_MIN_WIDTH) and only with native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_CPU_MIN_WIDTH = 1.0
BF16_GPU_CAPABILITY = (8, 0)  # Ampere (A100) and later: bfloat16 tensor cores
FP16_GPU_CAPABILITY = (7, 0)  # Volta and Turing: float16 tensor cores only


def parse_cpuinfo(text: str) -> dict:
    """Return the CPU model, its flags and the number of logical CPUs listed in /proc/cpuinfo text."""
    fields = [line.partition(":") for line in text.splitlines() if ":" in line]
    values: dict[str, list[str]] = {}
    for key, _, value in fields:
        values.setdefault(key.strip(), []).append(value.strip())
    flags = (values.get("flags") or values.get("Features") or [""])[0].split()
    model = (values.get("model name") or values.get("Model name") or [platform.processor() or "unknown"])[0]
    return {"model": model, "flags": sorted(flags), "logical_cpus": len(values.get("processor", []))}


def parse_meminfo(text: str) -> float | None:
    """Return the total memory in GiB from /proc/meminfo text, or None when it is not there."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20  # the value is in KiB
    return None


def read_text(path: str) -> str:
    """Return a file's text, or an empty string where it does not exist (not Linux)."""
    file = Path(path)
    return file.read_text() if file.is_file() else ""


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """Return this machine's CPU model, flags and logical CPU count."""
    info = parse_cpuinfo(read_text(cpuinfo_path))
    info["logical_cpus"] = info["logical_cpus"] or os.cpu_count() or 1
    return info


def available_cpus() -> int:
    """Return the number of CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def memory_gib(meminfo_path: str = "/proc/meminfo") -> float | None:
    """Return the machine's total memory in GiB (None where unknown)."""
    return parse_meminfo(read_text(meminfo_path))


def gpu_info() -> list[dict]:
    """Return each GPU TensorFlow sees: its name and compute capability (as a list [major, minor])."""
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        gpus.append({"name": details.get("device_name", device.name),
                     "compute_capability": list(capability) if capability else None})
    return gpus


def has_native_bf16(flags) -> bool:
    """Tell whether a CPU with these flags computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def gpu_precision(capability) -> str:
    """Return the precision for a GPU of this compute capability: bf16 from 8.0, fp16 on 7.x, else fp32."""
    capability = tuple(capability or (0, 0))
    if capability >= BF16_GPU_CAPABILITY:
        return "bf16"
    return "fp16" if capability >= FP16_GPU_CAPABILITY else "fp32"


def best_precision(gpus: list[dict] | None = None, cpu_flags=None, width: float | None = None) -> str:
    """Return "bf16", "fp16" or "fp32": the precision measured fastest on this hardware for a model of this width.

    With GPUs, the first GPU decides (training runs there); without, the CPU's flags and
    the model's width multiplier (None: a small, CPU-sized model): bf16 only for
    full-width models on a CPU with native bf16. Pass `gpus` (as `gpu_info` returns them)
    and `cpu_flags` to decide for another machine.
    """
    gpus = gpu_info() if gpus is None else gpus
    if gpus:
        return gpu_precision(gpus[0]["compute_capability"])
    flags = cpu_info()["flags"] if cpu_flags is None else cpu_flags
    large = width is not None and width >= BF16_CPU_MIN_WIDTH
    return "bf16" if large and has_native_bf16(flags) else "fp32"


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (None where the system has none): busy machines time badly."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def library_versions() -> dict:
    """Return the versions of Python, NumPy, TensorFlow and Keras, and whether fp32 may run as TF32 on GPUs."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled()}


def describe_machine() -> dict:
    """Return what this machine is, as a JSON-friendly dict: CPU, flags that matter, cores, memory, GPUs (chapter 5)."""
    cpu = cpu_info()
    gpus = gpu_info()
    return {
        "cpu_model": cpu["model"],
        "cpu_flags": {flag: flag in cpu["flags"] for flag in CPU_FLAGS},
        "logical_cpus": cpu["logical_cpus"],
        "available_cpus": available_cpus(),
        "memory_gib": memory_gib(),
        "gpus": gpus,
        "best_precision": best_precision(gpus, cpu["flags"]),
        "platform": platform.platform(),
        "versions": library_versions(),
    }
