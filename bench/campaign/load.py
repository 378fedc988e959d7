"""The campaign's load rows: `plexline serve` on the echo engine with C slots is offered 1.5 C calls at
once, about half over SIP (bench.sip_caller) and half over WebRTC (WHIP, aiortc: bench.webrtc_caller),
inside the loopback-only namespace.

Asserted: no more than C admitted (all C: every call is offered at once and held); every call
beyond capacity refused cleanly (SIP 503 or 486 with Retry-After, WHIP 503 with Retry-After); the
admitted calls keep real time (the echo of each caller's tone comes back whole and its packets on
schedule, bench.realtime; loose bounds, the figures reported); after the hang-ups every slot is free,
the worker has no session, and the server's open files and event-loop tasks are back where they were
before the load; every call, refused ones too, has a call record with its outcome and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
from pathlib import Path

import httpx

from bench.campaign.calls import (
    SETTLE,
    SIP_RATE,
    Resources,
    caller_of,
    pcm16,
    refused_cleanly,
    resources,
    sip_caller,
    tone,
    until_idle,
    warm_up,
    webrtc_caller,
)
from bench.campaign.namespace import rows_inside
from bench.campaign.row import Row
from bench.loopback import inside
from bench.realtime import RealTime, real_time
from bench.serving import Server, serving
from bench.sip_caller import Refusal, SipCall
from bench.webrtc_caller import RATE as WEBRTC_RATE
from bench.webrtc_caller import WhipCall

SIP_FLOOR = 500.0  # RMS of an int16 frame that carries the caller's tone (its echo has ~4000)
WEBRTC_FLOOR = 0.02  # the same for a float frame (~0.14)
ECHOED_AT_LEAST = 0.8  # of the sound sent, back as echo
LATE_P99_AT_MOST_MS = 1000.0  # loose: a loaded 2-core machine delays the callers too
TAIL = 0.6  # seconds after the tone before the hang-up: the echo's last frames on their way


async def records_of(server: Server, callers: set[str]) -> dict[str, dict]:
    """The call record of each caller once all are written (or after SETTLE: those there are)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    async with httpx.AsyncClient(base_url=server.url, headers=server.operator) as client:
        while True:
            records = (await client.get("/tenants/acme/call-records", params={"limit": 1000})).json()
            found = {r["from"]: r for r in records if r["from"] in callers}
            if len(found) == len(callers) or loop.time() > deadline:
                return found
            await asyncio.sleep(0.2)


def sip_real_time(call: SipCall, seconds: float) -> RealTime:
    frames, media, arrivals = call.heard()
    return real_time(int(seconds * 50), frames, SIP_FLOOR, media, arrivals)


def webrtc_real_time(call: WhipCall, seconds: float) -> RealTime:
    heard = call.received
    return real_time(min(len(call.source.sent_at), int(seconds * 50)), heard.frames, WEBRTC_FLOOR,
                     [p / WEBRTC_RATE for p in heard.pts], heard.arrived_at)


