"""What every benchmark shares: the machine it ran on, the CPU's matmul peak, and real task texts.

Benchmarks run both sides of a comparison in one process on the same machine and print a
markdown section; `python -m benchmarks.run_all` (`make bench`) collects them into
reports/benchmarks.md. Ratios, not absolute times, are the result: absolute times on a
shared 2-core machine move by tens of percent from one run to the next.
"""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from loramerge.config import Params  # noqa: E402
from loramerge.cpu import cpu_model  # noqa: E402


def machine_description() -> str:
    memory = (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else float("nan")
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def best_time(run, repeats: int) -> float:
    """The fastest of `repeats` timings of `run()`, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """This CPU's float32 matrix-multiply throughput, best of three rounds: the ceiling for a transformer."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best / 1e9


def task_texts(params: Params, task: str, split: str, limit: int) -> list[str]:
    """The first `limit` texts of a task's raw CSV split (no prepare stage needed)."""
    from loramerge.data import local_data_dir

    folder = local_data_dir(params)
    if folder is None or not (folder / task).is_dir():
        raise FileNotFoundError(f"benchmarks read task texts from data.local_dir; no folder {params.data.local_dir}")
    return pd.read_csv(folder / task / f"{split}.csv")["text"].astype(str).head(limit).tolist()


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}×"
