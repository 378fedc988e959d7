"""The faults group as the campaign runs it (its callers talk for less): every row passes. A worker
SIGKILLed and one SIGSTOPped mid-call, Redis and a control plane restarted with calls up, on a
cluster of processes (Redis, two control planes, three echo workers) with sipp callers."""

import argparse

import pytest

from bench.campaign import faults
from bench.campaign.row import table
from bench.cluster import HEARTBEAT_TTL

pytestmark = pytest.mark.anyio


async def test_every_row_of_the_faults_group_passes():
    rows = await faults.run(argparse.Namespace(faults_redis_down=2 * HEARTBEAT_TTL, faults_talk=8.0))
    assert [row.attack for row in rows] == ["worker SIGKILLed mid-call", "worker SIGSTOPped mid-call, then SIGCONTed",
                                            "Redis restarted with calls up", "control plane restarted with calls up"]
    assert all(row.passed for row in rows), table(rows)
