"""How fast the data pipeline is: building the cache from full-resolution PNGs, and reading batches from it.

    python benchmarks/cache_speed.py [--n 48] [--read-n 4096] [--repeats 3] [--workers N]

1. Cache build: N phantom radiographs written as 1600 x 2080 PNGs (the size of the RSNA
   images) are decoded, checked and shrunk to 256 x 256 by `cache.build_cache`, with every
   core busy; a fresh cache folder for each repeat, so every image is really decoded.
2. Batch reading: a 256 x 256 cache of `--read-n` images is read through
   `pipeline.make_tf_dataset` (shuffled, batched, no augmentation) for whole epochs; the
   issue asks for at least 5,000 images/s, so that the input never keeps a GPU waiting.
   With augmentation is printed too, for comparison.

Both figures are medians over the repeats, in images per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from aebonet_lib import phantom
from aebonet_lib._engine import cache, hardware, readers
from aebonet_lib.data import loading
from aebonet_lib.data.preprocess import PreprocessParams

FULL_SIZE = (2080, 1600)  # height, width of an RSNA radiograph
READ_TARGET = 5000  # images/s the batch reader must reach at 256 x 256


def time_build(raw: readers.RawDataset, params: PreprocessParams, folder: Path, workers: int) -> float:
    """Build a fresh cache of a dataset and return images per second."""
    start = time.perf_counter()
    built = cache.build_cache(raw.good_rows, params, folder, workers=workers, progress=False)
    return len(built.table) / (time.perf_counter() - start)


def build_speeds(work: Path, n: int, repeats: int, workers: int) -> list[float]:
    """Write n full-size phantom PNGs, then time `repeats` cache builds from them."""
    raw_dir = phantom.write_dataset(work / "raw", n, size=FULL_SIZE, seed=0, progress=False)
    raw = readers.read_dataset(raw_dir)
    return [time_build(raw, PreprocessParams(256), work / f"cache{r}", workers) for r in range(repeats)]


def reading_data(built: cache.Cache, n: int, folder: Path) -> loading.BoneAgeData:
    """Return a BoneAgeData of n cached 256 x 256 images (the built ones repeated) read from a memmap on disk."""
    rows = np.resize(np.arange(len(built.X)), n)
    path = folder / "read.npy"
    np.save(path, np.asarray(built.X)[rows])
    return loading.BoneAgeData(X=np.load(path, mmap_mode="r"), y=np.linspace(1, 228, n, dtype=np.float32),
                            male=(np.arange(n) % 2).astype(np.float32), ids=np.array([str(i) for i in range(n)]),
                            splits={"train": np.arange(n)}, params=built.params, source="benchmark")


def epoch_speed(ds, n: int) -> float:
    """Run one epoch through a tf.data pipeline and return images per second."""
    start = time.perf_counter()
    for x, _ in ds:
        pass
    _ = x.numpy()
    return n / (time.perf_counter() - start)


def read_speeds(prepared: loading.BoneAgeData, repeats: int, batch_size: int, augment: bool) -> list[float]:
    """Time whole epochs of shuffled batches (after one warm-up epoch); return images per second for each."""
    from aebonet_lib.data import pipeline

    ds = pipeline.make_tf_dataset(prepared, "train", batch_size, augment=augment, seed=0)
    epoch_speed(ds, len(prepared))  # warm-up: graph tracing, memmap pages into memory
    return [epoch_speed(ds, len(prepared)) for _ in range(repeats)]


def parse_args() -> argparse.Namespace:
    """Parse the benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48, help="full-size PNGs to cache (default 48)")
    p.add_argument("--read-n", type=int, default=4096, help="cached images per read epoch (default 4096)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per figure (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size for reading (default 64)")
    p.add_argument("--workers", type=int, default=hardware.available_cpus(), help="processes for the cache build")
    return p.parse_args()


def main() -> None:
    """Print the cache build speed and the batch reading speed, medians over repeats."""
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        builds = build_speeds(work, args.n, args.repeats, args.workers)
        print(f"cache build, {FULL_SIZE[1]}x{FULL_SIZE[0]} PNG -> 256x256, {args.workers} processes: "
              f"{statistics.median(builds):.1f} images/s (median of {args.repeats}: {', '.join(f'{s:.1f}' for s in builds)})")
        prepared = reading_data(cache.open_cache(work / "cache0"), args.read_n, work)
        for augment in (False, True):
            reads = read_speeds(prepared, args.repeats, args.batch_size, augment)
            label = "with augmentation" if augment else f"no augmentation (target {READ_TARGET}/s)"
            print(f"batches from the cache, 256x256, batch {args.batch_size}, {label}: "
                  f"{statistics.median(reads):,.0f} images/s (median of {args.repeats})")


if __name__ == "__main__":
    main()
