"""The manifest is the contract between converter and device: every damage is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime import ArtifactIntegrityError, ModelLoadError, read_manifest, verify_artifact
from edge_runtime.manifest import Manifest
from tests.conftest import write_fake_artifact


def test_round_trip_keeps_every_field_and_unknown_keys(fake_artifact: Path) -> None:
    raw = json.loads((fake_artifact / "manifest.json").read_text())
    raw["future_field"] = {"kept": True}
    m = Manifest.from_dict(raw)
    assert m.extra == {"future_field": {"kept": True}}
    again = json.loads(m.to_json())
    assert again == raw


def test_verify_accepts_intact_artifact(fake_artifact: Path) -> None:
    m = verify_artifact(fake_artifact)
    assert m.feature_names == ("a", "b") and m.backend == "fake"


def test_truncated_model_file_is_a_size_mismatch(fake_artifact: Path) -> None:
    model = fake_artifact / "model.json"
    model.write_bytes(model.read_bytes()[:-3])
    with pytest.raises(ArtifactIntegrityError) as err:
        verify_artifact(fake_artifact)
    assert err.value.what == "size" and "copy it again" in str(err.value)


def test_same_size_corruption_is_a_hash_mismatch(fake_artifact: Path) -> None:
    model = fake_artifact / "model.json"
    data = bytearray(model.read_bytes())
    data[5] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as err:
        verify_artifact(fake_artifact)
    assert err.value.what == "sha256"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("sha256"), "lacks required keys: sha256"),
        (lambda d: d.update(backend="tensorrt"), "backend 'tensorrt'"),
        (lambda d: d.update(task="ranking"), "task 'ranking'"),
        (lambda d: d.update(file="../../etc/passwd"), "plain file name"),
        (lambda d: d.update(feature_names=["a", "a"]), "duplicates"),
        (lambda d: d.update(format_version=99), "newer than this runtime"),
        (lambda d: d.update(size_bytes="big"), "malformed field"),
    ],
)
def test_edited_manifest_is_rejected_with_reason(fake_artifact: Path, edit, message: str) -> None:
    path = fake_artifact / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=message):
        read_manifest(fake_artifact)


def test_not_json_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such artifact directory"):
        read_manifest(tmp_path / "nope")
    d = write_fake_artifact(tmp_path / "x")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_manifest(d)


def test_missing_model_file(fake_artifact: Path) -> None:
    (fake_artifact / "model.json").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        verify_artifact(fake_artifact)
