"""On-device experiments: a split within ±3% of its weight over 10,000 keys and sticky per key,
the variant on every answer, per-variant figures in metrics() and /metrics, shadow scoring off
the answer path with its agreement, a bounded shadow queue, and ending an experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import edge_runtime
from edge_runtime.errors import ConfigError, ModelLoadError
from tests.conftest import write_fake_artifact
from tests.updates_kit import signed_artifact


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Version 1 (y = a + b) and version 2 (y = 2a + 2b) of one model."""
    return (write_fake_artifact(tmp_path / "v1", version="1"),
            write_fake_artifact(tmp_path / "v2", version="2", weights=[[2.0], [2.0]]))


def test_a_split_follows_its_weight_and_keeps_each_key_on_one_variant(pair: tuple[Path, Path]) -> None:
    v1, v2 = pair
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(v2, mode="split", weight=0.3)
        row = {"a": 1.0, "b": 2.0}
        first = {f"req-{i}": rt.predict(row, request_id=f"req-{i}") for i in range(10_000)}
        share = sum(p.variant == "candidate" for p in first.values()) / len(first)
        assert 0.27 <= share <= 0.33, share
        for p in first.values():  # the variant that served says which version answered
            assert (p.variant, p.model_version, p.value) in (("primary", "1", pytest.approx(3.0)),
                                                             ("candidate", "2", pytest.approx(6.0)))
            assert p.to_dict()["variant"] == p.variant
        for rid in list(first)[:500]:  # sticky: the same key, the same variant, every time
            assert rt.predict(row, request_id=rid).variant == first[rid].variant
        # random without a key, still near the weight
        share = sum(rt.predict(row).variant == "candidate" for _ in range(10_000)) / 10_000
        assert 0.27 <= share <= 0.33, share


def test_a_feature_can_be_the_key(pair: tuple[Path, Path], tmp_path: Path) -> None:
    v1, _ = pair
    v2 = write_fake_artifact(tmp_path / "v2b", version="2", features=("a", "b"))
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(v2, weight=0.5, key="a")
        by_a = {a: rt.predict({"a": float(a), "b": 0.0}).variant for a in range(400)}
        assert all(rt.predict({"a": float(a), "b": 9.0}).variant == v for a, v in by_a.items())
        assert 0.4 <= sum(v == "candidate" for v in by_a.values()) / 400 <= 0.6


def test_variants_in_metrics_and_prometheus(pair: tuple[Path, Path]) -> None:
    v1, v2 = pair
    with edge_runtime.load(v1) as rt:
        for _ in range(50):  # before the experiment: not counted for either variant
            rt.predict([1.0, 1.0])
        rt.start_experiment(v2, weight=0.5)
        for i in range(2000):
            rt.predict([1.0, float(i)], request_id=str(i))
        with pytest.raises(edge_runtime.InvalidInput):
            rt.predict([1.0], request_id="bad")
        var = rt.metrics()["variants"]
        p, c = var["primary"], var["candidate"]
        assert (p["model_version"], c["model_version"]) == ("1", "2")
        assert p["model"] + c["model"] == 2000 and p["count"] + c["count"] == 2001
        assert min(p["model"], c["model"]) > 900
        assert p["error_rate"] == 0 and c["fallback_rate"] == 0
        assert c["latency_ms"]["p50"] is not None and c["latency_ms"]["p99"] >= c["latency_ms"]["p50"]
        assert rt.metrics()["predictions"]["model"] == 2050  # the candidate's answers count in the totals
        text = rt.prometheus_text().decode()
        assert f'model_variant_predictions_total{{model="fake",source="model",variant="candidate",version="2"}} ' \
               f'{float(c["model"])}' in text
        batch = rt.predict_batch([[1.0, float(i)] for i in range(200)])
        assert {p.variant for p in batch} == {"primary", "candidate"}
        assert all(p.value == pytest.approx((1.0 + i) * (2 if p.variant == "candidate" else 1))
                   for i, p in enumerate(batch))


