"""The device header printed with every report, so numbers from different devices compare."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

# environment variables that change how many threads the math libraries use
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ORT_NUM_THREADS")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    """'AMD EPYC', 'Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)', ... or the machine type."""
    info = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    board = fields.get("Model") or (_read("/proc/device-tree/model") or "").rstrip("\x00") or None
    cpu = fields.get("model name") or fields.get("Processor") or fields.get("cpu model")
    if cpu is None and "CPU part" in fields:
        cpu = _ARM_PARTS.get(fields["CPU part"].lower(), f"ARM part {fields['CPU part']}")
    cpu = cpu or platform.processor() or platform.machine() or "unknown"
    return f"{board} ({cpu})" if board and board not in cpu else cpu


_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
              "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xc07": "Cortex-A7", "0xc0f": "Cortex-A15"}


def memory_total_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def device_info(threads: list[int] | None = None) -> dict[str, Any]:
    """Everything about this machine and software that changes the numbers."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    mem = memory_total_bytes()
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    from edge_runtime.version import __version__

    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count() or 0,
        "cores_usable": usable,
        "memory_bytes": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "edge_runtime": __version__,
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "litert": _version("ai-edge-litert", "tflite-runtime") or "not installed",
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_temp_c": round(int(temp) / 1000, 1) if temp and temp.lstrip("-").isdigit() else None,
        "load_avg_1m": round(load[0], 2) if load else None,
        "threads": threads or [],
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }


def header_lines(info: dict[str, Any]) -> list[str]:
    mem = info.get("memory_bytes")
    lines = [
        f"device   {info['host']}: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{mem / 2**30:.1f} GiB" if mem else f"device   {info['host']}: {info['cpu']}, {info['cores']} cores",
        f"os       {info['os']}, Python {info['python']}",
        f"software edge-runtime {info['edge_runtime']}, {info['onnxruntime'] or 'onnxruntime not installed'}, "
        f"{info['litert']}, {info['numpy']}",
    ]
    env = ", ".join(f"{k}={v}" for k, v in info.get("thread_env", {}).items()) or "no thread env vars"
    extra = [f"governor {info['cpu_governor']}"] if info.get("cpu_governor") else []
    if info.get("cpu_temp_c") is not None:
        extra.append(f"{info['cpu_temp_c']} °C")
    if info.get("load_avg_1m") is not None:
        extra.append(f"load {info['load_avg_1m']}")
    lines.append(f"threads  intra-op {','.join(map(str, info.get('threads') or [])) or '?'} "
                 f"(inter-op 1), {env}" + (f"; {', '.join(extra)}" if extra else ""))
    return lines
