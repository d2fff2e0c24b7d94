"""Fault injection through the public API: every failure yields the configured fallback."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime import BackendError, ConfigError, InvalidInput, ModelLoadError
from tests.conftest import write_fake_artifact

ROW = {"a": 1.0, "b": 2.0}  # fake model: y = a + b


def _events(rt: edge_runtime.Runtime) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    rt.subscribe(lambda kind, data: got.append((kind, data)))
    return got


def _wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize(("fault", "value", "reason"), [
    ("fail", RuntimeError("kaboom"), "backend_error"),
    ("nan", True, "non_finite_output"),
    ("wrong_shape", True, "bad_output_shape"),
])
def test_backend_fault_yields_default_with_reason(fake_artifact: Path, fault: str, value: object,
                                                  reason: str) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=-1.0) as rt:
        assert rt.predict(ROW).source == "model"
        setattr(rt.model.backend, fault, value)
        p = rt.predict(ROW)
        assert (p.source, p.value, p.reason) == ("fallback", -1.0, reason)
        assert p.to_dict()["reason"] == reason
        m = rt.metrics()
        assert m["fallbacks"] == {reason: 1}
        assert m["predictions"]["fallback"] == 1 and m["predictions"]["model"] == 1
        text = rt.prometheus_text().decode()
        assert f'model_prediction_fallbacks_total{{model="fake",reason="{reason}"}} 1.0' in text


def test_hang_returns_fallback_on_time_and_worker_is_bounded(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=0.0, timeout_ms=50, deadline_workers=1,
                           breaker_failures=0) as rt:
        assert rt.predict(ROW).value == 3.0
        hang = 2.0
        rt.model.backend.delay_s = hang
        t0 = time.perf_counter()
        p = rt.predict(ROW)
        took = time.perf_counter() - t0
        assert (p.source, p.reason) == ("fallback", "timeout")
        # the caller did not wait for the hung call (not a timing target: a 40x margin on the 50 ms)
        assert took < hang / 2, f"a 50 ms deadline took {took:.3f}s"
        # the overrunning run still holds the only worker: the next call is not queued behind it
        t0 = time.perf_counter()
        p2 = rt.predict(ROW)
        assert (p2.source, p2.reason) == ("fallback", "overloaded")
        assert time.perf_counter() - t0 < hang / 2
        n_threads = threading.active_count()
        for _ in range(20):
            rt.predict(ROW)
        assert threading.active_count() <= n_threads  # no thread per call piles up
        rt.model.backend.delay_s = 0.0
        assert _wait_for(lambda: rt.metrics()["deadline"]["busy"] == 0)
        assert rt.predict(ROW).source == "model"
        d = rt.metrics()["deadline"]
        assert d["timeouts"] == 1 and d["late_completions"] == 1 and d["overloaded"] >= 21


def test_corrupted_artifact_serves_fallback_and_is_not_ready(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "m")
    (d / "model.json").write_text('{"weights": [[1.0], [1.0]], "input": "x", "outputs": ["value"]}  ')
    with pytest.raises(ModelLoadError, match="size mismatch"):
        edge_runtime.load(d)  # nothing configured: the caller hears it at load
    with edge_runtime.load(d, fallback_default=7.5) as rt:
        events = _events(rt)
        p = rt.predict(ROW)
        assert (p.source, p.value, p.reason) == ("fallback", 7.5, "model_not_loaded")
        with pytest.raises(InvalidInput, match="'b'"):  # still validated against the manifest
            rt.predict({"a": 1.0})
        h = rt.health()
        assert h["live"] is True and h["ready"] is False and h["loaded"] is False
        assert h["reasons"][0].startswith("model not loaded: ") and "size mismatch" in h["reasons"][0]
        assert rt.metrics()["loaded"] is False
        assert 'model_loaded{model="fake",version="1"} 0.0' in rt.prometheus_text().decode()
        assert _wait_for(lambda: any(k == "model_error" for k, _ in events))
        # an update fixes it: swap makes the runtime ready
        good = write_fake_artifact(tmp_path / "good", version="2")
        assert rt.swap(good) is None
        p = rt.predict(ROW)
        assert (p.source, p.value, p.model_version) == ("model", 3.0, "2")
        assert rt.health()["ready"] is True


def test_no_fallback_raises_backend_error(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact) as rt:
        rt.model.backend.fail = RuntimeError("kaboom")
        with pytest.raises(BackendError, match="no fallback is configured"):
            rt.predict(ROW)
        assert rt.metrics()["predictions"]["error"] == 1


def test_invalid_input_is_the_callers_error_not_a_fallback(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=0.0) as rt:
        with pytest.raises(InvalidInput, match="'a'"):
            rt.predict({"a": "x", "b": 1})
        with pytest.raises(InvalidInput):
            rt.predict_batch([[1.0]])
        m = rt.metrics()
        assert m["predictions"]["invalid_input"] == 2 and m["predictions"]["fallback"] == 0
        assert rt.model.backend.calls == 0


def test_breaker_opens_on_consecutive_failures_and_recovers(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=0.0, breaker_failures=3,
                           breaker_cooldown_s=0.2) as rt:
        events = _events(rt)
        be = rt.model.backend
        be.fail = RuntimeError("down")
        assert [rt.predict(ROW).reason for _ in range(3)] == ["backend_error"] * 3
        assert rt.health()["breaker"] == "open" and rt.health()["ready"] is False
        calls = be.calls
        p = rt.predict(ROW)
        assert p.reason == "breaker_open" and be.calls == calls  # the model is not touched
        assert 'model_circuit_breaker_state{model="fake",state="open"} 1.0' in rt.prometheus_text().decode()
        time.sleep(0.25)
        p = rt.predict(ROW)  # the probe fails: open again
        assert p.reason == "backend_error" and be.calls == calls + 1
        assert rt.metrics()["breaker"]["state"] == "open"
        be.fail = None
        time.sleep(0.25)
        assert rt.predict(ROW).source == "model"  # the probe succeeds: closed
        assert rt.health()["breaker"] == "closed" and rt.health()["ready"] is True
        assert rt.metrics()["breaker"]["times_opened"] == 2
        assert _wait_for(lambda: [k for k, _ in events if k.startswith("breaker")]
                         == ["breaker_open", "breaker_open", "breaker_closed"])
        assert any(k == "model_error" and d["reason"] == "backend_error" for k, d in events)


def test_non_finite_outputs_fall_back_without_opening_the_breaker(fake_artifact: Path) -> None:
    """One caller's extreme but valid rows can overflow a model: that must not shut everybody
    out. Backend errors still open it (above)."""
    with edge_runtime.load(fake_artifact, fallback_default=0.0, breaker_failures=2) as rt:
        big = [3.0e38, 3.0e38]  # in float32 range; a + b overflows
        assert [rt.predict(big).reason for _ in range(5)] == ["non_finite_output"] * 5
        assert rt.health()["breaker"] == "closed"
        assert rt.predict(ROW).source == "model"


def test_breaker_opens_on_failure_rate(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=0.0, breaker_failures=100, breaker_window=20,
                           breaker_min_calls=10, breaker_failure_rate=0.5, breaker_cooldown_s=60) as rt:
        be = rt.model.backend
        for i in range(30):  # alternate: never 2 failures in a row, but a 50% rate
            be.fail = RuntimeError("flaky") if i % 2 else None
            rt.predict(ROW)
            if rt.health()["breaker"] == "open":
                break
        assert rt.health()["breaker"] == "open"
        assert "failure rate" in str(rt.metrics()["breaker"]) or rt.metrics()["breaker"]["failure_rate"] >= 0.5


def test_last_good_answers_the_same_input(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_last_good=True, fallback_default=-1.0) as rt:
        assert rt.predict(ROW).value == 3.0
        rt.model.backend.fail = RuntimeError("down")
        p = rt.predict({"b": 2.0, "a": 1})  # same validated input, other spelling
        assert (p.source, p.value, p.reason) == ("fallback", 3.0, "backend_error")
        q = rt.predict({"a": 5.0, "b": 5.0})  # never seen: the constant
        assert (q.source, q.value) == ("fallback", -1.0)


def test_secondary_artifact_answers_then_constant(tmp_path: Path) -> None:
    primary = write_fake_artifact(tmp_path / "big", weights=[[1.0], [1.0]])
    small = write_fake_artifact(tmp_path / "small", weights=[[10.0], [0.0]], name="tiny", version="s1")
    with edge_runtime.load(primary, fallback_artifact=str(small), fallback_default=-1.0) as rt:
        rt.model.backend.nan = True
        p = rt.predict(ROW)
        assert (p.source, p.value, p.reason, p.model_version) == ("fallback", 10.0, "non_finite_output", "s1")
        batch = rt.predict_batch(np.array([[1.0, 0.0], [2.0, 0.0]]))
        assert [b.value for b in batch] == [10.0, 20.0] and {b.source for b in batch} == {"fallback"}
        rt.fallback_model.backend.fail = RuntimeError("also down")
        p = rt.predict(ROW)
        assert (p.source, p.value) == ("fallback", -1.0)
        assert rt.health()["fallback"]["artifact"] == "tiny s1"


def test_classifier_default_with_probabilities(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "clf", task="classification", weights=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ConfigError, match="not one of"):
        edge_runtime.load(d, fallback_default=7)
    with edge_runtime.load(d, fallback_default={"value": 1, "probabilities": {"1": 0.9, "0": 0.1}}) as rt:
        rt.model.backend.fail = RuntimeError("down")
        p = rt.predict(ROW)
        assert p.value == 1 and p.probabilities == pytest.approx({0: 0.1, 1: 0.9})


def test_concurrent_predict_is_correct_and_counted_exactly(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, cache_size=64, fallback_default=0.0) as rt:
        errors: list[str] = []

        def work(k: int) -> None:
            for i in range(500):
                a = float((k * 500 + i) % 100)
                p = rt.predict({"a": a, "b": 1.0})
                if p.value != a + 1.0:
                    errors.append(f"{a}: {p}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        m = rt.metrics()
        assert m["predictions"]["model"] + m["predictions"]["cache"] == 2000
        assert m["cache"]["hits"] + m["cache"]["misses"] == 2000


def test_options_are_validated_with_the_key() -> None:
    with pytest.raises(ConfigError, match="timeout_ms"):
        edge_runtime.RuntimeOptions(timeout_ms=0)
    with pytest.raises(ConfigError, match="drift_method"):
        edge_runtime.RuntimeOptions(drift_method="kl")
    with pytest.raises(ConfigError, match="log_path"):
        edge_runtime.RuntimeOptions(log_sample_rate=0.1)
    with pytest.raises(ConfigError, match="unknown option"):
        edge_runtime.RuntimeOptions.from_kwargs(cache=True)


def test_subscriber_errors_do_not_reach_predict(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, fallback_default=0.0, breaker_failures=1) as rt:
        def bad(kind: str, data: dict) -> None:
            raise RuntimeError("subscriber bug")
        rt.subscribe(bad)
        rt.model.backend.fail = RuntimeError("down")
        assert rt.predict(ROW).source == "fallback"
        rt.flush()
        assert rt.health()["live"] is True
        json.dumps(rt.metrics())  # plain, serialisable


def test_device_config_runtime_section_reaches_the_runtime(tmp_path: Path) -> None:
    art = write_fake_artifact(tmp_path / "m")
    cfg = tmp_path / "device.toml"
    cfg.write_text(f"""
