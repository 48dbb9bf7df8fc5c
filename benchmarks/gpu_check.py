"""Time the paper's models on a GPU through Keras 3's JAX backend; write rows `aebonet bench --gpu-json` reads.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out gpu.json

Why JAX and not TensorFlow: the course trains with TensorFlow, but the GPU machines lent to
this project carry JAX and PyTorch and no TensorFlow, and TensorFlow's wheel (about 600 MB
with its CUDA libraries) is far over what can be carried there. Keras 3 runs the very same
model code (`aebonet_lib.paper`) on JAX, so this measures our architecture on the GPU; XLA
compiles every step, as TensorFlow's `--jit` would. Expect TensorFlow's own numbers to differ.

It measures, on the first GPU:
- the card's achievable matmul and convolution rates in fp32, bf16 and fp16 (jax.numpy / lax);
- training throughput of the paper's autoencoder (256 px, width 1, each decoder) and of the
  regressor, in each precision, at the paper's batch sizes and larger ones.
The JSON is rewritten after every measurement, so a run cut short keeps what it measured.

With `--real PACK` it instead trains the `colab` preset on real radiographs within `--minutes`
(default 8): a budgeted pretraining and fine-tuning, as `aebonet pretrain/train --budget` plan
them, then the validation and test MAE (benchmarks/gpu_real.py; PACK is written by
benchmarks/pack_rsna.py). That mode runs on TensorFlow where it is installed, else on JAX.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

REAL = "--real" in sys.argv  # the real-data check: the course's TensorFlow where installed, else JAX
os.environ.setdefault("KERAS_BACKEND", "tensorflow" if REAL and importlib.util.find_spec("tensorflow") else "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from aebonet_lib import paper  # noqa: E402
from aebonet_lib._engine import flops as measures  # noqa: E402
from aebonet_lib.config import get_config  # noqa: E402

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # jax.numpy's names
TRAIN_STEP_FACTOR = 3  # a training step: forward, and a backward pass costing about twice the forward


def device_name() -> str:
    """Return the first accelerator's name as the bench rows spell it."""
    import jax

    device = jax.devices()[0]
    return f"GPU: {device.device_kind}" if device.platform == "gpu" else "CPU"


def timed(run, repeats: int) -> list[float]:
    """Return the seconds of `repeats` calls of `run`, each waited for to the end."""
    import jax

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak(precision: str, n: int, repeats: int) -> dict:
    """Return the achieved TFLOP/s of an n x n x n matrix product in one precision."""
    import jax

    a = jax.random.normal(jax.random.key(0), (n, n), DTYPES[precision])
    product = jax.jit(lambda x: x @ x)
    jax.block_until_ready(product(a))
    seconds = timed(lambda: product(a), repeats)
    return {"op": "matmul", "precision": precision, "shape": [n, n, n], "seconds": seconds,
            "tflops": 2 * n**3 / statistics.median(seconds) / 1e12}


