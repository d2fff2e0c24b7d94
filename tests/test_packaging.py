"""The device wheel holds edge_runtime only (with py.typed); the converters are a distribution
of their own; the README's runtime dependency list is pyproject.toml's."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _wheel(project: Path, out: Path) -> zipfile.ZipFile:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(project)], capture_output=True, text=True, timeout=300, cwd=out)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("*.whl")
    return zipfile.ZipFile(whl)


def test_the_device_wheel_has_no_converters_package(tmp_path: Path) -> None:
    names = _wheel(ROOT, tmp_path).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"edge_runtime"}
    assert "edge_runtime/py.typed" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = [ln for ln in zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert not any(re.search(r"mlflow|scikit|skl2onnx|tensorflow|torch|psutil", r) for r in requires), requires


def test_the_converters_wheel_is_edge_convert(tmp_path: Path) -> None:
    names = _wheel(ROOT / "converters", tmp_path).namelist()
    top = {n.split("/")[0] for n in names}
    assert "converters" in top and "edge_runtime" not in top
    assert "converters/flavors/sklearn.py" in names
    assert any(n.startswith("edge_convert-") and n.endswith("entry_points.txt") for n in names)


def test_readme_lists_the_runtime_dependencies() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=;\[ ]", d)[0] for d in deps}
    install = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in sorted(names) if n not in install]
    assert not missing, f"README's Install section does not list {missing}"
