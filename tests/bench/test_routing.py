import asyncio

from bench.routing import run, table


def test_the_routing_benchmark_measures_both_registries(redis_url):
    rows = asyncio.run(run(redis_url, [3], reservations=50))

    assert [(r["registry"], r["workers"], r["reservations"]) for r in rows] == [("redis", 3, 50), ("memory", 3, 50)]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rows)
    assert table(rows).splitlines()[0].split() == ["registry", "workers", "p50", "ms", "p99", "ms", "max", "ms"]
