"""The SIP transport stops with a TCP connection open, though its reader lose a cancellation."""

import asyncio

import pytest

from telephony.sip.transport import SipTransport

pytestmark = pytest.mark.anyio


async def test_stop_ends_a_reader_that_lost_its_cancellation():
    transport = SipTransport("127.0.0.1", 0, lambda data, peer: None)
    lost, released = [], asyncio.Event()  # released: the test ends the reader, should stop not

    async def loses_a_cancellation(reader, peer) -> None:  # as the reader's asyncio.wait_for loses one
        while not released.is_set():  # when a chunk has come by then (agent.contracts.tasks)
            try:
                await released.wait()
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append(peer)

    transport._read = loses_a_cancellation
    await transport.start()
    _, writer = await asyncio.open_connection("127.0.0.1", transport.port)
    try:
        while not transport._readers:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(transport.stop(), 10)
    finally:
        released.set()
        writer.close()
    assert len(lost) == 1 and not transport._readers
