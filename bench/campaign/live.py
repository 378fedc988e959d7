"""The campaign's attacks during live calls, against `plexline serve` as the CLI composes it (an echo
worker; `bench.campaign.service`), on loopback.

Three callers speak at once. While they do, one call's RTP port gets garbage (random datagrams,
RTP-shaped packets of other sources and types, RTCP junk) and then a flood, and the SIP endpoint
gets the malformed corpus (`bench.sip_corpus`), RFC 4475's torture messages and seeded mutations
of both, from sixteen source addresses (so the per-source limit does not spare the server the
work). The row asserts: no exception escaped into the event loop, the other two calls kept their
echo and were hung up by their callers, the attacked call either continued or was ended cleanly by
the server, and the endpoint still answers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import socket
import struct
import tempfile
from pathlib import Path

from bench.campaign.echo_call import ECHOED, CallResult, call
from bench.campaign.row import Row
from bench.campaign.service import serving
from bench.echo_latency import speech_8k
from bench.sip_corpus import INVITE, MALFORMED
from bench.sip_caller import SipCall

RFC4475 = Path(__file__).parents[2] / "tests" / "telephony" / "sip" / "rfc4475"  # the torture messages (data)
SOURCES = [f"127.0.0.{n}" for n in range(2, 18)]
OPTIONS = (b"OPTIONS sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.99:5099;branch=z9hG4bK-probe\r\n"
           b"From: <sip:probe@127.0.0.99>;tag=1\r\nTo: <sip:+15555550100@127.0.0.1>\r\nCall-ID: probe@campaign\r\n"
           b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


class Crashes(logging.Handler):
    """Exceptions that escaped to the event loop, and error logs with a traceback; the count of
    warnings and errors logged (an attack must not flood the logs)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []
        self.logged = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.logged += record.name != "agent.engine.clock"  # a loaded machine's overruns are not the attack's
        if record.exc_info:
            self.seen.append(f"{record.name}: {record.getMessage()[:120]}")

    def loop_handler(self, loop, context: dict) -> None:
        self.seen.append(f"event loop: {context.get('message', '')[:80]} {context.get('exception')!r}"[:200])


def corpus() -> list[bytes]:
    """The malformed messages and the torture messages, as they are."""
    return [data for data, _ in MALFORMED.values()] + [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))]


def mutations(seed: int, count: int) -> list[bytes]:
    """`count` messages made from sipp's INVITE and the corpus by flipping, inserting, cutting and
    repeating bytes, or random bytes."""
    rng = random.Random(seed)
    bases = [INVITE, *corpus()]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(5)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = rng.randbytes(rng.randint(1, 200))
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            line = data.find(b"\r\n", at)
            data[at:at] = bytes(data[at:line + 2]) * rng.randint(2, 50) if line > 0 else b""
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 1500)))
        out.append(bytes(data[:65000]))
    return out


