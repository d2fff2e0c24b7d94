"""``python -m edge_runtime.bench.worker``: one artifact's benchmark in its own process
(``edge-runtime bench --isolate``). Reads a JSON spec on stdin, writes one JSON result."""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    from edge_runtime.bench.runner import BenchSettings, run_artifact
    from edge_runtime.errors import EdgeRuntimeError, InvalidInput, ModelLoadError
    from edge_runtime.manifest import read_manifest
    from edge_runtime.rows import read_rows

    spec = json.loads(sys.stdin.read())
    s = spec["settings"]
    settings = BenchSettings(**{**s, "threads": tuple(s["threads"]), "batch_sizes": tuple(s["batch_sizes"]),
                                "isolate": False})
    out: dict[str, Any]
    try:
        m = read_manifest(spec["artifact"])
        rows = read_rows(spec["rows_file"], m.feature_names, m.feature_types)
        progress = _progress_bars() if spec.get("progress") and sys.stderr.isatty() else None
        try:
            run = run_artifact(spec["artifact"], rows, settings, progress=progress)
        finally:
            if progress is not None:
                progress.close()
        out = {"measurements": [x.to_dict(samples=True) for x in run.measurements], "values": run.values,
               "proba": None if run.proba is None else run.proba.tolist(), "task": run.task,
               "notes": run.notes}
        code = 0
    except ModelLoadError as exc:
        out = {"error": {"kind": "model", "path": exc.path, "reason": exc.reason, "hint": exc.hint}}
        code = 3
    except InvalidInput as exc:
        out = {"error": {"kind": "input", "message": str(exc)}}
        code = 2
    except EdgeRuntimeError as exc:
        out = {"error": {"kind": "other", "message": str(exc)}}
        code = 1
    sys.stdout.write(json.dumps(out, default=_default))
    return code


def _progress_bars():  # type: ignore[no-untyped-def]
    from edge_runtime.bench.progress import ProgressBars

    return ProgressBars()


def _default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


if __name__ == "__main__":
    sys.exit(main())
