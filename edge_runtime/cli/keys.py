"""edge-runtime keygen --out DIR [--name NAME] ; edge-runtime sign DIR --key ARTIFACT_KEY"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    k = sub.add_parser(
        "keygen", help="make an Ed25519 key pair: NAME.key (mode 0600) and NAME.pub",
        description="Write an Ed25519 private key (PKCS#8 PEM, readable by you only) and its public key. "
        "Make one pair for artifacts (keep it offline, on the machine that converts) and one for "
        "deployments (used by publish); devices list the .pub files in [updates].",
        epilog="example: edge-runtime keygen --out keys --name artifact")
    k.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the two files")
    k.add_argument("--name", default="edge", help="file name stem (default: edge)")
    k.set_defaults(func=keygen)

    s = sub.add_parser(
        "sign", help="sign an artifact's manifest.json with an artifact key (writes manifest.sig)",
        description="Sign manifest.json; its sha256 covers the model file, so the signature covers both. "
        "The model file is checked against the manifest first. Signing again with another key adds "
        "its signature (for key rotation).",
        epilog="example: edge-runtime sign artifacts/churn --key keys/artifact.key")
    s.add_argument("dir", metavar="DIR", type=Path, help="artifact directory")
    s.add_argument("--key", required=True, type=Path, metavar="ARTIFACT_KEY", help="private key from keygen")
    s.set_defaults(func=sign)


def keygen(args: argparse.Namespace) -> int:
    from edge_runtime.updates.trust import generate, keyid, load_public_key

    key, pub = generate(args.out, args.name)
    print(f"private key {key} (keep it secret; mode 0600)")
    print(f"public key  {pub} (key id {keyid(load_public_key(pub))})")
    return 0


def sign(args: argparse.Namespace) -> int:
    from edge_runtime.manifest import verify_artifact
    from edge_runtime.updates.trust import keyid, load_private_key, sign_artifact

    key = load_private_key(args.key)
    m = verify_artifact(args.dir)
    path = sign_artifact(args.dir, key)
    print(f"signed {m.name} version {m.version}: {path} (key id {keyid(key.public_key())[:16]})")
    return 0