def udp_from(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def spray(messages: list[bytes], destination: tuple[str, int]) -> int:
    """Send each message from the next source, 20 between turns of the loop; the count sent."""
    sent = 0
    attackers = [udp_from(source) for source in SOURCES]
    try:
        for i, data in enumerate(messages):
            try:
                attackers[i % len(attackers)].sendto(data, destination)
                sent += 1
            except OSError:  # a full socket buffer
                pass
            if i % 20 == 0:
                await asyncio.sleep(0.002)
    finally:
        for sock in attackers:
            sock.close()
    return sent


async def flood(destination: tuple[str, int], seconds: float) -> int:
    """RTP of another source as fast as one sender goes (100 between turns of the loop); the count sent."""
    packet = struct.pack("!BBHLL", 0x80, 0, 1, 1, 0xDEAD) + b"\xff" * 160
    loop, sent = asyncio.get_running_loop(), 0
    end = loop.time() + seconds
    with udp_from(SOURCES[0]) as sock:
        while loop.time() < end:
            for _ in range(100):
                try:
                    sock.sendto(packet, destination)
                    sent += 1
                except OSError:  # a full socket buffer: the flood outran the kernel
                    break
            await asyncio.sleep(0)
    return sent


def rtp_garbage(rng: random.Random, count: int) -> list[bytes]:
    """Random datagrams, and RTP-shaped ones of other sources, types and sequence numbers."""
    out = []
    for n in range(count):
        if n % 2:
            out.append(rng.randbytes(rng.randint(0, 1500)))
        else:
            header = struct.pack("!BBHLL", 0x80 | rng.randrange(16), rng.randrange(256), rng.getrandbits(16),
                                 rng.getrandbits(32), rng.getrandbits(32))
            out.append(header + rng.randbytes(rng.choice((0, 1, 160, 1400))))
    return out


async def attack_rtp(worker: tuple[str, int], seed: int, garbage: int, flood_seconds: float) -> dict[str, int]:
    rng = random.Random(seed)
    await asyncio.sleep(1.0)  # the call is up and its media flowing
    sent = {"garbage": await spray(rtp_garbage(rng, garbage), worker)}
    sent["rtcp"] = await spray([rng.randbytes(rng.randint(0, 300)) for _ in range(garbage // 4)],
                               (worker[0], worker[1] + 1))
    sent["flood"] = await flood(worker, flood_seconds)
    return sent


async def attack_sip(sip: tuple[str, int], seed: int, count: int) -> int:
    await asyncio.sleep(1.0)
    return await spray(corpus() + mutations(seed, count), sip)


def edge_offers(caller: SipCall) -> list[bytes]:
    """Offers inside a call at the edges of what SDP allows; the last puts the call back as it was."""
    offer = caller.offer(caller.media_port)
    port = b"m=audio %d " % caller.media_port
    return [offer.replace(port, b"m=audio 65535 "), offer.replace(port, b"m=audio 0 "),
            offer.replace(b"RTP/AVP 0", b"RTP/AVP 18").replace(b"0 PCMU/8000", b"18 G729/8000"),
            b"v=0\r\n" + bytes(range(256)), offer.replace(b"IN IP4 127.0.0.1\r\nt", b"IN IP4 0.0.0.0\r\nt"),
            offer.replace(port, b"m=audio 1 "), offer + b"a=rtcp:0\r\na=ptime:0\r\n", offer]


async def attack_dialog(caller: SipCall, seed: int) -> tuple[list[int], int]:
    """From the attacked call's own SIP socket: re-INVITEs with `edge_offers` (each answered and
    acknowledged), and requests of every method, a third of them with bytes flipped. The statuses
    of the re-INVITEs (the last one restores the call's media)."""
    rng = random.Random(seed)

    def flip(data: bytes) -> bytes:
        data = bytearray(data)
        for _ in range(3):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    await asyncio.sleep(1.0)
    statuses, sent = [], 0
    for offer in edge_offers(caller):
        for method in ("INFO", "UPDATE", "PRACK", "REFER", "NOTIFY", "MESSAGE", "OPTIONS", "CANCEL", "ACK"):
            caller.send(method, rng.choice([b"", rng.randbytes(200), offer]), flip if rng.random() < 0.3 else None)
            sent += 1
        try:
            statuses.append(await caller.reinvite(offer))
        except TimeoutError:
            statuses.append(0)  # never answered
    return statuses, sent


async def options_answered(sip: tuple[str, int]) -> bool:
    """An OPTIONS from a source that did not attack is answered 200."""
    with udp_from("127.0.0.99") as sock:
        sock.sendto(OPTIONS, sip)
        try:
            answer = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65535), 5.0)
        except TimeoutError:
            return False
    return answer.startswith(b"SIP/2.0 200 ")


async def live_attacks(folder: Path, seconds: float, fuzz: int, garbage: int, flood_seconds: float,
                       seed: int) -> Row:
    pcm = await asyncio.to_thread(speech_8k, seconds)
    crashes = Crashes()
    logging.getLogger().addHandler(crashes)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(crashes.loop_handler)
    sent: dict[str, int] = {}
    statuses: list[int] = []  # of the re-INVITEs inside the attacked call
    try:
        async with serving(folder, first_media_timeout=3.0) as service:
            async def during(caller: SipCall, worker: tuple[str, int]) -> None:
                rtp, sip, (reinvites, in_dialog) = await asyncio.gather(
                    attack_rtp(worker, seed, garbage, flood_seconds), attack_sip(service.sip, seed, fuzz),
                    attack_dialog(caller, seed))
                sent.update(rtp, sip=sip, in_dialog=in_dialog)
                statuses.extend(reinvites)

            attacked, *others = await asyncio.gather(
                call(service.sip, pcm, during=during, service=service, number="+15555550900"),
                *(call(service.sip, pcm, service=service, number=f"+1555555090{n}") for n in (1, 2)))
            answering = await options_answered(service.sip)
            idle = await service.wait_idle(timeout=15.0)
    finally:
        loop.set_exception_handler(previous)
        logging.getLogger().removeHandler(crashes)
    return _row(attacked, others, sent, statuses, answering, idle, crashes, seconds)


def _row(attacked: CallResult, others: list[CallResult], sent: dict[str, int], reinvites: list[int], answering: bool,
         idle: bool, seen: Crashes, seconds: float) -> Row:
    crashes = seen.seen
    clean_end = attacked.completed or (attacked.status == 200 and attacked.hung_up_by_line)
    outcome = (f"{len(crashes)} crashes{': ' + crashes[0] if crashes else ''}; others: echo "
               f"{', '.join(f'{o.echo:.2f}' for o in others)}, hung up by their callers: "
               f"{all(o.completed for o in others)}, garbage at their legs {sum(o.leg.rejected for o in others)}; "
               f"attacked: {'continued' if attacked.completed else 'hung up by the server'}"
               f", echo {attacked.echo:.2f}, {attacked.leg.rejected} datagrams refused, its re-INVITEs answered "
               f"{reinvites}; OPTIONS after: "
               f"{'200' if answering else 'unanswered'}; idle after: {idle}; {seen.logged} warnings logged")
    passed = (not crashes and all(o.completed and o.echo > ECHOED and o.leg.rejected == 0 for o in others)
              and clean_end and answering and idle and 0 not in reinvites
              and (reinvites[-1:] == [200] or attacked.hung_up_by_line))
    return Row("attacks during live calls", f"3 calls of {seconds:g} s; at one's RTP port {sent.get('garbage', 0)} "
               f"garbage, {sent.get('rtcp', 0)} RTCP junk, a flood of {sent.get('flood', 0)}; in its dialog "
               f"{len(reinvites)} re-INVITEs at the edges of SDP and {sent.get('in_dialog', 0)} other requests; at "
               f"SIP {sent.get('sip', 0)} malformed, torture and mutated messages", outcome, passed)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-seconds", type=float, default=20.0, help="length of the calls under attack")
    parser.add_argument("--fuzz", type=int, default=2000, help="mutated SIP messages during the calls")
    parser.add_argument("--rtp-garbage", type=int, default=2000, help="garbage datagrams at the attacked call")
    parser.add_argument("--flood-seconds", type=float, default=3.0, help="how long the RTP flood lasts")
    parser.add_argument("--attack-seed", type=int, default=4475, help="the garbage's and the mutations' RNG")


async def run(args: argparse.Namespace) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="plexline-campaign-live-"))
    try:
        return [await live_attacks(folder, args.live_seconds, args.fuzz, args.rtp_garbage, args.flood_seconds,
                                   args.attack_seed)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
