"""The parts of a pipeline that need no broker: the config check, topic matching and templates,
the ``when`` condition, payload -> row (fuzzed: any bytes give a row or a BadPayload, nothing
else), and the worker's batching, filtering and rate limit driven through ``offer``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edge_runtime
from edge_runtime.config import load_config
from edge_runtime.errors import ConfigError
from edge_runtime.pipeline_config import OutputTemplate, PipelineConfig, compile_condition, filter_parts, match
from edge_runtime.pipelines.payload import BadPayload, RowReader
from edge_runtime.pipelines.pipeline import Pipeline
from tests.conftest import write_fake_artifact
from tests.mqtt_broker import wait_for


def write(tmp_path: Path, pipelines: str, mqtt: bool = True) -> Path:
    p = tmp_path / "device.toml"
    p.write_text("[device]\nid = \"d1\"\n" + ("[mqtt]\nhost = \"127.0.0.1\"\n" if mqtt else "") + pipelines)
    return p


GOOD = '[[pipelines]]\nname = "p"\ninput = ["s/+/t"]\noutput = "s/{1}/out"\n'


@pytest.mark.parametrize(("text", "key", "says"), [
    ('[[pipelines]]\nname = "p"\ninput = ["s/+/t"]\n', "pipelines[0]", "missing output"),
    (GOOD + "colour = 1\n", "pipelines[0].colour", "unknown key"),
    ('[[pipelines]]\nname = "p"\ninput = ["s/a+/t"]\noutput = "o"\n', "pipelines[0].input[0]", "whole level"),
    ('[[pipelines]]\nname = "p"\ninput = ["s/#/t"]\noutput = "o"\n', "pipelines[0].input[0]", "last one"),
    ('[[pipelines]]\nname = "p"\ninput = ["s/x/t"]\noutput = "s/{1}/o"\n', "pipelines[0].output", "needs a wildcard"),
    ('[[pipelines]]\nname = "p"\ninput = ["s/+/t", "s/+/+"]\noutput = "{2}"\n', "pipelines[0].output", "{1}..{1}"),
    ('[[pipelines]]\nname = "p"\ninput = ["s/+"]\noutput = "o/#"\n', "pipelines[0].output", "wildcards"),
    (GOOD + 'when = "value = 1"\n', "pipelines[0].when", "cannot read"),
    (GOOD + 'when = "colour == 1"\n', "pipelines[0].when", "compare value or probabilities"),
    (GOOD + 'when = "value == 1 and"\n', "pipelines[0].when", "at the end"),
    (GOOD + 'when = "value == 1 xor value == 2"\n', "pipelines[0].when", "'and' or 'or'"),
    (GOOD + 'format = "xml"\n', "pipelines[0].format", "not one of"),
    (GOOD + "batch_max = 0\n", "pipelines[0].batch_max", "below the minimum"),
    (GOOD + 'topic_fields = {a = 2}\n', "pipelines[0].topic_fields.a", "1..1"),
    (GOOD + 'columns = ["a"]\n', "pipelines[0].columns", "format = \"csv\""),
    (GOOD + 'path = "a..b"\n', "pipelines[0].path", "dotted path"),
    (GOOD + GOOD, "pipelines[1].name", "names must differ"),
    (GOOD + '[pipelines.mqtt]\nport = 0\n', "pipelines[0].mqtt.port", "below the minimum"),
])
def test_a_bad_pipeline_config_names_the_key_and_the_fix(tmp_path: Path, text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert e.value.key == key and says in str(e.value), str(e.value)


def test_a_pipeline_needs_a_broker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a broker: add an \[mqtt\] section"):
        load_config(write(tmp_path, GOOD, mqtt=False))
    cfg = load_config(write(tmp_path, GOOD + '[pipelines.mqtt]\nhost = "plant-broker"\nport = 1884\n', mqtt=False))
    (p,) = cfg.pipelines
    assert p.mqtt.host == "plant-broker" and p.mqtt.port == 1884 and p.input == ("s/+/t",)


def test_the_design_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """[[pipelines]]
name = "line-3-vibration"
input = ["plant/line3/+/telemetry"]
format = "json"
path = "data"
key = "msg_id"
output = "plant/line3/{1}/prediction"
qos = 1
when = "value == 1"
batch_max = 32
batch_ms = 5
queue_max = 10000
"""))
    assert cfg.pipelines[0].when == "value == 1" and cfg.pipelines[0].batch_ms == 5.0


def test_topic_matching_follows_mqtt_rules() -> None:
    assert match(filter_parts("a/+/c"), "a/b/c") == ["b"]
    assert match(filter_parts("a/+/c"), "a/b/c/d") is None
    assert match(filter_parts("a/#"), "a/b/c") == ["b/c"]
    assert match(filter_parts("a/#"), "a") == [""]  # '#' also matches the parent level
    assert match(filter_parts("+/x"), "$SYS/x") is None
    assert match(filter_parts("a/+/+"), "a/1/2") == ["1", "2"]
    assert match(filter_parts("a/b"), "a/c") is None
    t = OutputTemplate("o/{2}/{1}/{device}-{pipeline}", 2)
    assert t.render(["x", "y"], device="d", pipeline="p") == "o/y/x/d-p"


@pytest.mark.parametrize(("when", "value", "probs", "expected"), [
    ("value == 1", 1, None, True),
    ("value == 1", 0, None, False),
    ("value == 1", "1", None, True),  # a label sent as a string still compares as a number
    ("value > 0.5", 0.7, None, True),
    ("value != 'ok'", "ok", None, False),
    ('value == "fault"', "fault", None, True),
    ("value == fault", "fault", None, True),
    ("probabilities.fault >= 0.8", "x", {"fault": 0.85}, True),
    ("probabilities.fault >= 0.8", "x", {"ok": 0.99}, False),
    ("probabilities.fault >= 0.8", "x", None, False),
    ("value == 1 and probabilities.1 > 0.9 or value == 2", 1, {"1": 0.5}, False),
    ("value == 1 and probabilities.1 > 0.9 or value == 2", 2, {"1": 0.5}, True),
    ("value < 3 or value > 10 and value < 20", 15, None, True),  # and binds first
    ("value < 3", "n/a", None, False),
])
def test_when_conditions(when: str, value: Any, probs: dict[str, float] | None, expected: bool) -> None:
    assert compile_condition(when)(value, probs) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_condition_text_compiles_or_says_why(text: str) -> None:
    try:
        cond = compile_condition(text)
    except ValueError as exc:
        assert str(exc)
    else:
        cond(1, {"1": 0.5})


def reader(**kw: Any) -> RowReader:
    base = {"name": "p", "input": ("s/+/t",), "output": "o"}
    return RowReader(PipelineConfig(**{**base, **kw}), ("a", "b"))


def test_payload_shapes() -> None:
    assert reader().read(b'{"a": 1, "b": "2.5", "extra": [1]}', ["x"]) == ([1.0, 2.5], None)
    assert reader(key="meta.id").read(b'{"a": 1, "b": 2, "meta": {"id": "m-7"}}', []) == ([1.0, 2.0], "m-7")
    assert reader(path="data.0").read(b'{"data": [{"a": 3, "b": 4}]}', []) == ([3.0, 4.0], None)
    assert reader().read(b"[5, 6]", []) == ([5.0, 6.0], None)
    assert reader(format="csv").read(b"1,2\n", []) == ([1.0, 2.0], None)
    assert reader(format="csv", columns=("b", "id", "a"), key="id").read(b'2,"x,y",1', []) == ([1.0, 2.0], "x,y")
    assert reader(topic_fields={"a": 1}).read(b'{"b": 1}', ["42"]) == ([42.0, 1.0], None)
    assert reader(key="k").read(b'{"a": 1, "b": 2, "k": {"nested": true}}', [])[1] == '{"nested":true}'
    assert len(reader(key="k").read(json.dumps({"a": 1, "b": 2, "k": "x" * 5000}).encode(), [])[1]) == 256


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{", "bad JSON"), (b"\xff", "bad JSON"), (b"[" * 50_000, "bad JSON: nested too deeply"),
    (b'{"a": 1}', "missing feature 'b'"), (b'{"a": "x", "b": 1}', "feature 'a' is not a number"),
    (b'{"a": true, "b": 1}', "feature 'a' is not a number"), (b'{"a": 1e999, "b": 1}', "feature 'a' is not finite"),
    (b'{"a": 10' + b"0" * 400 + b', "b": 1}', "feature 'a' is out of range"),
    (b"[1]", "expected 2 values, got 1"), (b'"s"', "expected a JSON object of features or an array of numbers"),
])
def test_bad_payloads_say_why_without_echoing_them(payload: bytes, reason: str) -> None:
    with pytest.raises(BadPayload) as e:
        reader().read(payload, [])
    assert e.value.reason == reason


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=4)
                              | st.dictionaries(st.sampled_from("abk"), c, max_size=4),
                              max_leaves=12).map(lambda d: json.dumps(d).encode())),
       st.sampled_from(["json", "csv"]))
def test_any_payload_gives_a_row_or_a_bad_payload(payload: bytes, fmt: str) -> None:
    r = reader(format=fmt, key="k" if fmt == "json" else None)
    try:
        row, _ = r.read(payload, ["1"])
    except BadPayload as exc:
        assert len(exc.reason) < 120
    else:
        assert len(row) == 2 and all(isinstance(x, float) for x in row)


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []

    def publish(self, topic: str, body: bytes, qos: int, retain: bool) -> bool:
        self.sent.append((topic, json.loads(body)))
        return True

    def report(self, type: str, **data: Any) -> None:
        self.events.append({"type": type, **data})


def test_a_burst_is_scored_in_one_model_call_and_a_bad_row_does_not_sink_it(tmp_path: Path) -> None:
    rt = edge_runtime.load(write_fake_artifact(tmp_path / "m"))
    sink = Sink()
    cfg = PipelineConfig(name="p", input=("s/+",), output="o/{1}", batch_max=50, batch_ms=200, key="k")
    p = Pipeline(cfg, rt, sink.publish, sink.report)
    backend = rt.serving.model.backend  # type: ignore[union-attr]
    before = backend.calls
    p.start()
    try:
        for i in range(49):
            p.offer(f"s/{i}", json.dumps({"k": i, "a": i, "b": 1}).encode())
        p.offer("s/x", json.dumps({"k": "huge", "a": 1e39, "b": 1}).encode())  # float32 overflow: the model refuses
        wait_for(lambda: len(sink.sent) == 49, 5, "49 answers")
        assert backend.calls - before == 1  # the refused row never reaches the model; the 49 others in one call
        assert sorted(d["key"] for _, d in sink.sent) == list(range(49))
        assert {t for t, _ in sink.sent} == {f"o/{i}" for i in range(49)}
        wait_for(lambda: p.snapshot()["bad"] == 1, 5, "the bad row counted")
        wait_for(lambda: len(sink.events) == 1, 5, "one event")
        assert sink.events[0]["reason"].startswith("the model refused the row")
    finally:
        p.stop()
        rt.close()


def test_bad_input_events_are_at_most_one_per_reason_per_ten_seconds(tmp_path: Path) -> None:
    rt = edge_runtime.load(write_fake_artifact(tmp_path / "m"))
    sink = Sink()
    p = Pipeline(PipelineConfig(name="p", input=("s",), output="o", batch_ms=0), rt, sink.publish, sink.report)
    p.start()
    try:
        for _ in range(500):
            p.offer("s", b"{oops")
            p.offer("s", b'{"a": 1}')
        wait_for(lambda: p.snapshot()["bad"] == 1000, 5, "all counted")
        time.sleep(0.3)
        assert sorted(e["reason"] for e in sink.events) == ["bad JSON", "missing feature 'b'"]
    finally:
        p.stop()  # the stop reports what was counted since
        rt.close()
    assert sum(e["count"] for e in sink.events) == 1000 and len(sink.events) == 4


def test_a_missing_tls_file_of_a_pipeline_broker_is_named(tmp_path: Path) -> None:
    text = GOOD + '[pipelines.mqtt]\nhost = "plant"\ntls = true\nca_file = "nowhere/ca.crt"\n'
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert e.value.key == "pipelines[0].mqtt.ca_file" and "does not exist" in str(e.value)
