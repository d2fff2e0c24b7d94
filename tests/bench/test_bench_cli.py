"""`edge-runtime bench` as a user runs it: outputs, files, and one clear line on bad input."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

FAST = ["--runs", "30", "--warmup", "2", "--rows", "32"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # end to end in fresh interpreters
def test_json_csv_and_plot_from_a_sweep(bench_artifacts: dict[str, Path], tmp_path: Path) -> None:
    fp32, int8 = str(bench_artifacts["fp32"]), str(bench_artifacts["int8"])
    hist, png = tmp_path / "history.csv", tmp_path / "latency.png"
    r = run_cli("bench", fp32, int8, *FAST, "--threads", "1,2", "--json", "--csv", str(hist), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    combos = [(Path(m["artifact"]).name, m["threads"], m["batch_size"]) for m in report["results"]]
    assert combos == [("iris-fp32", 1, 1), ("iris-fp32", 2, 1), ("iris-int8", 1, 1), ("iris-int8", 2, 1)]
    assert all(m["latency"]["runs"] == 30 for m in report["results"])
    assert report["device"]["threads"] == [1, 2] and report["settings"]["runs"] == 30
    with open(hist, newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    width, height = _png_size(png)
    assert width >= 800 and height >= 300


@pytest.mark.slow  # end to end in fresh interpreters
def test_table_isolated_with_input_and_labels(bench_artifacts: dict[str, Path], tmp_path: Path,
                                             iris_rows: tuple[list[list[float]], list[int]]) -> None:
    X, y = iris_rows
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(X)
    (tmp_path / "labels.txt").write_text("\n".join(map(str, y)) + "\n")
    r = run_cli("bench", str(bench_artifacts["fp32"]), str(bench_artifacts["int8"]), "--runs", "30", "--warmup",
                "2", "--isolate", "--input", str(tmp_path / "rows.csv"), "--labels", str(tmp_path / "labels.txt"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in ("device ", "software ", "Latency per call (ms)", "p99.9", "accuracy", "agree", "iris-int8"):
        assert needle in out, needle
    fp32_line = next(line for line in out.splitlines() if line.startswith("iris-fp32") and "onnx" in line)
    assert fp32_line.rstrip().endswith("%") and " ref " in fp32_line  # accuracy on the reference row
    assert "start-up" in out and "reference histograms" not in out  # rows came from --input


def test_bad_arguments_exit_2_with_one_clear_line(bench_artifacts: dict[str, Path]) -> None:
    fp32 = str(bench_artifacts["fp32"])
    r = run_cli("bench", fp32, "--runs", "0")
    assert r.returncode == 2 and "argument --runs: must be at least 1, got 0" in r.stderr
    r = run_cli("bench", str(bench_artifacts["noref"]), *FAST)
    assert r.returncode == 2 and "no reference histograms" in r.stderr and "--input FILE" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_more_bad_arguments_in_process(bench_artifacts: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The same parser and error path as the command, without paying a new interpreter per case."""
    from edge_runtime.cli import main

    fp32 = str(bench_artifacts["fp32"])
    cases = [
        (["--threads", "1,x"], "argument --threads: expected comma-separated whole numbers"),
        (["--batch-size", "0"], "argument --batch-size: each value must be at least 1"),
        (["--runs", "5", "--duration", "1"], "not allowed with argument"),
        (["--duration", "-1"], "argument --duration: must be a positive number of seconds"),
        (["--labels", "x.csv"], "--labels needs --input"),
        (["--plot", str(tmp_path / "x.svg")], "must end in .png"),
        (["--backend", "cuda"], "argument --backend: invalid choice"),
    ]
    for args, message in cases:
        try:
            code = main(["bench", fp32, *args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err, (args, err)


def test_plot_without_matplotlib_names_the_extra(bench_artifacts: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "no_matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    from tests.conftest import ROOT

    r = run_cli("bench", str(bench_artifacts["fp32"]), *FAST, "--plot", str(tmp_path / "p.png"),
                env={"PYTHONPATH": f"{blocker}:{ROOT}"})
    assert r.returncode == 2
    assert "pip install 'edge-runtime[plot]'" in r.stderr and not (tmp_path / "p.png").exists()


def test_unreadable_artifacts_exit_3(bench_artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bench_artifacts["fp32"], broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    r = run_cli("bench", str(bench_artifacts["fp32"]), str(broken), *FAST)
    assert r.returncode == 3 and "sha256 mismatch" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("bench", str(tmp_path / "missing"), *FAST)
    assert r.returncode == 3 and "no such artifact directory" in r.stderr


def test_wrong_backend_and_wrong_rows_in_process(bench_artifacts: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.cli import main

    assert main(["bench", str(bench_artifacts["fp32"]), "--backend", "tflite", *FAST]) == 3
    assert "--backend tflite was asked for but this artifact is for 'onnx'" in capsys.readouterr().err
    np.save(tmp_path / "rows.npy", np.zeros((2, 3)))
    assert main(["bench", str(bench_artifacts["fp32"]), "--input", str(tmp_path / "rows.npy"), *FAST]) == 2
    assert "expected 4 values per row" in capsys.readouterr().err


@pytest.mark.slow  # end to end in fresh interpreters
def test_progress_bar_on_a_terminal_only(bench_artifacts: dict[str, Path]) -> None:
    """stderr on a pseudo-terminal gets a tqdm bar during a 1.5 s run; a pipe gets none."""
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "bench", str(bench_artifacts["fp32"]),
                             "--duration", "1.5", "--json"], stdout=subprocess.PIPE, stderr=slave, env=env,
                            cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "iris-fp32 threads=1 batch=1" in terminal and "/1.5 s" in terminal, terminal
    assert json.loads(out)["results"][0]["latency"]["runs"] > 0
    piped = run_cli("bench", str(bench_artifacts["fp32"]), "--duration", "0.8", "--json")
    assert piped.returncode == 0 and "batch=1" not in piped.stderr
