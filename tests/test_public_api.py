"""The public API is what it claims, and the device half stays light."""

from __future__ import annotations

import subprocess
import sys

import edge_runtime
from tests.conftest import ROOT


def test_exported_members_are_sorted_and_exist() -> None:
    assert edge_runtime.__all__ == sorted(edge_runtime.__all__)
    for name in edge_runtime.__all__:
        assert hasattr(edge_runtime, name), name


def test_every_error_is_an_edge_runtime_error() -> None:
    for name in edge_runtime.__all__:
        obj = getattr(edge_runtime, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, edge_runtime.EdgeRuntimeError), name


def test_import_does_not_pull_in_the_converters_stack() -> None:
    code = (
        "import sys, edge_runtime, edge_runtime.runtime, edge_runtime.cli\n"
        "heavy = ('mlflow', 'sklearn', 'pandas', 'tensorflow', 'torch', 'skl2onnx', 'onnx', 'converters',"
        " 'fastapi', 'matplotlib')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == ""
