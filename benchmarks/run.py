"""Run the speed benchmarks: the same as `aebonet bench`, as a script.

    python benchmarks/run.py --quick --out bench.json
    python benchmarks/run.py --gpu-check --out bench-gpu.json
    python benchmarks/run.py --out bench-full.json --demo fp32 bf16 --gpu-json bench-gpu.json

See benchmarks/README.md for what each measurement is; the work is done by aebonet_lib._engine.bench.
"""

from __future__ import annotations

import sys

from aebonet_lib._engine.cli import main

if __name__ == "__main__":  # worker processes started by "spawn" import this file: they must not run the bench
    sys.exit(main(["bench", *sys.argv[1:]]))
