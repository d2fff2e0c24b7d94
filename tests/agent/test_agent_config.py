"""Device configs: the examples are valid; every mistake names file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config import load_config
from edge_runtime.errors import ConfigError
from tests.conftest import ROOT

EXAMPLES = sorted(p for p in (ROOT / "device_configs").glob("*.toml") if p.stem != "fleet")


def test_there_are_examples_for_each_kind_of_device() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"raspberry-pi-4", "raspberry-pi-5", "x86-gateway", "low-memory", "local-demo"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_configs_are_valid(path: Path) -> None:
    cfg = load_config(path, check_files=False, env={})
    assert cfg.device.fleet and cfg.device.id
    assert cfg.model.artifact is not None and cfg.mqtt is not None
    opts = cfg.runtime_options()
    assert opts["threads"] == cfg.model.threads and opts["backend"] == cfg.model.backend
    from edge_runtime.options import RuntimeOptions

    RuntimeOptions.from_kwargs(**opts)  # what edge_runtime.load(config=...) will do


def test_the_fleet_example_is_a_valid_fleet_config() -> None:
    from edge_runtime.fleet.config import load_fleet_config

    cfg = load_fleet_config(ROOT / "device_configs" / "fleet.toml")
    assert cfg.fleet.name == "acme" and cfg.chunk_size == 128 * 1024 and cfg.updates.deployment_key is not None
    assert cfg.mqtt.session_expiry_s == 0  # an operator's tool keeps no session on the broker


def test_a_fleet_config_mistake_names_file_and_key(tmp_path: Path) -> None:
    from edge_runtime.fleet.config import load_fleet_config

    p = tmp_path / "fleet.toml"
    p.write_text('[fleet]\nname = "a"\n[updates]\nchunk_size_kb = 4096\n')
    with pytest.raises(ConfigError, match=r"updates.chunk_size_kb.*above the maximum 512"):
        load_fleet_config(p)
    p.write_text('[fleets]\nname = "a"\n')
    with pytest.raises(ConfigError, match="unknown section"):
        load_fleet_config(p)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "device.toml"
    p.write_text(text)
    return p


BASE = '[device]\nid = "d1"\nfleet = "f"\ndata_dir = "data"\n[model]\nartifact = "art"\n'


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ("[mqtt]\nprot = 1883\n", "mqtt.prot", "unknown key"),
    ("[mqtt]\nport = 70000\n", "mqtt.port", "above the maximum 65535"),
    ("[mqtt]\nport = \"1883\"\n", "mqtt.port", "expected an integer"),
    ("[mqtt]\ntls = \"yes\"\n", "mqtt.tls", "expected true or false"),
    ("[mqtt]\npassword = \"hunter2\"\n", "mqtt.password", "do not put secrets in the config file"),
    ("[mqtt]\noutbox_policy = \"drop-newest\"\n", "mqtt.outbox_policy", "is not one of"),
    ("[mqtt]\nreconnect_min_s = 5\nreconnect_max_s = 1\n", "mqtt.reconnect_max_s", "below reconnect_min_s"),
    ("[mqtt]\ntls = true\ncert_file = \"c.pem\"\n", "mqtt.key_file", "needs both cert_file and key_file"),
    ("[mqtt]\ntls = true\nca_file = \"missing-ca.crt\"\n", "mqtt.ca_file", "does not exist"),
    ("[runtime]\nlatency_windw = 10\n", "runtime.latency_windw", "unknown runtime option"),
    ("[runtime]\nlatency_window = \"big\"\n", "runtime.latency_window", "expected an integer"),
    ("[runtime]\nthreads = 4\n", "runtime.threads", "set threads in [model]"),
    ("[model2]\nx = 1\n", "model2", "unknown section"),
])
def test_bad_values_name_file_key_and_reason(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    p = _write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.key == key and reason in e.value.reason
    assert str(p) in str(e.value) and key in str(e.value)


def test_bad_ids_and_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be part of an MQTT topic") as e:
        load_config(_write(tmp_path, BASE.replace('"d1"', '"a/b"')), env={})
    assert e.value.key == "device.id"
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[device\nid=1"), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_environment_overrides_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    p = _write(tmp_path, BASE + '[mqtt]\nhost = "broker"\npassword_file = "pw"\n')
    cfg = load_config(p, env={})
    assert cfg.mqtt is not None and cfg.mqtt.read_password() == "from-file"
    assert cfg.device.data_dir == tmp_path / "data" and cfg.model.artifact == tmp_path / "art"
    env = {"EDGE_MQTT_PASSWORD": "s3cret", "EDGE_MQTT_PORT": "8883", "EDGE_MQTT_TLS": "true",
           "EDGE_DEVICE_GROUPS": "eu, canary", "EDGE_MQTT_HOST": "10.0.0.5"}
    cfg = load_config(p, env=env)
    assert cfg.mqtt is not None
    assert (cfg.mqtt.read_password(), cfg.mqtt.port, cfg.mqtt.tls, cfg.mqtt.host) == ("s3cret", 8883, True, "10.0.0.5")
    assert cfg.device.groups == ("eu", "canary")
    with pytest.raises(ConfigError, match=r"\$EDGE_MQTT_PORT") as e:
        load_config(p, env={"EDGE_MQTT_PORT": "eighty"})
    assert e.value.key == "mqtt.port"


def test_defaults_and_optional_sections(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE), env={})
    assert cfg.mqtt is None and cfg.http is None
    assert cfg.updates.keep_versions == 3
    cfg = load_config(_write(tmp_path, BASE + "[mqtt]\n[http]\n"), env={})
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883 and cfg.mqtt.outbox_max_mb == 64
    assert cfg.mqtt.events_limit_mb == 128 and cfg.http is not None and cfg.http.port == 8080
    assert cfg.client_id == "d1"


def test_run_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    p = _write(tmp_path, BASE + "[mqtt]\nmetrics_interval_s = -1\n")
    r = cli("run", "--config", str(p))
    assert r.returncode == 2
    assert "mqtt.metrics_interval_s" in r.stderr and str(p) in r.stderr and "below the minimum" in r.stderr


def test_load_with_a_config_serves_the_version_the_store_has_active(tmp_path: Path) -> None:
    import edge_runtime
    from edge_runtime.store import ModelStore
    from tests.conftest import write_fake_artifact

    v1 = write_fake_artifact(tmp_path / "v1", version="1", weights=[[1.0], [1.0]])
    v2 = write_fake_artifact(tmp_path / "v2", version="2", weights=[[2.0], [2.0]])
    data = tmp_path / "data"
    cfg = _write(tmp_path, f'[device]\nid = "d1"\nfleet = "f"\ndata_dir = "{data}"\n[model]\nartifact = "{v1}"\n')
    # before any agent ran: the configured artifact, and nothing is created in data_dir
    with edge_runtime.load(config=cfg) as rt:
        assert rt.model_version == "1"
    assert not data.exists()
    store = ModelStore(data)
    store.ensure(v1)
    store.activate(store.install(v2))  # what an update does
    with edge_runtime.load(config=cfg) as rt:
        assert rt.model_version == "2" and rt.predict([1.0, 1.0]).value == 4.0


def _run_fails(tmp_path: Path, *, data_dir: Path | None = None, artifact: Path | None = None,
               extra: str = "") -> tuple[Path, int, str]:
    """``edge-runtime run`` on a config made of these parts: (config, exit code, its last line)."""
    from tests.conftest import run_cli, write_fake_artifact

    art = artifact or write_fake_artifact(tmp_path / "art")
    cfg = _write(tmp_path, f'[device]\nid = "d1"\nfleet = "f"\ndata_dir = "{data_dir or tmp_path / "data"}"\n'
                           f'[model]\nartifact = "{art}"\n{extra}')
    r = run_cli("run", "--config", str(cfg), timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    return cfg, r.returncode, r.stderr.strip().splitlines()[-1]


def test_a_data_dir_that_cannot_be_used_stops_run_with_the_path_and_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir's parent should be")
    _, code, line = _run_fails(tmp_path, data_dir=blocker / "data")
    assert code == 2, line
    assert "key 'device.data_dir'" in line and "cannot be used as the data dir" in line and "write access" in line


def test_a_configured_artifact_that_is_not_there_names_the_config_line(tmp_path: Path) -> None:
    cfg, code, line = _run_fails(tmp_path, artifact=tmp_path / "nope")
    assert code == 3
    assert f"Fix [model] artifact in {cfg}" in line


def test_a_key_file_that_is_not_a_key_names_the_config_section(tmp_path: Path) -> None:
    bad = tmp_path / "artifact.pub"
    bad.write_text("not a key")
    cfg, code, line = _run_fails(tmp_path, extra=f'[updates]\nartifact_keys = ["{bad}"]\n')
    assert code == 2, line
    assert str(cfg) in line and "key 'updates'" in line and "not an Ed25519 public key" in line


def test_a_busy_http_port_names_the_key(tmp_path: Path) -> None:
    import socket

    from edge_runtime.agent import Agent
    from tests.conftest import write_fake_artifact

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        art = write_fake_artifact(tmp_path / "art")
        cfg = _write(tmp_path, f'[device]\nid = "d1"\nfleet = "f"\ndata_dir = "{tmp_path / "data"}"\n'
                               f'[model]\nartifact = "{art}"\n[http]\nport = {port}\n')
        agent = Agent(load_config(cfg))
        with pytest.raises(ConfigError) as exc:
            agent.start()
        agent.stop()
    assert exc.value.key == "http.port" and str(cfg) in str(exc.value)
