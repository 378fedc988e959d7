"""Routing latency: how long one slot reservation takes, in Redis and in memory.

    python -m bench.routing [--redis-url URL] [--workers 1,10,100] [--reservations 2000]

Each reservation runs the whole choice (scan of the workers, least loaded, tenant limit) and is
then cancelled (untimed), so the load stays as registered. Without --redis-url a redis-server of
its own is started on a free loopback port (no persistence). Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from agent.contracts.workers import WorkerInfo
from bench.local_redis import local_redis
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import NewCall, Registry

SLOTS = 40


async def bench(registry: Registry, workers: int, reservations: int, warmup: int = 100) -> list[float]:
    """Seconds per reservation, with `workers` live workers each half full."""
    for w in range(workers):
        await registry.heartbeat(WorkerInfo(f"w{w:03d}", f"http://127.0.0.1:9/{w}", SLOTS, "bench", "0"), 600, [])
    for i in range(workers * SLOTS // 2):
        await registry.reserve(NewCall(f"held-{i}", f"t{i % 10}", "line", "a", "b", 10_000))
    seconds = []
    for i in range(warmup + reservations):
        call = NewCall(f"c{i}", "acme", "line", "+15555550999", "+15555550100", 10_000)
        start = time.perf_counter()
        await registry.reserve(call)
        elapsed = time.perf_counter() - start
        await registry.cancel(call.call_id)
        if i >= warmup:
            seconds.append(elapsed)
    return seconds


@contextmanager
def redis_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder, local_redis(Path(folder), "--appendonly", "no") as url:
        yield url


async def run(redis_url: str, worker_counts: list[int], reservations: int) -> list[dict]:
    rows = []
    for workers in worker_counts:
        for kind in ("redis", "memory"):
            if kind == "redis":
                registry: Registry = RedisRegistry.from_url(redis_url, prefix=f"bench-{workers}-{time.time_ns()}:")
            else:
                registry = MemoryRegistry()
            seconds = np.array(await bench(registry, workers, reservations)) * 1000
            await registry.close()
            rows.append({"registry": kind, "workers": workers, "slots_per_worker": SLOTS,
                         "reservations": reservations, "p50_ms": round(float(np.percentile(seconds, 50)), 4),
                         "p99_ms": round(float(np.percentile(seconds, 99)), 4),
                         "max_ms": round(float(seconds.max()), 4)})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'registry':<8} {'workers':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    lines += [f"{r['registry']:<8} {r['workers']:>7} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f}"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 10, 100])
    parser.add_argument("--reservations", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=Path("bench-routing.json"))
    args = parser.parse_args(argv)
    with (redis_server() if args.redis_url is None else _given(args.redis_url)) as url:
        rows = asyncio.run(run(url, args.workers, args.reservations))
    result = {"benchmark": "routing: one slot reservation", "python": platform.python_version(),
              "machine": platform.machine(), "processor": platform.processor(), "rows": rows}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"wrote {args.json}")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
