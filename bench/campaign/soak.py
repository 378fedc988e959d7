"""The campaign's soak rows: minutes (30 by default) of churning calls against `plexline serve` on the
tiny model (dummy: random weights, the engine's whole step on the CPU), inside the loopback namespace.

Calls arrive at random (Poisson, offering `--soak-load` of the slots), last 2 to 8 s, one in four over
WebRTC and the rest over SIP; those that find every slot taken are refused, and must be refused
cleanly. Every `--soak-sample` seconds the server process is sampled: RSS, open files and threads
(/proc), its event loop's tasks, its engine's recent step time p99 and its calls in progress
(/metrics); each answered call adds the p99 of its packets' lateness (bench.realtime). Reported: each
series' least-squares slope per minute after the warm-up, with the calls in progress factored out
(a call holds files, tasks and memory while it lasts; what grows beyond that is a leak). Asserted:
the RSS slope under `--soak-rss-slope` MiB/min; after the last call, open files and tasks back to
their baseline (idle, after a warm-up call of each kind); no call failed; the server's counts of
admitted and refused calls equal the callers'.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx
import numpy as np

from bench.campaign.calls import (
    SIP_RATE,
    Resources,
    pcm16,
    refused_cleanly,
    sip_caller,
    tone,
    until_idle,
    warm_up,
    webrtc_caller,
)
from bench.campaign.namespace import rows_inside
from bench.campaign.row import Row
from bench.loopback import inside
from bench.realtime import lateness
from bench.serving import METRICS_TIMEOUT, Server, serving
from bench.webrtc_caller import RATE as WEBRTC_RATE

SHORTEST, LONGEST = 2.0, 8.0  # seconds a call lasts
WEBRTC_SHARE = 0.25
SERIES = ("rss_mib", "open_fds", "tasks", "threads", "step_p99_ms")


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the churn began
    in_progress: int  # the engine's slots in use
    rss_mib: float
    open_fds: int
    tasks: int
    threads: int
    step_p99_ms: float


@dataclass
class Tally:
    """What the callers saw."""

    answered: int = 0
    refused: int = 0
    refused_cleanly: bool = True
    failures: list[str] = field(default_factory=list)
    lateness: list[tuple[float, float]] = field(default_factory=list)  # (seconds since the churn, p99 ms)


def snapshot(server: Server, at: float) -> Sample:
    metrics = server.metrics()
    step = next((v for k, v in metrics.items() if k.startswith('plexline_engine_step_recent_seconds{quantile="0.99"')),
                float("nan"))
    used = sum(v for k, v in metrics.items() if k.startswith('plexline_engine_slots{state="used"'))
    return Sample(at, int(used), server.rss_bytes() / 2**20, server.open_fds(), int(metrics["plexline_event_loop_tasks"]),
                  server.threads(), step * 1000)


def counted(server: Server) -> tuple[float, float]:
    """The server's admitted and refused calls so far (every tenant, every reason)."""
    metrics = server.metrics()
    return (sum(v for k, v in metrics.items() if k.startswith("plexline_calls_admitted_total")),
            sum(v for k, v in metrics.items() if k.startswith("plexline_calls_refused_total")))


def p99_ms(media: list[float], arrivals: list[float]) -> float:
    late = lateness(media, arrivals)
    return float(np.percentile(late, 99) * 1000) if late.size else float("nan")


async def sip_call(server: Server, number: int, seconds: float, tally: Tally) -> float | None:
    """One SIP call; the p99 of its packets' lateness, or None when it was refused."""
    call = sip_caller(server, f"+1555030{number % 10000:04d}")
    refusal = await call.start()
    if refusal is not None:
        tally.refused_cleanly &= refused_cleanly([refusal], [])
        return None
    await call.talk(pcm16(tone(seconds, SIP_RATE, number % 20)))
    await call.hang_up()
    _, media, arrivals = call.heard()
    return p99_ms(media, arrivals)


async def webrtc_call(server: Server, number: int, seconds: float, tally: Tally) -> float | None:
    call = webrtc_caller(server, seconds, number % 20)
    answer = await call.start()
    if answer.status_code != 201:
        tally.refused_cleanly &= refused_cleanly([], [answer])
        return None
    try:
        await asyncio.wait_for(call.connected.wait(), 20)
        await asyncio.sleep(seconds)
    finally:
        await call.hang_up()
    return p99_ms([p / WEBRTC_RATE for p in call.received.pts], call.received.arrived_at)


async def one_call(server: Server, number: int, seconds: float, webrtc: bool, tally: Tally, start: float) -> None:
    try:
        p99 = await (webrtc_call if webrtc else sip_call)(server, number, seconds, tally)
    except Exception as error:  # a call that broke is a finding of the soak, not the end of it
        tally.failures.append(f"call {number}: {error!r}")
        return
    if p99 is None:
        tally.refused += 1
    else:
        tally.answered += 1
        tally.lateness.append((asyncio.get_running_loop().time() - start, p99))


