"""Tasks stopped for sure, though a cancellation be lost on the way."""

import asyncio

import pytest

from agent.contracts.tasks import cancel_and_wait

pytestmark = pytest.mark.anyio


async def test_a_task_that_lost_its_cancellation_is_cancelled_again_until_it_ends():
    lost = []

    async def loses_the_first_cancellation() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append("cancel")  # as Python 3.11's asyncio.wait_for does when its future is done by then

    task = asyncio.ensure_future(loses_the_first_cancellation())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 10)
    assert task.cancelled() and lost == ["cancel"]


async def test_tasks_that_ended_keep_their_outcome():
    async def fails() -> None:
        raise ValueError("its own error")

    failed, done = asyncio.ensure_future(fails()), asyncio.ensure_future(asyncio.sleep(0, "result"))
    await asyncio.wait([failed, done])
    await cancel_and_wait(failed, done)
    assert isinstance(failed.exception(), ValueError) and done.result() == "result"
