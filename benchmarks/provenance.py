#!/usr/bin/env python
"""What provenance costs at a run's start: the data fingerprints uncached (first run on a dataset) and cached (every
later run), side by side, and the rest of the record (git, versions). ``python benchmarks/provenance.py
--data-dir ../shared/data`` (any folder with ``cifar-10-batches-py/``; cifar10-full works too)."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.data.vision import CIFAR10DataModule  # noqa: E402
from labkit.run import provenance  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sources = CIFAR10DataModule(data_dir=args.data_dir).sources()
    if not sources:
        print(f"no CIFAR-10 batches under {args.data_dir}/cifar-10-batches-py", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in sources) / 1e6
    uncached, cached = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            uncached += timed(lambda: provenance.data(sources, cache), 1)  # noqa: B023
            cached += timed(lambda: provenance.data(sources, cache), 3)  # noqa: B023
    rest = timed(lambda: (provenance.code(), provenance.versions()), args.repeat)
    u, c, r = statistics.median(uncached), statistics.median(cached), statistics.median(rest)
    print(f"data: {len(sources)} files, {size:.0f} MB ({args.data_dir})")
    print(f"fingerprints uncached (first run on these files): {u * 1000:8.1f} ms  ({size / u:.0f} MB/s)")
    print(f"fingerprints cached (every later run):            {c * 1000:8.1f} ms  ({u / c:.0f}x faster)")
    print(f"git commit/diff + library versions:               {r * 1000:8.1f} ms")
    print(f"start-up cost once cached: {(c + r) * 1000:.1f} ms (target < 1000 ms): {'PASS' if c + r < 1 else 'FAIL'}")
    return 0 if c + r < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
