"""The hostile group's short version (fewer connections and guesses): every row passes."""

import argparse

import pytest

from bench.campaign import hostile
from bench.campaign.row import table

pytestmark = pytest.mark.anyio


async def test_every_row_of_the_short_hostile_group_passes():
    rows = await hostile.run(argparse.Namespace(slowloris=150, wrong_tokens=30))
    assert len(rows) == 9
    assert all(row.passed for row in rows), table(rows)
