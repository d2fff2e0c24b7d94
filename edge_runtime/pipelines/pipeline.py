"""One inference pipeline: MQTT messages in, predictions out, on a thread of its own.

paho's network thread only stamps and queues a message (``offer``); the pipeline's thread
reads payloads into rows, runs the device's model on a burst at once (up to ``batch_max`` rows
or ``batch_ms`` after the first arrived), filters by ``when``, rate-limits and publishes.
Memory stays bounded whatever arrives: the input queue holds ``queue_max`` messages (the
oldest is dropped and counted), and ``publish`` blocks while the broker has not acknowledged
enough answers, so the input queue takes the pressure, not paho's.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, InvalidInput
from edge_runtime.metrics import latency_percentiles
from edge_runtime.pipeline_config import OutputTemplate, PipelineConfig, compile_condition, filter_parts, match
from edge_runtime.pipelines.payload import BadPayload, RowReader
from edge_runtime.prediction import Prediction
from edge_runtime.runtime import Runtime

log = logging.getLogger(__name__)

EVENT_EVERY_S = 10.0  # one pipeline_bad_input event per reason per this long, with a count
REASONS_KEPT = 64
Publish = Callable[[str, bytes, int, bool], bool]  # topic, payload, qos, retain -> handed over (may block)
Report = Callable[..., Any]  # reporter.event(type, **data)

COUNTERS = ("received", "published", "filtered", "bad", "dropped", "limited", "errors")


class Pipeline:
    def __init__(self, cfg: PipelineConfig, runtime: Runtime, publish: Publish, report: Report, *,
                 device: str = "") -> None:
        self.cfg = cfg
        self.runtime = runtime
        self._publish = publish
        self._report = report
        self._device = device
        self._filters = [filter_parts(f) for f in cfg.input]
        self._template = OutputTemplate(cfg.output, min(sum(p in ("+", "#") for p in f) for f in self._filters))
        self._when = compile_condition(cfg.when) if cfg.when else None
        self._max_bytes = int(cfg.max_payload_kb * 1024)
        self._queue: collections.deque[tuple[str, bytes, float]] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._latency: collections.deque[float] = collections.deque(maxlen=2048)
        self._reasons: dict[str, list[Any]] = {}  # reason -> [last event time, count since, last topic]
        self._reader: RowReader | None = None
        self._reader_features: tuple[str, ...] | None = None
        self._tokens = float(self._burst)
        self._refilled = time.monotonic()

    # -- paho's network thread ----------------------------------------------------------------------
    def captures(self, topic: str) -> list[str] | None:
        """What this pipeline's filters' wildcards matched in ``topic``; None: not for us."""
        for parts in self._filters:
            got = match(parts, topic)
            if got is not None:
                return got
        return None

    def offer(self, topic: str, payload: bytes) -> None:
        """Queue one message (never blocks); an over-size one is refused here."""
        now = time.monotonic()
        with self._cond:
            self.counts["received"] += 1
            if len(payload) > self._max_bytes:
                self._bad(topic, f"payload over max_payload_kb ({self.cfg.max_payload_kb:g} KB)", now)
                return
            if len(self._queue) >= self.cfg.queue_max:
                self._queue.popleft()
                self.counts["dropped"] += 1
            self._queue.append((topic, payload, now))
            self._cond.notify()

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.cfg.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._flush_reasons(force=True)

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self.counts)
            out["queued"] = len(self._queue)
            lat = list(self._latency)
        p = latency_percentiles(lat)
        out["latency_ms"] = {"p50": p["p50"], "p99": p["p99"]}
        return out

    # -- the pipeline's thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._take()
            if items:
                try:
                    self._process(items)
                except Exception:  # never let one burst end the pipeline
                    log.exception("pipeline %s failed on a burst of %d", self.cfg.name, len(items))
                    with self._cond:
                        self.counts["errors"] += len(items)
            self._flush_reasons()

    def _take(self) -> list[tuple[str, bytes, float]]:
        cfg = self.cfg
        with self._cond:
            if not self._queue:
                self._cond.wait(1.0)
            if not self._queue:
                return []
            if len(self._queue) < cfg.batch_max and cfg.batch_ms > 0:
                until = self._queue[0][2] + cfg.batch_ms / 1000.0
                while len(self._queue) < cfg.batch_max and not self._stop.is_set():
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(cfg.batch_max, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _rows(self) -> RowReader:
        features = self.runtime.feature_names  # a new model may name other features
        if self._reader is None or features != self._reader_features:
            self._reader, self._reader_features = RowReader(self.cfg, features), features
        return self._reader

    def _process(self, items: list[tuple[str, bytes, float]]) -> None:
        reader = self._rows()
        good: list[tuple[str, float, list[str], Any]] = []
        rows: list[list[float]] = []
        for topic, payload, t in items:
            caps = self.captures(topic) or []
            try:
                row, key = reader.read(payload, caps)
            except BadPayload as exc:
                with self._cond:
                    self._bad(topic, exc.reason, time.monotonic())
                continue
            good.append((topic, t, caps, key))
            rows.append(row)
        if not rows:
            return
        for (topic, t, caps, key), pred in zip(good, self._predict(rows, [g[0] for g in good]), strict=True):
            if pred is not None:
                self._answer(topic, t, caps, key, pred)

    def _predict(self, rows: list[list[float]], topics: list[str]) -> list[Prediction | None]:
        """One model call for the burst; a row the runtime refuses (a value out of range for the
        model's input type) is counted as bad and the rest are scored without it."""
        rt = self.runtime
        out: list[Prediction | None] = [None] * len(rows)
        todo = list(range(len(rows)))
        while todo:
            try:
                if len(todo) == 1:
                    got: list[Prediction] = [rt.predict(np.asarray(rows[todo[0]], dtype=np.float64))]
                else:
                    got = list(rt.predict_batch(np.asarray([rows[i] for i in todo], dtype=np.float64)))
            except InvalidInput as exc:
                k = exc.row if exc.row is not None and 0 <= exc.row < len(todo) and len(todo) > 1 else 0
                with self._cond:
                    self._bad(topics[todo[k]], f"the model refused the row: {exc.reason}"[:120], time.monotonic())
                del todo[k]
                continue
            except EdgeRuntimeError as exc:  # the model failed, no fallback: the runtime reports model_error
                with self._cond:
                    self.counts["errors"] += len(todo)
                log.warning("pipeline %s: %d row(s) not answered: %s", self.cfg.name, len(todo), exc)
                break
            for i, pred in zip(todo, got, strict=True):
                out[i] = pred
            break
        return out

    def _answer(self, topic: str, t: float, caps: list[str], key: Any, pred: Prediction) -> None:
        probs = pred.probabilities
        sprobs = {str(k): v for k, v in probs.items()} if probs is not None else None
        if self._when is not None and not self._when(pred.value, sprobs):
            with self._cond:
                self.counts["filtered"] += 1
            return
        if not self._take_token():
            with self._cond:
                self.counts["limited"] += 1
            return
        cfg = self.cfg
        doc: dict[str, Any] = {"key": key, "value": pred.value}
        if sprobs is not None:
            doc["probabilities"] = sprobs
        doc["source"] = pred.source
        doc["model_version"] = pred.model_version
        if pred.reason:
            doc["reason"] = pred.reason
        doc["topic"] = topic
        out_topic = self._template.render(caps, device=self._device, pipeline=cfg.name)
        elapsed = time.monotonic() - t
        doc["latency_ms"] = round(elapsed * 1000.0, 3)
        body = json.dumps(doc, separators=(",", ":"), default=str).encode()
        ok = self._publish(out_topic, body, cfg.qos, cfg.retain)
        with self._cond:
            if ok:
                self.counts["published"] += 1
                self._latency.append(time.monotonic() - t)  # receive -> handed to the broker link
            else:
                self.counts["errors"] += 1

    @property
    def _burst(self) -> float:
        r = self.cfg.rate_limit
        return max(1.0, r) if r else 0.0

    def _take_token(self) -> bool:
        r = self.cfg.rate_limit
        if not r:
            return True
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * r)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # -- bad input: counted always, reported at most once per reason per 10 s -------------------------
    def _bad(self, topic: str, reason: str, now: float) -> None:
        """Count (call with ``self._cond`` held); the pipeline's thread reports it."""
        self.counts["bad"] += 1
        if reason not in self._reasons and len(self._reasons) >= REASONS_KEPT:
            reason = "other reasons"
        slot = self._reasons.get(reason)
        if slot is None:
            slot = self._reasons[reason] = [now - EVENT_EVERY_S, 0, ""]
            self._cond.notify()  # the first of its kind is reported at once
        slot[1] += 1
        slot[2] = topic[:256]

    def _flush_reasons(self, force: bool = False) -> None:
        now = time.monotonic()
        due = []
        with self._cond:
            for reason, slot in list(self._reasons.items()):
                if slot[1] and (force or now - slot[0] >= EVENT_EVERY_S):
                    due.append({"pipeline": self.cfg.name, "topic": slot[2], "reason": reason, "count": slot[1]})
                    slot[0], slot[1] = now, 0
                elif not slot[1] and now - slot[0] >= EVENT_EVERY_S:
                    del self._reasons[reason]
        for data in due:  # outside the lock: an event is a durable write
            log.warning("pipeline %s: %d message(s) not scored: %s", self.cfg.name, data["count"], data["reason"])
            try:
                self._report("pipeline_bad_input", **data)
            except Exception:
                log.exception("could not report a pipeline event")
