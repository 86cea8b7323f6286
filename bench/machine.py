"""What every benchmark records about the machine its timings came from."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def proc_field(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name."""
    return proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def ram_gib() -> float | None:
    """Total memory in GiB."""
    mem = proc_field("/proc/meminfo", "MemTotal")
    return round(int(mem.split()[0]) / 2**20, 1) if mem else None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, library versions, GPU and load average."""
    import numpy
    import scipy
    import torch

    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "ram_gib": ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for a Markdown table header."""
    m = info or machine_info()
    gpu = m["gpu"] or "no GPU"
    return (f"{m['cpu']}, {m['cpus']} cores, {m['ram_gib']} GiB RAM, {gpu}; {m['platform']}; Python {m['python']}, "
            f"torch {m['torch']}, numpy {m['numpy']}, scipy {m['scipy']}")
