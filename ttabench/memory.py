"""Peak memory of a run: CPU resident set size and CUDA allocations, for the cost columns.

The process's RSS high-water mark (``VmHWM``) would include whatever ran before in the same
process (earlier runs of a basic-launcher sweep), so it is reset where Linux allows it (writing
5 to ``/proc/self/clear_refs``, Linux >= 4.0); where it does not, ``getrusage``'s lifetime peak
is reported and is an upper bound. CUDA's peak counter is reset the same way.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


class PeakMemory:
    """Start measuring at construction; ``peaks()`` gives ``peak_rss_mb`` and ``cuda_max_mb``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> dict[str, float]:
        cuda = (
            torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.device.type == "cuda"
            else float("nan")
        )
        return {"peak_rss_mb": round(_peak_rss_mb(), 1), "cuda_max_mb": round(cuda, 1)}


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """The process's resident set now (MB; Linux), else its peak."""
    now = _status_mb("VmRSS")
    return now if now is not None else _peak_rss_mb()


def _status_mb(key: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MB (None where there is none)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return None
