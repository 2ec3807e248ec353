"""What machine a benchmark ran on: the same description in every bench/ report."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil

from migrator.sizes import MiB


def machine_info(**extra: object) -> dict[str, object]:
    """CPU, memory, Python and load, plus what the caller's figures depend on (`extra`)."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
        "memory_total_mib": psutil.virtual_memory().total // MiB,
        "load_average_1m": os.getloadavg()[0],
    }
