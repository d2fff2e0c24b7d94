"""Micro-batching: concurrent single-row calls share backend calls and still get their own answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import edge_runtime


def test_concurrent_calls_are_batched_and_each_gets_its_own_answer(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, microbatch_max_size=8, microbatch_max_wait_ms=5.0) as rt:
        be = rt.model.backend
        errors: list[str] = []
        start = threading.Barrier(8)

        def work(k: int) -> None:
            start.wait()
            for i in range(50):
                a = float(k * 1000 + i)
                p = rt.predict({"a": a, "b": 0.5})
                if p.value != a + 0.5 or p.source != "model":
                    errors.append(f"{a}: {p}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        mb = rt.metrics()["microbatch"]
        assert mb["rows"] == 400 and be.calls == mb["batches"] < 400  # rows really shared calls
        assert mb["mean_batch"] > 1.5
        assert rt.metrics()["predictions"]["model"] == 400


def test_microbatch_fault_and_deadline_still_fall_back(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, microbatch_max_size=4, microbatch_max_wait_ms=1.0, timeout_ms=50,
                           fallback_default=-1.0, breaker_failures=0) as rt:
        be = rt.model.backend
        be.nan = True
        p = rt.predict({"a": 1.0, "b": 2.0})
        assert (p.source, p.reason) == ("fallback", "non_finite_output")
        be.nan = False
        be.delay_s = 1.0
        t0 = time.perf_counter()
        p = rt.predict({"a": 1.0, "b": 2.0})
        # answered without waiting for the stuck call (half of it is a 10x margin on the 50 ms deadline)
        assert (p.source, p.reason) == ("fallback", "timeout") and time.perf_counter() - t0 < be.delay_s / 2
        be.delay_s = 0.0
        time.sleep(1.1)
        assert rt.predict({"a": 1.0, "b": 2.0}).source == "model"
        assert rt.health()["live"] is True
    assert rt.health()["live"] is False  # closed
