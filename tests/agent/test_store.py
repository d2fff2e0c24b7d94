"""The model store: atomic install, active/previous pointers, prune, first-start install."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.errors import ArtifactIntegrityError, ModelLoadError
from edge_runtime.store import ModelRef, ModelStore
from tests.conftest import write_fake_artifact


def test_install_activate_previous_prune(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "data")
    assert store.active() is None and store.previous() is None
    refs = [store.install(write_fake_artifact(tmp_path / f"a{v}", version=str(v))) for v in (1, 2, 3, 4)]
    assert refs[0] == ModelRef("fake", "1")
    assert (store.path(refs[0]) / "manifest.json").is_file()
    store.activate(refs[2], commit=True)
    store.activate(refs[3])  # in probation: not committed yet
    assert store.active() == refs[3] and store.previous() == refs[2]
    pointer = json.loads((tmp_path / "data/models/active.json").read_text())
    assert pointer == {"name": "fake", "version": "4", "previous": {"name": "fake", "version": "3"},
                       "committed": [{"name": "fake", "version": "3"}]}
    removed = store.prune(keep_versions=2)
    assert set(removed) == {refs[0], refs[1]}
    assert store.versions("fake") == ["3", "4"]
    # reinstalling an installed version is a no-op, and never leaves temp dirs behind
    assert store.install(tmp_path / "a4") == refs[3]
    assert not [p for p in (tmp_path / "data/models/fake").iterdir() if p.name.startswith(".")]


def test_a_version_that_failed_is_never_previous(tmp_path: Path) -> None:
    """committed 1 -> 2, then 3 fails probation and 2 is rolled back to: previous is 1, not 3;
    a rollback command from a committed 2 forgets 2, so a second rollback does not return to it."""
    store = ModelStore(tmp_path / "data")
    v = {n: store.install(write_fake_artifact(tmp_path / f"a{n}", version=str(n))) for n in (1, 2, 3)}
    store.activate(v[1], commit=True)
    store.activate(v[2])
    assert store.previous() == v[1]
    store.commit(v[2])
    store.activate(v[3])
    assert store.previous() == v[2]
    store.activate(v[2], forget=v[3])  # probation breach: back to 2
    assert store.active() == v[2] and store.previous() == v[1]
    assert v[3] not in store.committed()
    store.activate(v[1], forget=v[2])  # rollback command
    assert store.active() == v[1] and store.previous() is None
    assert store.find(__import__("hashlib").sha256((tmp_path / "a3/manifest.json").read_bytes()).hexdigest()) == v[3]


def test_a_corrupt_artifact_is_not_installed(tmp_path: Path) -> None:
    art = write_fake_artifact(tmp_path / "bad")
    (art / "model.json").write_text('{"weights": [[9.0], [9.0]]}')  # no longer matches the manifest hash
    store = ModelStore(tmp_path / "data")
    with pytest.raises(ArtifactIntegrityError):
        store.install(art)
    assert not (tmp_path / "data/models/fake").exists() or not any((tmp_path / "data/models/fake").iterdir())
    with pytest.raises(ModelLoadError, match="not installed"):
        store.activate(ModelRef("fake", "1"))


def test_ensure_installs_once_and_never_undoes_an_update(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "data")
    v1 = write_fake_artifact(tmp_path / "v1", version="1")
    assert store.ensure(v1) == ModelRef("fake", "1")
    # an update activated version 2; a restart with the same config keeps version 2
    store.activate(store.install(write_fake_artifact(tmp_path / "v2", version="2")))
    store.commit(ModelRef("fake", "2"))
    assert store.ensure(v1) == ModelRef("fake", "2")
    # the operator configures a version the store has never seen: it is installed and activated
    assert store.ensure(write_fake_artifact(tmp_path / "v3", version="3")) == ModelRef("fake", "3")
    assert store.previous() == ModelRef("fake", "2")
    assert store.ensure(None) == ModelRef("fake", "3")
    with pytest.raises(ModelLoadError, match="artifact is not set"):
        ModelStore(tmp_path / "empty").ensure(None)