def conv_peak(precision: str, batch: int, side: int, channels: int, repeats: int) -> dict:
    """Return the achieved TFLOP/s of a 3x3 same convolution shaped like the decoder's heaviest layers."""
    import jax

    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels), DTYPES[precision])
    w = jax.random.normal(jax.random.key(1), (3, 3, channels, channels // 2), DTYPES[precision])
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    jax.block_until_ready(conv(x, w))
    seconds = timed(lambda: conv(x, w), repeats)
    flops = 2 * batch * side * side * 9 * channels * (channels // 2)
    return {"op": "conv3x3", "precision": precision, "shape": [batch, side, side, channels, channels // 2],
            "seconds": seconds, "tflops": flops / statistics.median(seconds) / 1e12}


def build(task: str, decoder: str, precision: str, image_size: int, width: float) -> keras.Model:
    """Build and compile the paper's autoencoder or from-scratch regressor under a precision policy."""
    config = get_config("paper", image_size=image_size, width=width, decoder=decoder, precision=precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        if task == "autoencoder":
            model = paper.build_autoencoder(config)
        else:
            model = paper.build_scratch_regressor(config, y_mean=127.0, y_std=41.0)
    finally:
        keras.config.set_dtype_policy(previous)
    lr = config.ae_lr if task == "autoencoder" else config.reg_lr
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def training_row(task: str, decoder: str, precision: str, batch: int, steps: int, repeats: int,
                 image_size: int, width: float) -> dict:
    """Return the images/s and GFLOP/s of training one model, timed after a warm-up epoch that compiles it."""
    import jax

    model = build(task, decoder, precision, image_size, width)
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps, image_size, image_size, 1), dtype=np.float32)
    y = x if task == "autoencoder" else rng.uniform(1, 228, len(x)).astype(np.float32)
    fit = lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False).history["loss"][-1]  # noqa: E731
    start = time.perf_counter()
    fit()
    compile_seconds = time.perf_counter() - start
    seconds = [timed(fit, 1)[0] for _ in range(repeats)]
    images_per_s = batch * steps / statistics.median(seconds)
    flops = measures.count_flops(model)
    return {"task": task, "image_size": image_size, "width": width, "decoder": decoder, "precision": precision,
            "jit": True, "xla": True, "batch_size": batch, "steps": steps, "warmup": steps, "repeats": repeats,
            "device": device_name(), "backend": f"keras {keras.__version__} on jax {jax.__version__}",
            "seconds": seconds, "first_epoch_seconds": compile_seconds, "images_per_s": images_per_s,
            "forward_gflop_per_image": flops / 1e9, "train_gflops": TRAIN_STEP_FACTOR * flops * images_per_s / 1e9}


def plan(quick: bool) -> list[tuple]:
    """Return the training cases (task, decoder, precision, batch) to time, most important first."""
    cases = [("autoencoder", "upsample_conv", p, 8) for p in ("bf16", "fp32", "fp16")]
    cases += [("regressor", "upsample_conv", p, 16) for p in ("bf16", "fp32")]
    cases += [("autoencoder", "upsample_conv", "bf16", 32), ("autoencoder", "conv_upsample", "bf16", 8),
              ("autoencoder", "transpose", "bf16", 8), ("regressor", "upsample_conv", "bf16", 64)]
    return cases[:3] if quick else cases


def write(out: Path, result: dict) -> None:
    """Write the result as JSON (rewritten after each measurement)."""
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def main() -> int:
    """Measure the card's peaks, then training throughput, writing the JSON as it goes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul", type=int, default=8192)
    parser.add_argument("--quick", action="store_true", help="three training cases only")
    parser.add_argument("--real", type=Path, metavar="PACK",
                        help="train the colab preset on packed radiographs (benchmarks/pack_rsna.py) instead")
    parser.add_argument("--minutes", type=float, default=8.0, help="--real: the whole check's budget (default 8)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="--real: override a field of the colab preset (such as image_size=32); repeatable")
    args = parser.parse_args()
    if args.real:
        from gpu_real import run_real

        return run_real(args)
    import jax
    result = {"device": device_name(), "jax": jax.__version__, "keras": keras.__version__,
              "command": " ".join(sys.argv), "peaks": [], "training": []}
    for precision in ("fp32", "bf16", "fp16"):
        result["peaks"].append(matmul_peak(precision, args.matmul, args.repeats))
        result["peaks"].append(conv_peak(precision, 32, max(16, args.size // 2), 256, args.repeats))
        write(args.out, result)
    for task, decoder, precision, batch in plan(args.quick):
        try:
            row = training_row(task, decoder, precision, batch, args.steps, args.repeats, args.size, args.width)
        except Exception as e:  # keep measuring the other cases; the row says what failed
            row = {"task": task, "decoder": decoder, "precision": precision, "batch_size": batch, "error": repr(e)}
        print(json.dumps({k: row.get(k) for k in ("task", "decoder", "precision", "batch_size", "images_per_s",
                                                  "train_gflops", "error")}), flush=True)
        result["training"].append(row)
        write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
