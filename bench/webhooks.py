"""Webhook delivery: throughput (events/s) and the delay from a call's end to its first attempt.

    python -m bench.webhooks [--events 4000] [--rate 200] [--seconds 10] [--per-endpoint 8]

For each outbox (the journal file of `plexline serve`, and Redis with its append-only file on,
appendfsync everysec, as deployed), against a receiver in another process on loopback that
answers 204 at once:

- throughput: `--events` call.ended events (a two-minute call's transcript each, about 17 KB)
  already in the outbox, delivered by one dispatcher with `--per-endpoint` attempts in flight
  to the one receiver (the dispatcher's own limit, `--concurrency`, spans all receivers);
- delay: calls ending at `--rate` per second for `--seconds`, each reported as a worker does
  (`CallHistory.publish`: the call record saved, the event appended durably), timed from the
  moment the call ended to the start of the first delivery attempt (p50, p99, max).

A redis-server of its own is started on a free loopback port. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from agent.contracts import events as ev
from bench.local_redis import local_redis
from personas.tenant import Webhook
from telephony.events.call_history import CallHistory, open_call_history, outbox_event
from telephony.events.dispatcher import WebhookDispatcher
from telephony.events.outbox import RetryPolicy
from telephony.events.signature import new_secret
from telephony.events.webhook_client import Attempt, WebhookClient

RECEIVER = r"""
import asyncio, sys

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def _two_minute_transcript() -> ev.Transcript:
    """24 turns of 12 words, answered and hung up."""
    items: list = [ev.Mark(at=0.0, event="answered")]
    for turn in range(24):
        start = turn * 5.0
        words = [ev.Word(text=f"word{w}", start=start + 0.3 * w, end=start + 0.3 * w + 0.2) for w in range(12)]
        items.append(ev.Speech(speaker="agent", start=words[0].start, end=words[-1].end,
                               text=" ".join(w.text for w in words), words=words))
    items.append(ev.Mark(at=120.0, event="caller_hung_up", detail="the caller hung up"))
    return ev.Transcript(items=items)


TRANSCRIPT = _two_minute_transcript()


def ended_event(n: int) -> ev.CallEnded:
    answered = datetime.now(timezone.utc) - timedelta(seconds=120)
    data = ev.CallEndedData(
        call_id=f"bench-{n}", tenant="acme", line="support", from_="+15555550999", to="+15555550100",
        persona=ev.Persona(voice="NATF2", role="You work for Acme Home Goods and your name is Maya."),
        answered_at=answered, ended_at=answered + timedelta(seconds=120), duration_seconds=120.0,
        outcome="caller_hung_up", reason="the caller hung up", transcript=TRANSCRIPT, recording=None)
    return ev.CallEnded(id=ev.event_id("acme", data.call_id, "call.ended"), timestamp=data.ended_at, data=data)


class TimedClient(WebhookClient):
    """Notes when each event's first attempt starts."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first_attempt: dict[str, float] = {}
        self.delivered = 0

    async def send(self, webhook: Webhook, msg_id: str, body: bytes) -> Attempt:
        self.first_attempt.setdefault(msg_id, time.perf_counter())
        attempt = await super().send(webhook, msg_id, body)
        self.delivered += attempt.delivered
        return attempt


async def _dispatch(history: CallHistory, url: str, concurrency: int,
                    per_endpoint: int) -> tuple[WebhookDispatcher, TimedClient]:
    hook = Webhook(url=url, secret=new_secret(), allow_http=True, allow_private_network=True)
    client = TimedClient(timeout=15, per_endpoint=per_endpoint)
    dispatcher = WebhookDispatcher(history.outbox, lambda tenant: hook, client, RetryPolicy(), concurrency,
                                   claim_wait=0.1)
    dispatcher.start()
    return dispatcher, client


async def throughput(history: CallHistory, url: str, events: int, concurrency: int, per_endpoint: int) -> dict:
    batch = [outbox_event(ended_event(n)) for n in range(events)]
    for i in range(0, events, 500):
        await history.outbox.append(batch[i:i + 500])
    start = time.perf_counter()
    dispatcher, client = await _dispatch(history, url, concurrency, per_endpoint)
    while client.delivered < events:
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - start
    await dispatcher.stop()
    await client.close()
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
            "body_bytes": len(batch[0].body)}


async def delay(history: CallHistory, url: str, rate: float, seconds: float, concurrency: int,
                per_endpoint: int) -> dict:
    dispatcher, client = await _dispatch(history, url, concurrency, per_endpoint)
    ended_at: dict[str, float] = {}
    count = int(rate * seconds)
    start = time.perf_counter()

    async def end_call(n: int) -> None:
        event = ended_event(1_000_000 + n)
        ended_at[event.id] = time.perf_counter()
        await history.publish([event])

    calls = []
    for n in range(count):  # calls end on a steady schedule, each reported on its own
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        calls.append(asyncio.ensure_future(end_call(n)))
    await asyncio.gather(*calls)
    while client.delivered < count:
        await asyncio.sleep(0.01)
    await dispatcher.stop()
    await client.close()
    delays = np.array([client.first_attempt[i] - ended_at[i] for i in ended_at]) * 1000
    return {"rate_per_s": rate, "calls": count, "p50_ms": round(float(np.percentile(delays, 50)), 2),
            "p99_ms": round(float(np.percentile(delays, 99)), 2), "max_ms": round(float(delays.max()), 2)}


@contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def run_one(kind: str, redis_url: str | None, folder: Path, url: str, args: argparse.Namespace) -> dict:
    rows = {}
    for phase in ("throughput", "delay"):
        data = folder / f"{kind}-{phase}"
        history = open_call_history(redis_url, f"bench-{phase}-{time.time_ns()}:", data / "recordings", data_dir=data)
        if phase == "throughput":
            rows[phase] = await throughput(history, url, args.events, args.concurrency, args.per_endpoint)
        else:
            rows[phase] = await delay(history, url, args.rate, args.seconds, args.concurrency, args.per_endpoint)
        await history.close()
    return {"outbox": kind, **rows}


def table(rows: list[dict]) -> str:
    lines = [f"{'outbox':<7} {'events/s':>9} {'delay at':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    for r in rows:
        t, d = r["throughput"], r["delay"]
        lines.append(f"{r['outbox']:<7} {t['events_per_s']:>9.0f} {d['rate_per_s']:>7.0f}/s {d['p50_ms']:>8.2f} "
                     f"{d['p99_ms']:>8.2f} {d['max_ms']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000, help="events for the throughput run")
    parser.add_argument("--rate", type=float, default=200.0, help="calls ending per second in the delay run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the delay run")
    parser.add_argument("--concurrency", type=int, default=64, help="attempts in flight, all receivers")
    parser.add_argument("--per-endpoint", type=int, default=8, help="attempts in flight to one receiver")
    parser.add_argument("--json", type=Path, default=Path("bench-webhooks.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, local_redis(Path(tmp), "--appendonly", "yes", "--appendfsync", "everysec") as redis_url, \
            process([sys.executable, "-c", RECEIVER]) as receiver:
        url = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hooks"
        rows = [asyncio.run(run_one("file", None, Path(tmp), url, args)),
                asyncio.run(run_one("redis", redis_url, Path(tmp), url, args))]
    result = {"benchmark": "webhook delivery", "python": platform.python_version(), "machine": platform.machine(),
              "cpus": len(os.sched_getaffinity(0)), "concurrency": args.concurrency,
              "per_endpoint": args.per_endpoint, "rows": rows}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
