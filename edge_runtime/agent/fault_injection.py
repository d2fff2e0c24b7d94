"""Fault injection for tests: ``EDGE_RUNTIME_CRASH_AT=<state>`` makes the agent SIGKILL itself
when an update reaches that state, to prove every step resumes after a power cut."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


def crash_point(step: str) -> None:
    if os.environ.get("EDGE_RUNTIME_CRASH_AT") == step:
        log.warning("EDGE_RUNTIME_CRASH_AT=%s: killing this process now (fault injection)", step)
        os.kill(os.getpid(), signal.SIGKILL)
