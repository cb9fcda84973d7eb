"""Peak memory of a measured run: CUDA's max allocated on a GPU, the process's peak RSS on
CPU. The one helper every benchmark uses, so their memory columns mean the same thing."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def reset_peak(device) -> None:
    """Start a CUDA peak from here (a process's peak RSS cannot be reset: run each
    measurement in its own process)."""
    if _is_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float:
    """CUDA max allocated since :func:`reset_peak` (GPU), else this process's peak RSS."""
    if _is_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def memory_kind(device) -> str:
    """What :func:`peak_memory_gib` measures on ``device``, for reports."""
    return "cuda max_memory_allocated" if _is_cuda(device) else "process peak RSS"


def rss_gib() -> float:
    """This process's resident memory now (peak RSS where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return peak_memory_gib("cpu")
