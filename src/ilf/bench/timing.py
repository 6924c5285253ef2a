"""Wall-clock timing and peak memory of a stretch of generation.

Seconds per image are the median of repeated calls after warm-up calls, with the device synchronised around
each call. Peak memory is CUDA's max-allocated on a GPU, and on the CPU the process's resident-set high-water
mark (`VmHWM`), reset before each method through `/proc/self/clear_refs` where Linux allows it; where it cannot
be reset the reading is the process's high-water mark so far, and is labelled so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rss_hwm_kib() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory between `reset()` and `read()`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = True

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS to the current RSS (Linux >= 4.0)
        except OSError:
            self.resettable = False

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20, "kind": "cuda_max_allocated"}
        kib = _rss_hwm_kib()
        kind = "process_rss_high_water" if self.resettable else "process_rss_high_water_since_start"
        return {"peak_mib": None if kib is None else kib / 1024, "kind": kind}
