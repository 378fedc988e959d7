"""An ended call's RTP leg is freed by reference counting alone, its native threads with it.

A leg holds codecs and resamplers (libavfilter keeps two threads for each resampler until it is
freed). Objects in reference cycles wait for a full garbage collection, which a serving process
seldom runs: so these calls run with the collector off, end (the worker ending one, the caller's
RTP stopping for the other), and must leave nothing alive behind them.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from agent.contracts.calls import CallDetails
from agent.contracts.media import RtpLegSpec
from agent.media.rtp_legs import RtpLegs
from agent.worker import Worker, echo_model
from bench.echo_latency import RtpCaller, speech_8k
from personas.schema import Persona

pytestmark = pytest.mark.anyio

PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2")


def native_threads() -> int:
    """The process's threads as the kernel counts them (libavfilter's are not Python threads)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Threads:"))
    return int(line.split()[1])


async def call(worker: Worker, legs: RtpLegs, call_id: str, caller_hangs_up: bool) -> list[weakref.ref]:
    """One call through a real leg: the caller plays speech, then the worker ends the call or the
    caller's RTP stops until the leg's timeout ends it. Weak references to the call's objects."""
    loop = asyncio.get_running_loop()
    transport, caller = await loop.create_datagram_endpoint(lambda: RtpCaller("PCMU"), local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        session = await worker.create_session(CallDetails(
            call_id=call_id, tenant="acme", line="support", caller="+15555550999", callee="+15555550100",
            persona=PERSONA, max_call_seconds=60))
        spec = RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=port + 1, codec="PCMU",
                          payload_type=0, rtp_timeout=0.5 if caller_hangs_up else 30)
        address = await legs.open(session, spec)
        rtp = legs.leg(call_id).rtp
        await caller.play(speech_8k(0.6), ("127.0.0.1", address.port))
        if caller_hangs_up:
            await asyncio.wait_for(session.end_requested.wait(), 10)
            while worker.sessions:
                await asyncio.sleep(0.01)
        else:
            await worker.end_session(call_id, "the control plane ended it")
        assert caller.packets and rtp.stats.packets_received > 0  # media flowed both ways
        return [weakref.ref(session), weakref.ref(rtp), weakref.ref(rtp.caller_track)]
    finally:
        transport.close()


async def test_ended_calls_are_freed_without_the_garbage_collector():
    worker = Worker(echo_model(2), worker_id="w1", address="http://127.0.0.1:9", version="test")
    await worker.start()
    legs = RtpLegs("127.0.0.1", range(41000, 43000))
    try:
        await call(worker, legs, "warm-up", caller_hangs_up=False)  # the executors' threads start once
        gc.collect()
        baseline = native_threads()
        gc.disable()
        try:
            refs = [ref for i in range(4) for ref in await call(worker, legs, f"c{i}", caller_hangs_up=i % 2 == 1)]
            await asyncio.sleep(0.2)  # the sockets' transports close on the loop's next turns
            alive = [ref() for ref in refs if ref() is not None]
            threads = native_threads()
        finally:
            gc.enable()
        assert alive == [] and legs._legs == {}
        assert threads <= baseline, (threads, baseline)
    finally:
        await worker.stop()
