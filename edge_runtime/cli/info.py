"""edge-runtime info DIR"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "info", help="show an artifact's manifest and verify its model file",
        description="Print the manifest summary and check the model file's size and sha256; with "
        "--public-key, check manifest.sig too. Exits 3 when the file does not match the manifest or "
        "the signature is missing, invalid or by another key.",
        epilog="example: edge-runtime info artifacts/iris --public-key keys/artifact.pub")
    p.add_argument("dir", metavar="DIR", help="artifact directory")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.add_argument("--public-key", action="append", default=[], metavar="PUB",
                   help="check manifest.sig against this public key (repeatable: any of them)")
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary(m: Any) -> list[tuple[str, str]]:
    q = m.quantization or {}
    par = m.parity or {}
    rows = [
        ("name", m.name), ("version", m.version), ("created", m.created_at),
        ("backend", m.backend), ("file", f"{m.file} ({m.size_bytes:,} bytes)"),
        ("task", m.task), ("features", f"{m.n_features}: {', '.join(m.feature_names)}"),
    ]
    if m.classes:
        rows.append(("classes", ", ".join(map(str, m.classes))))
    rows.append(("source", f"{m.source.get('uri', '?')} ({m.source.get('flavor', '?')})"))
    rows.append(("quantization", str(q.get("mode", "none"))))
    if par:
        rows.append(("parity", ", ".join(f"{k}={_fmt(v)}" for k, v in par.items()
                                         if not isinstance(v, (dict, list)))))
    if m.requires:
        rows.append(("requires", ", ".join(f"{k}>={v}" for k, v in m.requires.items())))
    return rows


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge_runtime.manifest import SIGNATURE_FILE, read_manifest, verify_artifact
    from edge_runtime.updates.trust import KeyRing

    m = read_manifest(args.dir)
    verify_artifact(args.dir, m)  # raises ArtifactIntegrityError -> exit 3
    signed = (Path(args.dir) / SIGNATURE_FILE).is_file()
    signature = "present (not checked: no key given)" if signed else "none"
    if args.public_key:  # TrustError -> exit 3
        kid = KeyRing.from_paths(artifact=[Path(p) for p in args.public_key]).verify_artifact(args.dir)
        signature = f"valid (key id {kid[:16]})"
    if args.json:
        print(json.dumps({"manifest": m.to_dict(), "verified": True, "signed": signed,
                          "signature": signature}, indent=2))
        return 0
    for k, v in summary(m):
        print(f"{k:>13}  {v}")
    print(f"{'sha256':>13}  {m.sha256} (verified)")
    print(f"{'signature':>13}  {signature}")
    return 0
