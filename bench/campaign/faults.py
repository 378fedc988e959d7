"""The campaign's process faults, on a cluster of processes on loopback (`bench.cluster`): Redis with
its append-only file, two control planes and three echo workers, sipp callers sending speech, and a
webhook receiver that checks every signature.

Each row faults one process with calls up and asserts what a user would expect of it: a worker
SIGKILLed, a worker SIGSTOPped until it is reaped and then continued, Redis SIGKILLed and started
again from its append-only file after longer than a heartbeat's life, a control plane SIGKILLed and
started again while its callers talk. Each row's calls end before the next row starts.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.campaign.row import Row
from bench.cluster import HEARTBEAT_TTL, Cluster, build_cluster, start_cluster, wait_for
from bench.echo_latency import speech
from bench.sipp import start_sipp, write_rtp_pcap
from bench.webhook_receiver import Receiver
from telephony.events.signature import new_secret

WORKERS = ["w1", "w2", "w3"]
SLOTS = 4
SIP_TIMEOUT = 170.0  # seconds a sipp call may last before it counts as failed


@dataclass
class Faults:
    """The cluster, the webhook receiver and the callers of the row in progress."""

    cluster: Cluster
    receiver: Receiver
    pcap: Path
    talk: float  # seconds a caller that hangs up itself talks first
    callers: list[asyncio.subprocess.Process] = field(default_factory=list)

    # -- callers ------------------------------------------------------------------------------------

    async def call(self, prefix: str, calls: int, plane: int = 0, scenario: str = "wait_bye.xml",
                   **substitutions: object) -> dict[str, dict]:
        """`calls` sipp calls from `prefix`1..N through a control plane, once they are all active."""
        folder = self.cluster.folder / f"sipp-{prefix}"
        self.callers.append(await start_sipp(
            scenario, self.cluster.planes[plane].sip_port, self.cluster.number, folder, calls=calls,
            timeout=SIP_TIMEOUT, substitutions={"PCAP_FILE": self.pcap, "CALLER": prefix,
                                                "WAIT_MS": int(SIP_TIMEOUT * 1000), **substitutions}))

        async def active() -> dict[str, dict] | None:
            ours = {i: c for i, c in (await self.cluster.in_progress()).items() if c["caller"].startswith(prefix)}
            return ours if len(ours) == calls and all(c["state"] == "active" for c in ours.values()) else None

        return await wait_for(active, 60, f"{calls} calls from {prefix}")

    async def callers_done(self, timeout: float = 60) -> bool:
        """Every caller of the row finished its calls as its scenario says (got its BYE, or its BYE
        answered 200)."""
        outputs = await asyncio.gather(*(asyncio.wait_for(p.communicate(), timeout) for p in self.callers))
        ok = all(p.returncode == 0 for p in self.callers)
        if not ok:
            for p, (output, _) in zip(self.callers, outputs):
                print(f"sipp exited with {p.returncode}:\n{output.decode(errors='replace')[-2000:]}")
        self.callers = []
        return ok

    def hang_up_callers(self) -> None:
        for caller in self.callers:
            if caller.returncode is None:
                caller.kill()
        self.callers = []

    async def end(self, calls: dict[str, dict]) -> None:
        """Ended through the API, half through each control plane: their callers get a BYE."""
        await asyncio.gather(*(self.cluster.end(c, i % 2) for i, c in enumerate(calls)))

    # -- what the cluster says --------------------------------------------------------------------

    async def frames(self, calls: dict[str, dict]) -> dict[str, int]:
        """The engine steps each call took so far, as its worker says."""
        held = {}
        for worker in {c["worker"] for c in calls.values()}:
            held |= await self.cluster.sessions(worker)
        return {c: held[c]["frames"] for c in calls if c in held}

    async def continued(self, calls: dict[str, dict], before: dict[str, int]) -> bool:
        """Still in progress on the same workers, and each stepped since `before`."""
        now = await self.cluster.in_progress()
        same = all(c in now and now[c]["worker"] == record["worker"] for c, record in calls.items())
        after = await self.frames(calls)
        return same and set(after) == set(calls) and all(after[c] > before.get(c, 0) for c in calls)

    async def one_call_per_slot(self) -> bool:
        """Each live worker holds exactly the calls the registry books on it, each in a slot of its own."""
        calls = await self.cluster.in_progress()
        workers = await self.cluster.registered()
        for name, status in workers.items():
            held = await self.cluster.sessions(name)
            slots = [s["slot"] for s in held.values()]
            booked = {c for c, record in calls.items() if record["worker"] == name}
            if set(held) != booked or len(slots) != len(set(slots)) or status["used"] != len(held):
                print(f"{name}: holds {sorted(held)} in slots {slots}, booked {sorted(booked)}, used {status['used']}")
                return False
        return True

    async def reaped(self, worker: str, calls: set[str]) -> bool:
        return worker not in await self.cluster.registered() and not calls & set(await self.cluster.in_progress())

    async def records(self, calls: set[str] | dict[str, dict]) -> dict[str, dict]:
        async def record(call_id: str) -> dict | None:
            return await self.cluster.record(call_id)

        return {c: await wait_for(lambda c=c: record(c), 30, f"the record of {c}") for c in calls}

    async def webhooks(self, calls: set[str] | dict[str, dict], types: tuple[str, ...] = ("call.ended",),
                       timeout: float = 30) -> dict[str, Counter[str]]:
        """Per call, the distinct webhook-ids delivered (2xx, valid signature) of each of `types`,
        once each type of each call has come."""
        def seen() -> dict[str, Counter[str]]:
            found: dict[str, Counter[str]] = {c: Counter() for c in calls}
            for d in self.receiver.accepted():
                call = d.event["data"]["call_id"]
                if call in found and d.event["type"] in types:
                    found[call][d.event["type"]] += 1
            return found

        async def complete() -> dict[str, Counter[str]] | None:
            found = seen()
            return found if all(found[c][t] for c in calls for t in types) else None

        try:
            return await wait_for(complete, timeout, "the calls' webhooks")
        except TimeoutError:
            return seen()

    def one_id_per_event(self) -> bool:
        """Every delivery of an event carried the same webhook-id: no event was sent twice under two ids."""
        ids: dict[tuple[str, str], set[str]] = {}
        for d in self.receiver.deliveries:
            if d.valid:
                ids.setdefault((d.event["data"]["call_id"], d.event["type"]), set()).add(d.msg_id)
        return all(len(i) == 1 for i in ids.values())


Outcome = tuple[str, str, bool, dict[str, float]]  # what was sent, what came back, whether it passes, figures


def exactly_once(found: dict[str, Counter[str]], types: tuple[str, ...] = ("call.ended",)) -> bool:
    return all(found[c][t] == 1 for c in found for t in types)


# -- the rows ---------------------------------------------------------------------------------------


async def worker_killed(f: Faults) -> Outcome:
    victim = "w1"
    calls = await f.call("ka", 2 * len(WORKERS))
    lost = {c for c, record in calls.items() if record["worker"] == victim}
    kept = {c: record for c, record in calls.items() if record["worker"] != victim}
    before = await f.frames(kept)
    f.cluster.workers[victim].child.kill()
    started = time.monotonic()
    await wait_for(lambda: f.reaped(victim, lost), 30, f"{victim} reaped")
    reaped_after = time.monotonic() - started
    records = await f.records(lost)
    ended = await f.webhooks(lost)
    continued = await f.continued(kept, before)
    booked = await f.one_call_per_slot()
    new = await f.call("kb", 4)
    landed = Counter(record["worker"] for record in new.values())
    booked = booked and await f.one_call_per_slot()
    await f.end(kept | new)
    callers = await f.callers_done()
    f.cluster.workers[victim].child.start()  # back for the next rows
    await f.cluster.up(f.cluster.workers[victim])
    why = {r["reason"] for r in records.values()}
    failed = all(r["outcome"] == "failed" and victim in r["reason"] for r in records.values())
    return (f"{len(calls)} SIP calls on 3 workers; {victim} (holding {len(lost)}) "
            f"killed; then 4 new calls",
            f"reaped after {reaped_after:.1f} s, its calls' records failed ({'; '.join(why)}), call.ended sent "
            f"{sum(c['call.ended'] for c in ended.values())}/{len(lost)}; the {len(kept)} others continued: "
            f"{'yes' if continued else 'NO'}; one call per slot: {'yes' if booked else 'NO'}; new calls on "
            f"{dict(sorted(landed.items()))}; every caller got its BYE: {'yes' if callers else 'NO'}",
            bool(lost) and failed and exactly_once(ended) and continued and booked and victim not in landed
            and sum(landed.values()) == 4 and callers,
            {"calls": len(calls), "lost": len(lost), "reaped_after_s": round(reaped_after, 2), "new_calls": len(new)})


async def worker_stopped(f: Faults) -> Outcome:
    victim = f.cluster.workers["w2"]
    calls = await f.call("sa", 2 * len(WORKERS))
    paused = {c for c, record in calls.items() if record["worker"] == "w2"}
    others = {c: record for c, record in calls.items() if record["worker"] != "w2"}
    before = await f.frames(others)
    victim.child.signal(signal.SIGSTOP)
    started = time.monotonic()
    await wait_for(lambda: f.reaped("w2", paused), 30, "w2 reaped")
    reaped_after = time.monotonic() - started
    reaped = await f.records(paused)
    ended = await f.webhooks(paused)
    continued = await f.continued(others, before)
    victim.child.signal(signal.SIGCONT)

    async def back_without_them() -> bool:
        alive = (await f.cluster.registered()).get("w2", {}).get("alive", False)
        return alive and not paused & set(await f.cluster.sessions("w2"))

    await wait_for(back_without_them, 30, "w2 back, without the reaped calls")
    await asyncio.sleep(HEARTBEAT_TTL)  # its own ends of the reaped calls reported, if it reports them
    unchanged = await f.records(paused) == reaped
    booked = await f.one_call_per_slot()
    new = await f.call("sb", 3)
    landed = Counter(record["worker"] for record in new.values())
    booked = booked and await f.one_call_per_slot()
    once = exactly_once(await f.webhooks(paused)) and f.one_id_per_event()
    await f.end(others | new)
    callers = await f.callers_done()
    failed = all(r["outcome"] == "failed" and "w2" in r["reason"] for r in reaped.values())
    return (f"{len(calls)} SIP calls on 3 workers; w2 (holding "
            f"{len(paused)}) stopped until reaped, then continued; then 3 new calls",
            f"reaped after {reaped_after:.1f} s, records failed, call.ended sent "
            f"{sum(c['call.ended'] for c in ended.values())}/{len(paused)}; the {len(others)} others continued: "
            f"{'yes' if continued else 'NO'}; after SIGCONT: the reaped calls ended on w2, records unchanged: "
            f"{'yes' if unchanged else 'NO'}, one call.ended each: {'yes' if once else 'NO'}, one call per slot: "
            f"{'yes' if booked else 'NO'}; new calls on {dict(sorted(landed.items()))}; callers got their BYE: "
            f"{'yes' if callers else 'NO'}",
            bool(paused) and failed and exactly_once(ended) and continued and unchanged and once and booked
            and landed["w2"] >= 1 and callers,
            {"calls": len(calls), "reaped": len(paused), "reaped_after_s": round(reaped_after, 2),
             "new_on_w2": landed["w2"]})


async def redis_restarted(f: Faults, down: float) -> Outcome:
    calls = await f.call("ra", 2 * len(WORKERS))
    before = await f.frames(calls)
    f.cluster.redis.kill()
    async with httpx.AsyncClient(timeout=30, headers=f.cluster.operator_headers) as http:
        during = (await http.post(f.cluster.planes[0].url + "/calls",
                                  json={"to": f.cluster.number, "from": "+15550000999"})).status_code
    await asyncio.sleep(max(0.0, down - 0.5))
    await f.cluster.start_redis()
    await asyncio.sleep(2 * HEARTBEAT_TTL)  # a reaper that took the missed heartbeats for lost workers has run
    continued = await f.continued(calls, before)
    new = await f.call("rb", 3)
    await f.end(calls | new)
    callers = await f.callers_done()
    records = await f.records(calls | new)
    outcomes = Counter(r["outcome"] for r in records.values())
    types = ("call.started", "call.ended")
    events = await f.webhooks(calls | new, types)
    delivered = sum(sum(c.values()) for c in events.values())
    return (f"{len(calls)} SIP calls; redis-server SIGKILLed, down {down:g} s "
            f"(heartbeats live {HEARTBEAT_TTL:g} s), started again on its append-only file; then 3 new calls",
            f"a call during the outage: {during}; the {len(calls)} calls continued: {'yes' if continued else 'NO'}; "
            f"{len(new)} new calls admitted; records {dict(outcomes)}; webhooks {delivered}/{2 * len(records)} "
            f"(call.started and call.ended, once each); callers got their BYE: {'yes' if callers else 'NO'}",
            during == 503 and continued and outcomes == {"agent_hung_up": len(records)}
            and exactly_once(events, types) and callers,
            {"calls": len(calls), "down_s": down, "new_calls": len(new), "webhooks": delivered})


async def plane_restarted(f: Faults) -> Outcome:
    one, two = f.cluster.planes
    to_other = await f.call("pa", 4, scenario="hang_up.xml", TALK_MS=int(f.talk * 1000), BYE_PORT=two.sip_port)
    to_same = await f.call("pb", 2, scenario="hang_up.xml", TALK_MS=int(2 * f.talk * 1000), BYE_PORT=one.sip_port)
    calls = to_other | to_same
    await f.webhooks(calls, ("call.started",))  # none in flight at the kill: a lease would hold it a minute
    before = await f.frames(calls)
    one.child.kill()
    started = time.monotonic()
    await asyncio.sleep(1.0)
    continued = await f.continued(calls, before)
    one.child.start()
    await f.cluster.up(one)
    back_after = time.monotonic() - started
    callers = await f.callers_done(timeout=2 * f.talk + 60)
    await wait_for(lambda: _none_of(f, calls), 30, "the calls ended")
    records = await f.records(calls)
    outcomes = Counter(r["outcome"] for r in records.values())
    ended = await f.webhooks(calls)
    return (f"{len(calls)} SIP calls through plane0; plane0 SIGKILLed "
            f"and started again; {len(to_other)} callers hang up through plane1, {len(to_same)} through plane0 "
            "(restarted)",
            f"the calls continued: {'yes' if continued else 'NO'}; plane0 back after {back_after:.1f} s; every "
            f"BYE answered 200: {'yes' if callers else 'NO'}; records {dict(outcomes)}; call.ended sent "
            f"{sum(c['call.ended'] for c in ended.values())}/{len(calls)}",
            continued and callers and outcomes == {"caller_hung_up": len(calls)} and exactly_once(ended),
            {"calls": len(calls), "back_after_s": round(back_after, 2)})


async def _none_of(f: Faults, calls: dict[str, dict]) -> bool:
    return not set(calls) & set(await f.cluster.in_progress())


# -- the group --------------------------------------------------------------------------------------


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults-redis-down", type=float, default=3 * HEARTBEAT_TTL,
                        help="seconds Redis stays down before it is started again")
    parser.add_argument("--faults-talk", type=float, default=8.0,
                        help="seconds a caller talks before it hangs up itself (the control plane's row)")


async def run(args: argparse.Namespace) -> list[Row]:
    secret = new_secret()
    with tempfile.TemporaryDirectory(prefix="plexline-faults-") as temp, Receiver(secret) as receiver:
        folder = Path(temp)
        webhook = {"url": receiver.url, "secret": secret, "allow_http": True, "allow_private_network": True}
        cluster = build_cluster(folder, WORKERS, planes=2, slots=SLOTS, webhook=webhook)
        faults = Faults(cluster, receiver, write_rtp_pcap(folder / "speech.pcap", speech(150.0, 8000)), args.faults_talk)
        rows = []
        try:
            await start_cluster(cluster)
            for name, row in [("worker SIGKILLed mid-call", worker_killed(faults)),
                              ("worker SIGSTOPped mid-call, then SIGCONTed", worker_stopped(faults)),
                              ("Redis restarted with calls up", redis_restarted(faults, args.faults_redis_down)),
                              ("control plane restarted with calls up", plane_restarted(faults))]:
                rows.append(await _row(faults, name, row))
        finally:
            faults.hang_up_callers()
            cluster.stop()
        return rows


async def _row(f: Faults, name: str, row: Awaitable[Outcome]) -> Row:
    """The row, or a failed one that says what went wrong (its callers hung up, so the next row starts clean)."""
    started = time.monotonic()
    try:
        sent, outcome, passed, figures = await row
        return Row(name, sent, outcome, passed, figures | {"seconds": round(time.monotonic() - started, 1)})
    except Exception as error:
        f.hang_up_callers()
        logs = "; ".join(f"{c.name}: {c.tail(3)}" for c in f.cluster.children() if not c.running)
        return Row(name, "-", f"error: {error!r}" + (f"; stopped: {logs}" if logs else ""), False)
