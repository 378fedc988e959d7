"""The load group's short version (4 slots, 4 s calls), inside the loopback namespace: no more than
the slots admitted, the rest refused with Retry-After, real time kept, nothing left over, every
call recorded."""

import argparse

import pytest

from bench.campaign import load
from bench.campaign.row import table

pytestmark = pytest.mark.anyio
SLOTS = 4


async def test_the_short_load_group_admits_the_slots_refuses_the_rest_and_leaks_nothing():
    rows = await load.run(argparse.Namespace(load_slots=SLOTS, load_seconds=4.0))
    assert len(rows) == 4, table(rows)
    admission, timing, leaks, records = (row.figures for row in rows)

    assert (admission["admitted"], admission["peak_sessions"]) == (SLOTS, SLOTS), table(rows)
    assert admission["refused"] == admission["offered"] - SLOTS
    assert admission["refused_sip"] >= 1 and admission["refused_webrtc"] >= 1  # both kinds, each with Retry-After
    assert (leaks["free_slots"], leaks["sessions"]) == (SLOTS, 0)
    assert leaks["open_fds_after"] <= leaks["open_fds_before"] and leaks["tasks_after"] <= leaks["tasks_before"]
    assert records["records"] == admission["offered"]
    assert timing["echoed_min"] >= load.ECHOED_AT_LEAST, table(rows)
    assert all(row.passed for row in rows), table(rows)
    print(table(rows))
