"""Keys, signatures and desired-state documents: what a device accepts and what it refuses."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import ConfigError, TrustError
from edge_runtime.updates.desired import Refused, check, is_older
from edge_runtime.updates.trust import KeyRing, canonical, keyid, load_private_key, load_public_key, sign_document
from tests.conftest import run_cli
from tests.updates_kit import Keys, make_keys, signed_artifact


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


def _ring(keys: Keys) -> KeyRing:
    return KeyRing.from_paths(artifact=[keys.artifact_pub], deployment=[keys.deploy_pub])


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: Keys) -> None:
    assert oct(os.stat(keys.artifact_key).st_mode & 0o777) == "0o600"
    pub = load_public_key(keys.artifact_pub)
    assert keyid(pub) == keyid(load_private_key(keys.artifact_key).public_key())
    with pytest.raises(ConfigError, match="never overwrites"):
        from edge_runtime.updates.trust import generate

        generate(keys.artifact_key.parent, "artifact")


def test_a_signed_artifact_verifies_and_any_change_breaks_it(tmp_path: Path, keys: Keys) -> None:
    ring = _ring(keys)
    art = signed_artifact(tmp_path / "a", "1", keys)
    assert ring.verify_artifact(art) == keyid(load_public_key(keys.artifact_pub))
    # one byte of the manifest: the signature no longer verifies
    m = (art / "manifest.json").read_bytes()
    (art / "manifest.json").write_bytes(m.replace(b'"version": "1"', b'"version": "9"'))
    with pytest.raises(TrustError, match="does not verify"):
        ring.verify_artifact(art)
    (art / "manifest.json").write_bytes(m)
    # signed by a key the device does not trust for artifacts (the deployment key)
    other = KeyRing.from_paths(artifact=[keys.deploy_pub])
    with pytest.raises(TrustError, match="does not trust"):
        other.verify_artifact(art)
    (art / "manifest.sig").unlink()
    with pytest.raises(TrustError, match="not signed"):
        ring.verify_artifact(art)


def test_info_with_a_public_key_exit_0_valid_3_invalid(tmp_path: Path, keys: Keys) -> None:
    art = signed_artifact(tmp_path / "a", "1", keys)
    ok = run_cli("info", str(art), "--public-key", str(keys.artifact_pub))
    assert ok.returncode == 0 and "valid (key id" in ok.stdout
    bad = run_cli("info", str(art), "--public-key", str(keys.deploy_pub))
    assert bad.returncode == 3 and "does not trust" in bad.stderr


def test_keygen_and_sign_commands(tmp_path: Path) -> None:
    r = run_cli("keygen", "--out", str(tmp_path / "k"), "--name", "art")
    assert r.returncode == 0 and (tmp_path / "k/art.key").is_file() and "key id" in r.stdout
    art = signed_artifact(tmp_path / "a", "1", None)
    r = run_cli("sign", str(art), "--key", str(tmp_path / "k/art.key"))
    assert r.returncode == 0, r.stderr
    ring = KeyRing.from_paths(artifact=[tmp_path / "k/art.pub"])
    assert ring.verify_artifact(art)
    r = run_cli("sign", str(art), "--key", str(tmp_path / "k/art.pub"))  # a public key is no signing key
    assert r.returncode == 2 and "private key" in r.stderr


# -- desired-state documents ----------------------------------------------------------------------
def _doc(**over: Any) -> dict[str, Any]:
    d = {"type": "desired", "fleet": "acme", "target": {"device": "pi-1"}, "sequence": 10,
         "expires": "2099-01-01T00:00:00Z", "force": False,
         "artifact": {"name": "churn", "version": "7", "sha256": "a" * 64, "size_bytes": 10,
                      "manifest_sha256": "b" * 64, "url": None}}
    d.update(over)
    return d


def _check(signed: Any, keys: Keys, **kw: Any) -> Any:
    args = {"device": "pi-1", "fleet": "acme", "groups": ("eu",), "sequences": {}, **kw}
    return check(signed, _ring(keys), **args)


def test_a_good_document_is_accepted(keys: Keys) -> None:
    doc = _check(sign_document(_doc(), [load_private_key(keys.deploy_key)]), keys)
    assert doc.target_key == "device:pi-1" and doc.artifact.version == "7" and len(doc.update_id) == 16


@pytest.mark.parametrize("change, reason", [
    ({"fleet": "other"}, "for fleet"),
    ({"target": {"device": "pi-2"}}, "addressed to device"),
    ({"target": {"group": "us"}}, "addressed to group"),
    ({"target": {"all": False}}, "target must be"),
    ({"expires": "2020-01-01T00:00:00Z"}, "expired"),
    ({"expires": "tomorrow"}, "not an ISO 8601"),
    ({"sequence": -1}, "non-negative"),
    ({"type": "reboot"}, "unknown document type"),
    ({"artifact": {"name": "../x", "version": "1"}}, "artifact name"),
])
def test_documents_a_device_refuses(keys: Keys, change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        _check(sign_document(_doc(**change), [load_private_key(keys.deploy_key)]), keys)


def test_replayed_unsigned_forged_and_untrusted_documents_are_refused(keys: Keys, tmp_path: Path) -> None:
    signed = sign_document(_doc(), [load_private_key(keys.deploy_key)])
    with pytest.raises(Refused, match="replayed"):
        _check(signed, keys, sequences={"device:pi-1": 10})
    with pytest.raises(TrustError, match="unsigned"):
        _check({"doc": _doc(), "signatures": []}, keys)
    forged = copy.deepcopy(signed)
    forged["doc"]["artifact"]["version"] = "8"
    with pytest.raises(TrustError, match="does not verify"):
        _check(forged, keys)
    # an artifact key cannot sign deployments, and a stranger's key is nobody's
    with pytest.raises(TrustError, match="does not trust"):
        _check(sign_document(_doc(), [load_private_key(keys.artifact_key)]), keys)
    stranger = make_keys(tmp_path / "stranger")
    with pytest.raises(TrustError, match="does not trust"):
        _check(sign_document(_doc(), [load_private_key(stranger.deploy_key)]), keys)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=30))
def test_any_json_is_refused_with_a_reason_never_a_crash(value: Any) -> None:
    ring = KeyRing.from_paths()
    ring.deployment["x" * 64] = load_public_key(_KEYS.deploy_pub)
    for candidate in (value, {"doc": value, "signatures": value}, {"doc": {"a": value}, "signatures": [value]}):
        with pytest.raises((TrustError, Refused)) as e:
            check(candidate, ring, device="d", fleet="f", groups=(), sequences={})
        assert str(e.value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "fleet", "target", "sequence", "expires", "force", "artifact"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=30)
                       | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), max_size=7))
def test_signed_garbage_is_refused_with_a_reason(fields: dict[str, Any]) -> None:
    """Even correctly signed, a document with wrong fields never crashes the check."""
    signed = sign_document({**_doc(), **fields}, [load_private_key(_KEYS.deploy_key)])
    ring = _ring(_KEYS)
    try:
        check(signed, ring, device="pi-1", fleet="acme", groups=(), sequences={})
    except (Refused, TrustError) as exc:
        assert str(exc)


_KEYS = make_keys(Path(__import__("tempfile").mkdtemp(prefix="edge-keys-")))


def test_signing_bytes_are_the_sorted_compact_json() -> None:
    assert canonical({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    assert json.loads(canonical(_doc())) == _doc()


def test_version_order_pep440_else_created_at() -> None:
    assert is_older(("7", None), ("10", None))  # not string order
    assert not is_older(("1.10", None), ("1.9", None))
    assert is_older(("1.0rc1", None), ("1.0", None))
    t1, t2 = "2026-01-01T00:00:00Z", dt.datetime(2026, 6, 1, tzinfo=dt.UTC).isoformat()
    assert is_older(("blue", t1), ("green", t2)) and not is_older(("green", t2), ("blue", t1))


# -- key rotation -----------------------------------------------------------------------------------
def test_a_key_set_needs_a_current_key_and_a_new_key_and_a_higher_version(keys: Keys, tmp_path: Path) -> None:
    from edge_runtime.fleet.server import keyset_document

    ring = _ring(keys)
    new = make_keys(tmp_path / "new")
    ok = keyset_document("acme", 1, [new.artifact_pub], [new.deploy_pub], [keys.deploy_key, new.deploy_key])
    rotated = ring.rotate(ok, "acme")
    assert rotated.version == 1 and set(rotated.deployment) == {keyid(load_public_key(new.deploy_pub))}
    with pytest.raises(TrustError, match="not signed by any of its own keys"):
        ring.rotate(keyset_document("acme", 1, [new.artifact_pub], [new.deploy_pub], [keys.deploy_key]), "acme")
    with pytest.raises(TrustError, match="does not trust"):  # the new keys alone cannot introduce themselves
        ring.rotate(keyset_document("acme", 1, [new.artifact_pub], [new.deploy_pub], [new.deploy_key]), "acme")
    ring.replace_with(rotated)
    with pytest.raises(TrustError, match="not above the current 1"):
        ring.rotate(ok, "acme")
    with pytest.raises(TrustError, match="for fleet"):
        ring.rotate(ok, "other")
    assert KeyRing.from_keyset(ok).deployment.keys() == rotated.deployment.keys()
