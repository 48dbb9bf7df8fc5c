"""Measure how fast the phantom renders through `aebonet_lib.phantom.make_dataset`.

    .venv/bin/python benchmarks/phantom_speed.py [--n 3000] [--n-large 40] [--repeats 3] [--workers N] [--style raw]

For 256x256 and for 1600x2080 (the registered RSNA size) it prints the median over repeats of
images per second (wall clock) and of CPU milliseconds per image, summed over this process and
its worker processes (worker start-up included). On a shared machine the wall-clock rate drops
while the CPU time per image barely moves, so the script also prints the rate that CPU time
implies on the cores it may use: cores / CPU seconds per image.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from aebonet_lib import phantom
from aebonet_lib._engine import hardware


def cpu_seconds() -> float:
    """Return the CPU seconds used so far by this process and its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(n: int, size, workers: int | None, seed: int, style: str) -> tuple[float, float]:
    """Return (images per wall-clock second, CPU milliseconds per image) of one make_dataset call."""
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    phantom.make_dataset(n, size=size, seed=seed, workers=workers, progress=False, style=style)
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    return n / wall, 1000 * cpu / n


def report(label: str, n: int, size, workers: int | None, repeats: int, style: str) -> None:
    """Print the median rate and CPU time per image for one image size."""
    runs = [measure(n, size, workers, seed, style) for seed in range(repeats)]
    rate = statistics.median(r for r, _ in runs)
    cpu_ms = statistics.median(c for _, c in runs)
    cores = workers or hardware.available_cpus()
    print(f"{label}: {rate:.0f} images/s wall, {cpu_ms:.2f} ms CPU per image, "
          f"{1000 * cores / cpu_ms:.0f} images/s implied on {cores} idle cores "
          f"(n={n}, median of {repeats}, style {style})", flush=True)


def main() -> None:
    """Measure make_dataset at 256x256 and 1600x2080 and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="images per run at 256x256 (default 3000)")
    parser.add_argument("--n-large", type=int, default=40, help="images per run at 1600x2080 (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; the median is printed (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--style", default=phantom.DEFAULT_STYLE, choices=phantom.STYLES,
                        help=f"phantom style (default {phantom.DEFAULT_STYLE})")
    args = parser.parse_args()
    report("256x256", args.n, 256, args.workers, args.repeats, args.style)
    report("1600x2080", args.n_large, (2080, 1600), args.workers, args.repeats, args.style)


if __name__ == "__main__":  # worker processes are started with "spawn" and import this file
    main()
