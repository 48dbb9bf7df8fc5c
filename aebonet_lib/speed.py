"""Speed: how fast training runs, on which device, and what a schedule costs (chapter 5).

The functions a chapter calls to time training, pick a precision, count FLOPs and estimate a
schedule on another GPU. The code that does the work is the engine's (`aebonet_lib._engine`:
`bench` for measurements and estimates (`bench.estimates`), `devices` and `hardware` for the machine, `budget`
for `--budget MINUTES`, `flops` for counting); this module is the door a chapter goes through.
"""

from aebonet_lib._engine.bench.estimates import (
    estimate_schedule,
    measured_basis,
    measured_estimate,
    paper_flops,
    published_peak,
    schedule_flops,
)
from aebonet_lib._engine.bench.measure import build_compiled, measure_training, read_epoch
from aebonet_lib._engine.bench.plans import TRAIN_STEP_FACTOR, Contender, TrainCase, measured_results, race, rate
from aebonet_lib._engine.budget import (
    ASSUMED_EPOCH_SECONDS,
    ASSUMED_START_SECONDS,
    COMPILE_STEPS,
    GPUS,
    OVERSHOOT,
    TABLE_GPUS,
    TIMED_STEPS,
    estimate_table,
    method_check,
)
from aebonet_lib._engine.devices import (
    get_strategy,
    local_devices,
    precision_policy,
    resolve_precision,
    synchronize_batch_norm,
)
from aebonet_lib._engine.flops import count_flops, layer_flops
from aebonet_lib._engine.hardware import (
    BF16_GPU_CAPABILITY,
    FP16_GPU_CAPABILITY,
    available_cpus,
    best_precision,
    describe_machine,
    load_average,
)

__all__ = [
    "ASSUMED_EPOCH_SECONDS", "ASSUMED_START_SECONDS", "BF16_GPU_CAPABILITY", "COMPILE_STEPS", "Contender",
    "FP16_GPU_CAPABILITY", "GPUS", "OVERSHOOT", "TABLE_GPUS", "TIMED_STEPS", "TRAIN_STEP_FACTOR", "TrainCase",
    "available_cpus", "best_precision", "build_compiled", "count_flops", "describe_machine", "estimate_schedule",
    "estimate_table", "get_strategy", "layer_flops", "load_average", "local_devices", "measure_training",
    "measured_basis", "measured_estimate", "measured_results", "method_check", "paper_flops", "precision_policy",
    "published_peak", "race", "rate", "read_epoch", "resolve_precision", "schedule_flops", "synchronize_batch_norm",
]
