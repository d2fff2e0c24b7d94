"""Smoke runs of the benchmark scripts behind the documented numbers, at tiny sizes, so they
cannot rot: each must run to the end and print its comparison table. (Their numbers at these
sizes mean nothing; the real runs are documented in docs/benchmarks.md.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.bench_docs import PAGE, blocks, table_headers
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

RUNS = {
    "bench_overhead.py": ["--runs", "50", "--models", "1"],
    "bench_reliability.py": ["--runs", "200", "--seconds", "0.2", "--only", "single"],
    "bench_check.py": ["--runs", "100", "--rounds", "1"],
    "bench_tflite.py": ["--runs", "30", "--rounds", "1", "--models", "1", "--modes", "none"],
    "bench_mqtt.py": ["--messages", "200", "--steady", "50"],
    "bench_updates.py": ["--sizes", "1", "--swap-seconds", "0.3"],
    "bench_faults.py": ["--rounds", "1", "--per-round", "20"],
    "bench_pipelines.py": ["--messages", "200", "--paced", "50", "--rate", "200"],
    "bench_serve.py": ["--seconds", "1"],
    "bench_experiment.py": ["--runs", "200", "--rounds", "1"],
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_script_runs_at_tiny_size(script: str) -> None:
    if script in ("bench_mqtt.py", "bench_updates.py", "bench_faults.py", "bench_pipelines.py"):
        from tests.mqtt_broker import MOSQUITTO

        if not __import__("pathlib").Path(MOSQUITTO).exists():
            pytest.skip(f"mosquitto is not installed at {MOSQUITTO} (apt-get install mosquitto)")
    if script == "bench_serve.py" and __import__("shutil").which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk; scripts/test.sh does)")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *RUNS[script]], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    # bench_check is itself a check: at a tiny size its verdict is noise, but it must reach one
    verdict = script == "bench_check.py" and r.returncode == 1 and "FAIL: bench's p50" in r.stdout
    assert r.returncode == 0 or verdict, r.stderr[-2000:]
    assert len(r.stdout.strip().splitlines()) >= 3, r.stdout
    # the page that documents the numbers shows this script's tables with the columns it prints
    documented = [body for s, _, body in blocks(PAGE.read_text()) if s == script]
    assert documented, f"docs/benchmarks.md has no <!-- bench: {script} ... --> block"
    for body in documented:
        if body.strip():  # a block not generated yet has nothing to compare
            assert set(table_headers(r.stdout)) <= set(table_headers(body)), (
                f"{script} now prints tables the page does not show: run python scripts/bench_docs.py")


def test_every_documented_benchmark_is_a_script_with_those_options() -> None:
    for script, args, _ in blocks(PAGE.read_text()):
        path = ROOT / "scripts" / script
        assert path.is_file(), script
        r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        for opt in (a for a in args if a.startswith("--")):
            assert opt in r.stdout, f"{script} has no option {opt} (docs/benchmarks.md uses it)"
