"""Progress bars for long benchmark runs, on a terminal only (stderr)."""

from __future__ import annotations

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
            fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s" if unit == "s" else None
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                             dynamic_ncols=True, **({"bar_format": fmt} if fmt else {}))
        self._bar.n = min(done, total)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._desc = None
