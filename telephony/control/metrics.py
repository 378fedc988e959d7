"""Prometheus metrics of one control plane, in a registry of its own (several apps may share a process).

Counters count what this control plane did (sum them over control planes); gauges read the shared
registry, so every control plane reports the same cluster-wide values (take one, or the max).
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from telephony.control.registry import CallRecord, WorkerStatus

ROUTING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("plexline_calls_active", "Calls in progress, cluster-wide", ["tenant"], registry=r)
        self.calls_admitted = Counter("plexline_calls_admitted", "Calls placed on a worker", ["tenant"], registry=r)
        self.calls_refused = Counter("plexline_calls_refused", "Calls refused (no_capacity, tenant_limit, fair_share, source_limit, "
                                     "registry_unavailable)",
                                     ["tenant", "reason"], registry=r)
        self.calls_failed = Counter("plexline_calls_failed", "Calls failed because their worker was lost",
                                    ["tenant"], registry=r)
        self.worker_slots = Gauge("plexline_worker_slots", "Slots of each live worker", ["worker", "state"],
                                  registry=r)
        self.workers = Gauge("plexline_workers", "Live workers", ["state"], registry=r)
        self.routing_seconds = Histogram("plexline_routing_seconds",
                                         "Time to place a call: slot reservation and the worker's session",
                                         buckets=ROUTING_BUCKETS, registry=r)

    def observe(self, workers: list[WorkerStatus], calls: list[CallRecord]) -> None:
        """Set the gauges from the registry; labels of workers and tenants gone are dropped."""
        self.worker_slots.clear()
        live = [w for w in workers if w.alive]
        for w in live:
            self.worker_slots.labels(w.info.id, "used").set(w.used)
            self.worker_slots.labels(w.info.id, "free").set(0 if w.draining else w.free)
        self.workers.labels("serving").set(sum(not w.draining for w in live))
        self.workers.labels("draining").set(sum(w.draining for w in live))
        self.calls_active.clear()
        for tenant, count in Tally(c.tenant for c in calls).items():
            self.calls_active.labels(tenant).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
