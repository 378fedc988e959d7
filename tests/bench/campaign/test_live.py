"""The live group's row, short (three 8 s calls, 300 mutations, 500 garbage datagrams, a 2 s flood): it passes."""

import pytest

from bench.campaign import live

pytestmark = pytest.mark.anyio


async def test_attacks_at_one_call_and_the_sip_endpoint_leave_the_other_calls_undisturbed(tmp_path):
    row = await live.live_attacks(tmp_path, seconds=8.0, fuzz=300, garbage=500, flood_seconds=2.0, seed=4475)
    assert row.passed, row
