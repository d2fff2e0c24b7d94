"""Resident memory of this process: now, and the peak since the last reset.

Linux: VmRSS and VmHWM from /proc/self/status, and the peak is reset by writing "5" to
/proc/self/clear_refs (Linux 4.0+), so one process can measure the peak of each model in
turn. Elsewhere: ``resource.getrusage`` gives a peak that never goes down, and no current RSS.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


@dataclass(frozen=True)
class MemorySample:
    rss_bytes: int | None  # None where the platform cannot tell
    peak_bytes: int | None


def sample() -> MemorySample:
    try:
        with open(_STATUS) as f:
            status = f.read()
    except OSError:
        return MemorySample(None, _rusage_peak())
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024  # always kB
    return MemorySample(values.get("VmRSS"), values.get("VmHWM", _rusage_peak()))


def reset_peak() -> bool:
    """Reset the peak to the current RSS; False where the peak is monotonic."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError as exc:
        log.debug("cannot reset peak RSS (%s); peaks are since process start", exc)
        return False


def _rusage_peak() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, kB on Linux