[device]
id = "t1"
fleet = "test"
data_dir = "{tmp_path / 'data'}"

[model]
artifact = "{art}"

[runtime]
fallback_default = 42.0
timeout_ms = 50
breaker_failures = 2
breaker_cooldown_s = 5
cache_size = 16
cache_ttl_s = 10
log_path = "{tmp_path / 'pred.jsonl'}"
log_sample_rate = 0.5
drift_method = "js"
""")
    with edge_runtime.load(config=cfg) as rt:
        o = rt.options
        assert (o.fallback_default, o.timeout_ms, o.breaker_failures, o.cache_size, o.drift_method) == \
            (42.0, 50, 2, 16, "js")
        rt.model.backend.fail = RuntimeError("down")
        p = rt.predict(ROW)
        assert (p.source, p.value, p.reason) == ("fallback", 42.0, "backend_error")
    bad = cfg.read_text().replace('drift_method = "js"', 'drift_method = "kl"')
    cfg.write_text(bad)
    with pytest.raises(ConfigError, match="drift_method"):
        edge_runtime.load(config=cfg)


def test_broken_fallback_artifact_does_not_stop_the_model(tmp_path: Path) -> None:
    primary = write_fake_artifact(tmp_path / "big")
    with edge_runtime.load(primary, fallback_artifact=str(tmp_path / "missing"), fallback_default=-1.0) as rt:
        assert rt.predict(ROW).source == "model"
        h = rt.health()
        assert h["ready"] is True and "no such artifact directory" in h["fallback"]["error"]
        rt.model.backend.fail = RuntimeError("down")
        assert rt.predict(ROW).value == -1.0


def test_load_fails_when_no_configured_fallback_can_answer(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "m")
    (d / "model.json").write_text("{}")
    with pytest.raises(ModelLoadError):  # a last-good store starts empty: it cannot stand in
        edge_runtime.load(d, fallback_last_good=True)
    with pytest.raises(ModelLoadError):  # the fallback artifact is broken too
        edge_runtime.load(d, fallback_artifact=str(tmp_path / "missing"))
    good = write_fake_artifact(tmp_path / "ok")
    with edge_runtime.load(good, fallback_last_good=True) as rt:
        rt.model.backend.fail = RuntimeError("down")
        with pytest.raises(BackendError, match="no fallback could answer"):
            rt.predict(ROW)
