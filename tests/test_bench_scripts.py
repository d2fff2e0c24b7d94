"""Smoke runs of the benchmark scripts behind the documented numbers, at tiny sizes, so they
cannot rot: each must run to the end and print its comparison table. (Their numbers at these
sizes mean nothing; the real runs are documented in docs/benchmarks.md.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

RUNS = {
    "bench_overhead.py": ["--runs", "50"],
    "bench_reliability.py": ["--runs", "200", "--seconds", "0.2", "--only", "single"],
    "bench_check.py": ["--runs", "100", "--rounds", "1"],
    "bench_tflite.py": ["--runs", "30", "--rounds", "1"],
    "bench_mqtt.py": ["--messages", "200", "--steady", "50"],
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_script_runs_at_tiny_size(script: str) -> None:
    if script == "bench_mqtt.py":
        from tests.mqtt_broker import MOSQUITTO

        if not __import__("pathlib").Path(MOSQUITTO).exists():
            pytest.skip(f"mosquitto is not installed at {MOSQUITTO} (apt-get install mosquitto)")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *RUNS[script]], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    # bench_check is itself a check: at a tiny size its verdict is noise, but it must reach one
    verdict = script == "bench_check.py" and r.returncode == 1 and "FAIL: bench's p50" in r.stdout
    assert r.returncode == 0 or verdict, r.stderr[-2000:]
    assert len(r.stdout.strip().splitlines()) >= 3, r.stdout