async def churn(server: Server, seconds: float, rate: float, tally: Tally, start: float) -> int:
    """Calls arriving at `rate` a second for `seconds`; returns how many, once all have ended."""
    rng = np.random.default_rng(19)
    loop = asyncio.get_running_loop()
    calls: set[asyncio.Task[None]] = set()
    number = 0
    while (wait := rng.exponential(1 / rate)) < start + seconds - loop.time():
        await asyncio.sleep(wait)
        task = asyncio.ensure_future(one_call(server, number, rng.uniform(SHORTEST, LONGEST),
                                              rng.random() < WEBRTC_SHARE, tally, start))
        calls.add(task)
        task.add_done_callback(calls.discard)
        number += 1
    await asyncio.gather(*calls)
    return number


@dataclass
class Scrapes:
    """How the server answered the sampler's /metrics requests (as a Prometheus scrape would)."""

    seconds: list[float] = field(default_factory=list)  # how long each answered one took
    unanswered: list[float] = field(default_factory=list)  # when one got no answer in METRICS_TIMEOUT


async def sample(server: Server, every: float, start: float, stop: asyncio.Event) -> tuple[list[Sample], Scrapes]:
    """A sample every `every` seconds until `stop`; one the server does not answer in time is
    counted, not fatal (a long run keeps its series)."""
    loop, samples, scrapes = asyncio.get_running_loop(), [], Scrapes()
    while not stop.is_set():
        asked = loop.time()
        try:
            samples.append(await asyncio.to_thread(snapshot, server, asked - start))
            scrapes.seconds.append(loop.time() - asked)
        except httpx.TimeoutException:
            scrapes.unanswered.append(asked - start)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    return samples, scrapes


def slope(at: np.ndarray, values: np.ndarray, in_progress: np.ndarray | None = None) -> float:
    """Least-squares growth per minute of `values` over `at` (seconds), with the calls in progress as a
    second regressor when given (their own files, tasks and memory are not growth)."""
    keep = np.isfinite(values)
    if keep.sum() < 3:
        return float("nan")
    columns = [np.ones(keep.sum()), at[keep] / 60]
    if in_progress is not None and np.ptp(in_progress[keep]) > 0:
        columns.append(in_progress[keep])
    coefficients, *_ = np.linalg.lstsq(np.column_stack(columns), values[keep], rcond=None)
    return float(coefficients[1])


def slopes(samples: list[Sample], tally: Tally, warm_up_seconds: float) -> dict[str, float]:
    kept = [s for s in samples if s.at >= warm_up_seconds]
    at, busy = np.array([s.at for s in kept]), np.array([s.in_progress for s in kept], np.float64)
    out = {f"{name}_per_min": round(slope(at, np.array([getattr(s, name) for s in kept], np.float64), busy), 3)
           for name in SERIES}
    late = [(t, p) for t, p in tally.lateness if t >= warm_up_seconds]
    out["late_p99_ms_per_min"] = round(slope(np.array([t for t, _ in late]), np.array([p for _, p in late])), 3)
    return out


async def soak(server: Server, args: argparse.Namespace) -> list[Row]:
    await warm_up(server)
    before = await asyncio.to_thread(snapshot, server, 0.0)
    admitted_before, refused_before = await asyncio.to_thread(counted, server)
    loop, tally, stop = asyncio.get_running_loop(), Tally(), asyncio.Event()
    start = loop.time()
    rate = args.soak_load * args.soak_slots / ((SHORTEST + LONGEST) / 2)
    sampler = asyncio.ensure_future(sample(server, args.soak_sample, start, stop))
    try:
        offered = await churn(server, args.soak_minutes * 60, rate, tally, start)
    finally:
        stop.set()
        samples, scrapes = await sampler
    baseline = Resources(before.open_fds, before.tasks, before.threads)
    free, sessions, after = await until_idle(server, baseline)
    admitted, refused = (a - b for a, b in zip(await asyncio.to_thread(counted, server),
                                               (admitted_before, refused_before)))
    if args.soak_samples is not None:
        write_samples(args.soak_samples, samples)
    return [churn_row(args, rate, offered, tally, admitted, refused),
            flat_row(args, samples, tally, baseline, after, free, sessions), scrape_row(scrapes)]


def write_samples(path: Path, samples: list[Sample]) -> None:
    """The series behind the slopes, one CSV line a sample (to plot, or to see where a trend began)."""
    names = [f.name for f in fields(Sample)]
    path.write_text("\n".join([",".join(names)] + [",".join(f"{getattr(s, n):.6g}" for n in names) for s in samples]) + "\n")


