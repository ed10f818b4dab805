"""`repro data verify`'s hashing vs `sha256sum` over the same files, side by side in one run.

The data set is written once (random bytes: 4 files of 128 MiB and 2,000 files of 441 KiB, the
shape of ESC-50), the page cache is warmed by one untimed pass, then both are timed alternately.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.hashing import default_jobs, hash_files


def _make(root: Path) -> dict[str, Path]:
    rng = np.random.Generator(np.random.PCG64(0))
    files = {}
    for i in range(4):
        p = root / f"big-{i}.bin"
        p.write_bytes(rng.integers(0, 256, size=128 << 20, dtype=np.uint8).tobytes())
        files[p.name] = p
    small = rng.integers(0, 256, size=441_044, dtype=np.uint8).tobytes()
    (root / "audio").mkdir()
    for i in range(2000):
        p = root / "audio" / f"clip-{i}.wav"
        p.write_bytes(small[i % 997:] + small[: i % 997])
        files[f"audio/{p.name}"] = p
    return files


def run(rounds: int = 3) -> dict[str, Any]:
    if not shutil.which("sha256sum"):
        raise RuntimeError("sha256sum is not installed")
    root = Path(tempfile.mkdtemp(prefix="repro-bench-hash-"))
    try:
        files = _make(root)
        total = sum(p.stat().st_size for p in files.values())
        listing = [str(p) for p in files.values()]
        hash_files(files)  # warm the page cache
        ours, theirs = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            hash_files(files)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["sha256sum", *listing], check=True, capture_output=True)
            theirs.append(time.perf_counter() - started)
        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        return {
            "files": len(files),
            "bytes": total,
            "jobs": default_jobs(),
            "repro_seconds_median": med_ours,
            "sha256sum_seconds_median": med_theirs,
            "repro_mb_per_s": total / med_ours / 1e6,
            "sha256sum_mb_per_s": total / med_theirs / 1e6,
            "ratio": med_ours / med_theirs,
            "target": "within 1.25x of sha256sum (ratio <= 1.25)",
            "met": med_ours <= 1.25 * med_theirs,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
