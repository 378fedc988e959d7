"""Prometheus metrics of one worker, read from the worker when scraped: its slots, its engine's steps,
and its process (memory, open files: prometheus_client's `process_*`; the event loop's tasks).

They carry no tenant or caller data (the same counts `/readyz` shows), so the worker serves them
without a secret, for scraping by pod annotations. `plexline_engine_slots{state="free"}` is what
the autoscaler watches (see docs/operations.md); it is 0 while the worker drains, as the control
plane's `plexline_worker_slots` is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.worker import Worker

QUANTILES = (0.5, 0.99)


class WorkerCollector(Collector):
    def __init__(self, worker: Worker):
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w, clock = self.worker, self.worker.clock.stats
        labels = ["worker"]
        worker_id = w.info.id
        free = 0 if w.draining else max(w.free_slots, 0)
        slots = GaugeMetricFamily("plexline_engine_slots", "This worker's slots: used, and free for new calls "
                                  "(0 while draining)", labels=[*labels, "state"])
        slots.add_metric([worker_id, "used"], w.info.slots - max(w.free_slots, 0))
        slots.add_metric([worker_id, "free"], free)
        yield slots
        yield _gauge("plexline_engine_slots_total", "Slots of this worker's engine", worker_id, w.info.slots)
        yield _gauge("plexline_worker_draining", "1 while the worker takes no new calls", worker_id, int(w.draining))
        steps = CounterMetricFamily("plexline_engine_steps", "Engine steps (one per 80 ms while calls are in "
                                    "progress)", labels=labels)
        steps.add_metric([worker_id], clock.steps)
        yield steps
        overruns = CounterMetricFamily("plexline_engine_overruns", "Engine steps that ran past their 80 ms budget",
                                       labels=labels)
        overruns.add_metric([worker_id], clock.overruns)
        yield overruns
        voices = CounterMetricFamily("plexline_engine_voices", "WAV voices made into voice prompts by the engine "
                                     "(once per recording and model: then kept on disk)", labels=labels)
        voices.add_metric([worker_id], clock.voices)
        yield voices
        recent = sorted(clock.step_seconds)
        step = GaugeMetricFamily("plexline_engine_step_recent_seconds", "Whole-frame step time over the last "
                                 "1000 steps (Mimi encode, LM, Mimi decode), by quantile", labels=[*labels, "quantile"])
        for q in QUANTILES if recent else ():
            step.add_metric([worker_id, str(q)], recent[min(len(recent) - 1, int(q * len(recent)))])
        yield step


def _gauge(name: str, documentation: str, worker_id: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["worker"])
    gauge.add_metric([worker_id], value)
    return gauge


class EventLoopCollector(Collector):
    """The tasks of the event loop that serves the scrape (the process's one loop): a count that grows
    call after call is a task that nobody ends (the soak watches it, bench/campaign/soak.py)."""

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from a thread without a loop: nothing to count
            return
        yield GaugeMetricFamily("plexline_event_loop_tasks", "asyncio tasks of the process's event loop",
                                value=tasks)


def register_worker_metrics(registry: CollectorRegistry, worker: Worker) -> None:
    """The worker's metrics, its process's and its event loop's, in `registry` (the worker's own, or the
    control plane's in `plexline serve`, which serves both on one /metrics)."""
    registry.register(WorkerCollector(worker))
    ProcessCollector(registry=registry)
    registry.register(EventLoopCollector())


def worker_registry(worker: Worker) -> CollectorRegistry:
    registry = CollectorRegistry()
    register_worker_metrics(registry, worker)
    return registry