def churn_row(args: argparse.Namespace, rate: float, offered: int, tally: Tally, admitted: float,
              refused: float) -> Row:
    failed = len(tally.failures)
    return Row("soak: churning calls",
               f"{args.soak_minutes:g} min of calls arriving at {rate:.2f}/s ({SHORTEST:g}-{LONGEST:g} s each, 1 in "
               f"{1 / WEBRTC_SHARE:.0f} over WebRTC) on {args.soak_slots} slots, the {args.soak_model} model",
               f"{offered} calls: {tally.answered} answered, {tally.refused} refused "
               f"({'each' if tally.refused_cleanly else 'NOT each'} SIP 486/503 or WHIP 503 with Retry-After), "
               f"{failed} failed{': ' + '; '.join(tally.failures[:3]) if failed else ''}; the server counted "
               f"{admitted:g} admitted, {refused:g} refused",
               failed == 0 and tally.refused_cleanly and tally.answered > 0
               and (admitted, refused) == (tally.answered, tally.refused),
               {"offered": offered, "answered": tally.answered, "refused": tally.refused, "failed": failed,
                "server_admitted": admitted, "server_refused": refused})


def flat_row(args: argparse.Namespace, samples: list[Sample], tally: Tally, before: Resources, after: Resources,
             free: int, sessions: list[dict]) -> Row:
    warm = args.soak_warm_up * 60
    rates = slopes(samples, tally, warm)
    rss = [s.rss_mib for s in samples if s.at >= warm]
    return Row("soak: memory, files, tasks and step time flat",
               f"{len(samples)} samples, one every {args.soak_sample:g} s; slopes after {args.soak_warm_up:g} min "
               "(calls in progress factored out)",
               f"per minute: RSS {rates['rss_mib_per_min']:+.2f} MiB (limit {args.soak_rss_slope:g}; "
               f"{rss[0] if rss else float('nan'):.0f} -> {rss[-1] if rss else float('nan'):.0f} MiB), "
               f"open files {rates['open_fds_per_min']:+.2f}, tasks {rates['tasks_per_min']:+.2f}, threads "
               f"{rates['threads_per_min']:+.2f}, step p99 {rates['step_p99_ms_per_min']:+.2f} ms, frame lateness "
               f"p99 {rates['late_p99_ms_per_min']:+.2f} ms; after the last call: free slots {free}, sessions "
               f"{len(sessions)}, open files {before.open_fds} -> {after.open_fds}, tasks {before.tasks} -> "
               f"{after.tasks}, threads {before.threads} -> {after.threads}",
               rates["rss_mib_per_min"] < args.soak_rss_slope and free == args.soak_slots and not sessions
               and after.open_fds <= before.open_fds and after.tasks <= before.tasks,
               rates | {"samples": len(samples), "open_fds_before": before.open_fds, "open_fds_after": after.open_fds,
                        "tasks_before": before.tasks, "tasks_after": after.tasks, "threads_before": before.threads,
                        "threads_after": after.threads, "sessions_after": len(sessions),
                        "rss_mib_first": round(rss[0], 1) if rss else float("nan"),
                        "rss_mib_last": round(rss[-1], 1) if rss else float("nan")})


def scrape_row(scrapes: Scrapes) -> Row:
    asked = len(scrapes.seconds) + len(scrapes.unanswered)
    slowest = max(scrapes.seconds, default=float("nan"))
    p99 = float(np.percentile(scrapes.seconds, 99)) if scrapes.seconds else float("nan")
    missed = ", ".join(f"{at / 60:.1f}" for at in scrapes.unanswered[:5])
    return Row("soak: the server answers its metrics throughout",
               f"{asked} GET /metrics, one a sample, each given {METRICS_TIMEOUT:g} s",
               f"{len(scrapes.seconds)} answered (p99 {p99:.3f} s, slowest {slowest:.3f} s), "
               f"{len(scrapes.unanswered)} not in time" + (f" (at minute {missed})" if missed else ""),
               bool(scrapes.seconds) and not scrapes.unanswered,
               {"scrapes": asked, "unanswered": len(scrapes.unanswered), "scrape_p99_s": round(p99, 4),
                "scrape_max_s": round(slowest, 4)})


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--soak-minutes", type=float, default=30.0, help="how long calls keep arriving")
    parser.add_argument("--soak-slots", type=int, default=3, help="the server's slots")
    parser.add_argument("--soak-model", default="dummy", help="the server's --model (dummy: the tiny one; echo)")
    parser.add_argument("--soak-load", type=float, default=0.8, help="the share of the slots the arrivals offer")
    parser.add_argument("--soak-sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--soak-warm-up", type=float, default=5.0, help="minutes left out of the slopes")
    parser.add_argument("--soak-rss-slope", type=float, default=1.0, help="MiB/min of RSS growth allowed")
    parser.add_argument("--soak-samples", type=Path, default=None, help="also write the samples here (CSV)")


OPTIONS = ("soak_minutes", "soak_slots", "soak_model", "soak_load", "soak_sample", "soak_warm_up", "soak_rss_slope",
           "soak_samples")


async def run(args: argparse.Namespace) -> list[Row]:
    if not inside():
        return await rows_inside("soak", [a for o in OPTIONS if getattr(args, o, None) is not None
                                          for a in ("--" + o.replace("_", "-"), str(getattr(args, o)))])
    with tempfile.TemporaryDirectory(prefix="plexline-soak-") as folder, \
            serving(args.soak_model, args.soak_slots, Path(folder)) as server:
        return await soak(server, args)