async def offer_load(server: Server, slots: int, seconds: float) -> list[Row]:
    """1.5 `slots` calls at once (the WebRTC offers made first, so that all arrive together), then,
    while every slot is taken, one more call of each kind (refused, whatever the race refused)."""
    await warm_up(server)
    before = await asyncio.to_thread(resources, server)
    offered = math.ceil(1.5 * slots)
    sips = [sip_caller(server, f"+1555010{i:04d}") for i in range(offered - offered // 2 + 1)]
    whips = [webrtc_caller(server, seconds, i, f"127.0.1.{i + 1}") for i in range(offered // 2 + 1)]
    await asyncio.gather(*(c.prepare() for c in whips))
    answers = await asyncio.gather(*(c.start() for c in sips[:-1]), *(c.start() for c in whips[:-1]))
    sip_answers, whip_answers = list(answers[:len(sips) - 1]), list(answers[len(sips) - 1:])
    up_sip = [c for c, a in zip(sips, sip_answers) if a is None]
    up_whip = [c for c, a in zip(whips, whip_answers) if a.status_code == 201]
    await asyncio.gather(*(asyncio.wait_for(c.connected.wait(), 20) for c in up_whip))
    peak = len(await asyncio.to_thread(server.sessions))
    sip_answers.append(await sips[-1].start())
    whip_answers.append(await whips[-1].start())
    await asyncio.gather(*(c.talk(pcm16(tone(seconds, SIP_RATE, i))) for i, c in enumerate(up_sip)),
                         until_sent(up_whip, seconds))
    peak = max(peak, len(await asyncio.to_thread(server.sessions)))
    await asyncio.sleep(TAIL)
    await asyncio.gather(*(c.hang_up() for c in up_sip), *(c.hang_up() for c in up_whip))
    timing = [sip_real_time(c, seconds) for c in up_sip] + [webrtc_real_time(c, seconds) for c in up_whip]
    free, sessions, after = await until_idle(server, before)
    records = await records_of(server, {caller_of(c) for c in [*sips, *whips]})
    refusals = ([a for a in sip_answers if a is not None], [a for a in whip_answers if a.status_code != 201])
    admitted = len(up_sip) + len(up_whip)
    return [
        admission_row(slots, offered, len(up_sip), len(up_whip), peak, *refusals),
        real_time_row(admitted, seconds, timing),
        leak_row(slots, free, sessions, before, after),
        records_row(len(sips) + len(whips), admitted, records, {caller_of(c) for c in [*up_sip, *up_whip]}),
    ]


async def until_sent(calls: list[WhipCall], seconds: float) -> None:
    """Until each WebRTC caller has sent its whole tone (each started when its connection did)."""
    while any(len(c.source.sent_at) < seconds * 50 for c in calls):
        await asyncio.sleep(0.1)


def admission_row(slots: int, offered: int, up_sip: int, up_webrtc: int, peak: int,
                  sip_refusals: list[Refusal], webrtc_refusals: list[httpx.Response]) -> Row:
    admitted, refused = up_sip + up_webrtc, len(sip_refusals) + len(webrtc_refusals)
    statuses = sorted({f"SIP {r.status} Retry-After {r.retry_after}" for r in sip_refusals}
                      | {f"WHIP {r.status_code} Retry-After {r.headers.get('Retry-After')}" for r in webrtc_refusals})
    sip = offered - offered // 2
    return Row("load: 1.5x capacity, SIP and WebRTC at once",
               f"{offered} calls at once ({sip} SIP, {offered - sip} WHIP) on {slots} slots, then 1 SIP and "
               "1 WHIP while full",
               f"{admitted} admitted ({up_sip} SIP, {up_webrtc} WebRTC), at most {peak} sessions; {refused} refused "
               f"({len(sip_refusals)} SIP, {len(webrtc_refusals)} WHIP): {', '.join(statuses)}",
               admitted == slots and peak <= slots and refused_cleanly(sip_refusals, webrtc_refusals)
               and refused == offered + 2 - slots,
               {"offered": offered + 2, "admitted": admitted, "peak_sessions": peak, "refused": refused,
                "refused_sip": len(sip_refusals), "refused_webrtc": len(webrtc_refusals)})


def real_time_row(admitted: int, seconds: float, timing: list[RealTime]) -> Row:
    echoed = min((t.echoed for t in timing), default=0.0)
    p99 = max((t.late_p99_ms for t in timing), default=float("nan"))
    worst = max((t.late_max_ms for t in timing), default=float("nan"))
    return Row("load: the admitted calls keep real time",
               f"{admitted} calls, a {seconds:g} s tone each, echoed back",
               f"echo back {echoed:.2f}-{max((t.echoed for t in timing), default=0.0):.2f} of the sound sent; "
               f"packet lateness p99 {p99:.0f} ms at worst (max {worst:.0f} ms)",
               len(timing) == admitted > 0 and echoed >= ECHOED_AT_LEAST and p99 <= LATE_P99_AT_MOST_MS,
               {"echoed_min": echoed, "late_p99_ms_max": p99, "late_max_ms": worst})


def leak_row(slots: int, free: int, sessions: list[dict], before: Resources, after: Resources) -> Row:
    return Row("load: nothing leaks after the hang-ups", "every admitted call hung up",
               f"free slots {free}/{slots}, worker sessions {len(sessions)}; open files {before.open_fds} -> "
               f"{after.open_fds}, event-loop tasks {before.tasks} -> {after.tasks}, threads {before.threads} -> "
               f"{after.threads}",
               free == slots and not sessions and after.open_fds <= before.open_fds and after.tasks <= before.tasks,
               {"free_slots": free, "sessions": len(sessions), "open_fds_before": before.open_fds,
                "open_fds_after": after.open_fds, "tasks_before": before.tasks, "tasks_after": after.tasks,
                "threads_before": before.threads, "threads_after": after.threads})


def records_row(offered: int, admitted: int, records: dict[str, dict], answered: set[str]) -> Row:
    outcomes = sorted({(r["outcome"], r["reason"]) for r in records.values()})
    right = all(r["outcome"] == ("caller_hung_up" if who in answered else "refused") and r["reason"]
                for who, r in records.items())
    return Row("load: every call has a call record", f"{offered} calls, {admitted} answered",
               f"{len(records)}/{offered} records: " + "; ".join(f"{o} ({reason})" for o, reason in outcomes),
               len(records) == offered and right, {"records": len(records)})


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--load-slots", type=int, default=4, help="the server's slots (offered 1.5 times as many)")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="each admitted call's tone")


async def run(args: argparse.Namespace) -> list[Row]:
    if not inside():
        return await rows_inside("load", ["--load-slots", str(args.load_slots), "--load-seconds", str(args.load_seconds)])
    with tempfile.TemporaryDirectory(prefix="plexline-load-") as folder, \
            serving("echo", args.load_slots, Path(folder)) as server:
        return await offer_load(server, args.load_slots, args.load_seconds)
