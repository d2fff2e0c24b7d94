"""Progress bars for long benchmark runs, on a terminal only (stderr)."""

from __future__ import annotations

import os
import sys
from typing import Any


class ProgressBars:
    """A ``ProgressSink``: one tqdm bar per description, opened on the first report.

    The runner reports every half second, so runs shorter than that never show a bar.
    """

    def __init__(self) -> None:
        self._desc: str | None = None
        self._bar: Any = None

    def __call__(self, desc: str, done: float, total: float, unit: str) -> None:
        from tqdm import tqdm

        if desc != self._desc:
            self.close()
            self._desc = desc
            fmt = "{l_bar}{bar}| {n:.1f}/{total:.1f} s" if unit == "s" else None
            # a serial console or a fresh pty can report 0 columns, where tqdm would draw nothing
            try:
                width = os.get_terminal_size(sys.stderr.fileno()).columns
            except (OSError, ValueError):
                width = 0
            size = {"dynamic_ncols": True} if width > 0 else {"ncols": 80, "nrows": 24}
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                             **size, **({"bar_format": fmt} if fmt else {}))
        self._bar.n = min(done, total)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._desc = None
