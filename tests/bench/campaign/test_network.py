"""The network group's rows, short (a 6 s impaired call, the receiver down 20 s, an 8 MiB disk): each passes."""

import pytest

from bench.campaign import disk_full, network

pytestmark = pytest.mark.anyio


async def test_a_call_through_loss_and_jitter_continues_to_its_end_with_its_echo(tmp_path):
    row = await network.loss_and_jitter(tmp_path, seconds=6.0, loss=0.05, jitter=0.030, seed=19)
    assert row.passed, row


async def test_events_of_calls_ended_while_the_receiver_was_down_are_delivered_once_in_order(tmp_path):
    row = await network.receiver_down(tmp_path, down_seconds=20.0, calls=3)
    assert row.passed, row


async def test_calls_that_record_while_the_disk_is_full_continue_and_their_events_follow(tmp_path):
    row = await disk_full.disk_full(tmp_path, size=8 << 20, seconds=3.0)
    assert row.passed, row
