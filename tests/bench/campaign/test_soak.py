"""The soak group's short version (45 s of churn on the tiny model, inside the loopback namespace):
every call answered or cleanly refused, the server's counts equal the callers', and after the last
call the server's open files and tasks are back at their baseline. The slopes of so short a run
are noise more than trend: they are printed, and only a gross RSS leak fails the test."""

import argparse
import math

import pytest

from bench.campaign import soak
from bench.campaign.row import table

pytestmark = pytest.mark.anyio
SLOTS = 3


async def test_the_short_soak_answers_or_refuses_every_call_and_ends_where_it_began():
    rows = await soak.run(argparse.Namespace(soak_minutes=0.75, soak_slots=SLOTS, soak_model="dummy", soak_load=0.8,
                                             soak_sample=3.0, soak_warm_up=0.25, soak_rss_slope=50.0,
                                             soak_samples=None))
    assert len(rows) == 3, table(rows)
    calls, flat, scrapes = (row.figures for row in rows)

    assert calls["failed"] == 0 and calls["answered"] > 0, table(rows)
    assert calls["answered"] + calls["refused"] == calls["offered"]
    assert (calls["server_admitted"], calls["server_refused"]) == (calls["answered"], calls["refused"])
    assert flat["samples"] >= 10 and flat["sessions_after"] == 0
    assert flat["open_fds_after"] <= flat["open_fds_before"] and flat["tasks_after"] <= flat["tasks_before"]
    assert all(math.isfinite(flat[f"{name}_per_min"]) for name in soak.SERIES)
    assert scrapes["scrapes"] == flat["samples"] + scrapes["unanswered"]
    assert rows[0].passed and rows[1].passed, table(rows)  # not the scrapes' timing: this machine's load
    print(table(rows))