def test_shadow_answers_from_the_primary_and_reports_agreement(pair: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = pair
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(write_fake_artifact(tmp_path / "same", version="1b"), mode="shadow", shadow_sample=0.2)
        for i in range(5000):
            p = rt.predict([1.0, float(i % 7)])
            assert (p.variant, p.model_version) == ("primary", "1")
        assert rt.experiment is not None and rt.experiment.drain()
        ag = rt.metrics()["variants"]["agreement"]
        assert 800 <= ag["sampled"] <= 1200 and ag["compared"] == ag["sampled"] and ag["dropped"] == 0
        assert ag["label_agreement"] == 1.0 and ag["max_abs_diff"] == 0.0  # the same model: they agree
        rt.start_experiment(v2, mode="shadow", shadow_sample=1.0)  # replaces it; version 2 doubles
        for i in range(300):
            rt.predict([1.0, float(i)])
        assert rt.experiment.drain()
        ag = rt.metrics()["variants"]["agreement"]
        assert ag["label_agreement"] < 0.01 and ag["mean_abs_diff"] > 1.0
        assert rt.metrics()["variants"]["candidate"]["model"] == ag["compared"]


def test_a_slow_shadow_candidate_is_dropped_not_waited_for(pair: tuple[Path, Path], tmp_path: Path) -> None:
    v1, _ = pair
    slow = signed_artifact(tmp_path / "slow", "2", None, delay_s=0.05)
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(slow, mode="shadow", shadow_sample=1.0)
        lat = [rt.predict([1.0, 2.0]).latency_ms for _ in range(2000)]
        ag = rt.metrics()["variants"]["agreement"]
        assert ag["dropped"] > 1000 and ag["sampled"] + ag["dropped"] == 2000  # the queue (256) filled
        assert sorted(lat)[len(lat) // 2] < 25  # the caller never waited for a 50 ms candidate


def test_ending_an_experiment_unloads_the_candidate(pair: tuple[Path, Path]) -> None:
    v1, v2 = pair
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(v2, weight=1.0)
        assert rt.predict([1.0, 1.0]).variant == "candidate"
        rt.end_experiment()
        p = rt.predict([1.0, 1.0])
        assert (p.variant, p.model_version) == (None, "1") and "variant" not in p.to_dict()
        assert "variants" not in rt.metrics()
        assert "model_variant" not in rt.prometheus_text().decode()


def test_a_candidate_that_does_not_fit_is_refused_and_the_model_serves(pair: tuple[Path, Path], tmp_path: Path) -> None:
    v1, _ = pair
    other = write_fake_artifact(tmp_path / "other", features=("x", "y"))
    broken = write_fake_artifact(tmp_path / "broken", version="3")
    (broken / "model.json").write_text("{}")
    with edge_runtime.load(v1) as rt:
        with pytest.raises(ModelLoadError, match="features differ"):
            rt.start_experiment(other)
        with pytest.raises(ModelLoadError):
            rt.start_experiment(broken)
        with pytest.raises(ConfigError, match="weight"):
            rt.start_experiment(other, weight=1.5)
        assert rt.experiment is None and rt.predict([1.0, 1.0]).variant is None


def test_the_agent_runs_the_configured_experiment_and_survives_a_bad_candidate(pair: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    from edge_runtime.agent import Agent
    from edge_runtime.config import load_config

    v1, v2 = pair
    cfg = tmp_path / "device.toml"
    body = (f'[device]\nid = "d1"\ndata_dir = "{tmp_path / "data"}"\n[model]\nartifact = "{v1}"\n'
            f'[experiment]\ncandidate = "{v2}"\nmode = "split"\nweight = 0.5\n')
    cfg.write_text(body)
    agent = Agent(load_config(cfg))
    agent.start()
    try:
        rt = agent.runtime
        assert rt is not None and rt.experiment is not None
        assert {rt.predict([1.0, 1.0], request_id=str(i)).variant for i in range(100)} == {"primary", "candidate"}
    finally:
        agent.stop()
    cfg.write_text(body.replace(str(v2), str(tmp_path / "missing")))
    agent = Agent(load_config(cfg))
    agent.start()  # the device serves its model alone and says why
    try:
        assert agent.runtime is not None and agent.runtime.experiment is None
        assert agent.runtime.predict([1.0, 1.0]).source == "model"
    finally:
        agent.stop()
    cfg.write_text(body.replace(f'candidate = "{v2}"\n', ""))
    with pytest.raises(ConfigError, match="needs candidate"):
        load_config(cfg)


def test_http_answers_carry_the_variant_and_request_id_is_the_key(pair: tuple[Path, Path]) -> None:
    import asyncio

    import httpx

    from edge_runtime.http.app import create_app, create_asgi

    v1, v2 = pair
    with edge_runtime.load(v1) as rt:
        rt.start_experiment(v2, weight=0.5)

        async def go(app: Any) -> list[dict[str, Any]]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                out = []
                for i in range(40):
                    r = await c.post("/predict", json={"features": [1.0, 1.0], "request_id": f"r{i}"})
                    out.append(r.json())
                return out

        fast, plain = asyncio.run(go(create_asgi(rt))), asyncio.run(go(create_app(rt)))
        assert [d["variant"] for d in fast] == [d["variant"] for d in plain]  # sticky, and the same in both
        assert {d["variant"] for d in fast} == {"primary", "candidate"}
        assert all(d["model_version"] == ("2" if d["variant"] == "candidate" else "1") for d in fast)
        assert json.dumps(fast[0]).count("variant") == 1
