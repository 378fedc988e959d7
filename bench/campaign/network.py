"""The campaign's network and storage faults, against `plexline serve` as the CLI composes it (an echo
worker; `bench.campaign.service`), on loopback:

- packet loss and jitter on the RTP path, both ways (a relay with a seeded RNG, as
  `netem delay 30ms 30ms loss 5%` would impair it), against a clean run through the same relay;
- the tenant's webhook receiver down for a while, then back (`bench.webhook_receiver`);
- the data folder's disk full while calls record (`bench.campaign.disk_full`).

Each row asserts its outcome and reports the figures it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
from pathlib import Path

import time
from collections import Counter, defaultdict

from bench.campaign.echo_call import ECHOED, CallResult, Relay, call
from bench.campaign.disk_full import disk_full
from bench.campaign.row import Row
from bench.campaign.service import serving, write_tenant
from bench.echo_latency import speech_8k
from bench.webhook_receiver import Receiver
from telephony.events.signature import new_secret

KINDS = ("call.started", "call.transcript.partial", "call.ended")  # the order of a call's events


class LossyRelay(Relay):
    """Drops each datagram with probability `loss` and delays the others by a uniform 0 to 2 x
    `jitter` seconds (netem's `delay J J`: a mean of J, packets reordered where delays cross)."""

    def __init__(self, loss: float, jitter: float, seed: int):
        super().__init__()
        self.loss, self.jitter, self.rng = loss, jitter, random.Random(seed)
        self.dropped = {True: 0, False: 0}  # toward the worker, toward the caller

    def forward(self, data: bytes, destination: tuple[str, int], toward_worker: bool) -> None:
        if self.rng.random() < self.loss:
            self.dropped[toward_worker] += 1
            return
        delay = self.rng.uniform(0, 2 * self.jitter)
        asyncio.get_running_loop().call_later(delay, self._send, data, destination)

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, destination)


def _echo(result: CallResult) -> str:
    return f"echo {result.echo:.2f}"


async def loss_and_jitter(folder: Path, seconds: float, loss: float, jitter: float, seed: int) -> Row:
    pcm = await asyncio.to_thread(speech_8k, seconds)
    async with serving(folder) as service:
        clean = await call(service.sip, pcm, Relay(), service=service)
        relay = LossyRelay(loss, jitter, seed)
        lossy = await call(service.sip, pcm, relay, service=service)
        idle = await service.wait_idle()
    leg = lossy.leg
    outcome = (f"clean: {_echo(clean)}, {clean.returned}/{clean.sent} back; impaired: {_echo(lossy)}, "
               f"{lossy.returned}/{lossy.sent} back, dropped {relay.dropped[True]} in and {relay.dropped[False]} "
               f"out; the leg: {leg.received} in, {leg.late} late, {leg.lost} lost, {leg.gaps} gaps concealed "
               f"({leg.concealed:.2f} s), playout {leg.deeper} deeper and {leg.shallower} shallower, {leg.deepest} "
               f"packets at most; hung up by the caller: {lossy.completed}")
    passed = (clean.completed and lossy.completed and idle and clean.echo > ECHOED and lossy.echo > ECHOED
              and leg.gaps > 0 and relay.dropped[True] > 0)
    return Row(f"{loss:.0%} loss, {jitter * 1000:.0f} ms jitter on RTP", f"{seconds:g} s of speech each way "
               f"through a relay (seed {seed})", outcome, passed)


def delivered_in_order(receiver: Receiver) -> bool:
    """Each call's events were first accepted in the order its call made them."""
    kinds = defaultdict(list)
    for delivery in receiver.accepted():
        kinds[delivery.event["data"]["call_id"]].append(KINDS.index(delivery.event["type"]))
    return all(seen == sorted(seen) for seen in kinds.values())


async def receiver_down(folder: Path, down_seconds: float, calls: int) -> Row:
    """Calls end while the tenant's receiver refuses connections; then it is back."""
    secret = new_secret()
    pcm = await asyncio.to_thread(speech_8k, 2.0)
    with Receiver(secret) as receiver:
        hook = {"url": receiver.url, "secret": secret, "allow_http": True, "allow_private_network": True}
        async with serving(folder, personas=write_tenant(folder / "tenants", hook), webhook_retry_first=0.5,
                           webhook_retry_cap=5.0, webhook_timeout=2.0) as service:
            receiver.down()
            started = time.monotonic()
            results = []
            for n in range(calls):  # spread over the time it is down
                results.append(await call(service.sip, pcm))
                await asyncio.sleep(max(0.0, started + (n + 1) * down_seconds / calls - time.monotonic()))
            pending = await service.plane.history.outbox.pending()
            receiver.up()
            back = time.monotonic()
            got = await receiver.until(2 * calls, timeout=60)
            caught_up = time.monotonic() - back
            await asyncio.sleep(1.0)  # anything sent twice arrives meanwhile
            left = await service.plane.history.outbox.pending()
    ids = Counter(d.msg_id for d in receiver.deliveries if 200 <= d.status < 300)
    per_call = Counter((d.event["data"]["call_id"], d.event["type"]) for d in got)
    again = sum(n - 1 for n in ids.values())
    outcome = (f"{pending} queued while down; {len(got)} delivered {caught_up:.1f} s after it was back, "
               f"{left} left; {again} sent again (same webhook-id); in order per call: "
               f"{delivered_in_order(receiver)}; all signed: {all(d.valid for d in receiver.deliveries)}")
    passed = (all(r.completed for r in results) and len(got) == 2 * calls and left == 0
              and all(n == 1 for n in per_call.values()) and len(per_call) == 2 * calls
              and delivered_in_order(receiver) and all(d.valid for d in receiver.deliveries))
    return Row("webhook receiver down, then back", f"{calls} calls over {down_seconds:g} s of connection refused",
               outcome, passed)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impaired-seconds", type=float, default=20.0, help="length of the impaired RTP call")
    parser.add_argument("--loss-seed", type=int, default=19, help="the lossy relay's RNG")
    parser.add_argument("--webhook-down-seconds", type=float, default=600.0, help="how long the receiver is down")
    parser.add_argument("--webhook-calls", type=int, default=10, help="calls that end while it is down")
    parser.add_argument("--disk-mib", type=int, default=8, help="size of the data folder's tmpfs")


async def run(args: argparse.Namespace) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="plexline-campaign-network-"))
    try:
        return [await loss_and_jitter(folder / "loss", args.impaired_seconds, 0.05, 0.030, args.loss_seed),
                await receiver_down(folder / "webhooks", args.webhook_down_seconds, args.webhook_calls),
                await disk_full(folder / "disk", args.disk_mib << 20, 3.0)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
