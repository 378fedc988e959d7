"""Scale-out check: one control plane and one worker per GPU on one host, filled with calls.

    PYTHONPATH=. python3 scripts/scale_out.py --gpus 2 --baseline --json s.json       # two GPU workers, one alone first
    PYTHONPATH=. python3 scripts/scale_out.py --gpus 0 --cpu-workers 2 --cpu-slots 3   # no GPU: tiny dummy models
    PYTHONPATH=. python3 scripts/scale_out.py --gpus 1 --cpu-workers 1                 # a mix

Starts redis-server on loopback (a temporary folder, no persistence), one `plexline control-plane`
and one `plexline worker` per GPU (CUDA_VISIBLE_DEVICES=i, --model dummy:full, --slots auto) and
per CPU worker (--model dummy:tiny), each its own process. Then, as the operator, through the
control plane's API only:

0. with --baseline, first one GPU worker alone, filled and timed as below: one GPU's capacity;
1. places calls (POST /calls) until it answers 503: every worker is full;
2. holds them --hold seconds and reads each worker's engine step times (GET /worker): the whole
   frame (Mimi encode, LM step, Mimi decode) of every call at once;
3. drains the first worker (PATCH /workers/{id}), ends --end-per-worker calls on every worker,
   places calls until 503 again and checks that all of them landed on the other workers.

The calls carry no media: the engine steps them on silence, which costs the GPU what real audio
does. Prints a table last; --json writes everything measured. Exit status 1 when a check fails,
2 when the set-up fails (the logs' ends are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx
import yaml

from bench.processes import child

ROOT = Path(__file__).resolve().parents[1]
TENANT = "scale"
ADDRESS = "+15550000100"
CAPACITY_TOLERANCE = 0.05  # GPU calls within 5% of (GPUs x one GPU's capacity)
ROLE = ("You work for Acme Home Goods which is an online store for kitchenware and home furnishings and "
        "your name is Maya Chen. You help callers track an order, change a delivery address and start a "
        "return. Be warm, patient and brief.")


class SetupFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class WorkerSpec:
    id: str
    device: str  # "cuda:<index in CUDA_VISIBLE_DEVICES of this host>" or "cpu"
    model: str
    slots: str  # "auto" or a number
    env: dict[str, str]


@dataclass
class StepTimes:
    steps: int  # in the window
    p50_ms: float
    p99_ms: float
    max_ms: float
    overruns: int  # steps past their 80 ms budget, in the window


@dataclass
class WorkerResult:
    id: str
    device: str
    model: str
    slots: int
    calls: int  # at full, as the control plane's registry counts them
    ready_seconds: float  # from its start to its first answer (model built, engine warmed)
    step: StepTimes | None = None
    gpu_memory_used_mib: int | None = None


@dataclass
class DrainResult:
    drained: str
    ended_per_worker: dict[str, int]
    placed: int
    placed_on: dict[str, int]
    expected: int  # the slots freed on the workers not drained
    refused_after: bool  # the call after them was refused (503): the drained worker's free slots unused
    worker_saw_draining: bool  # the drained worker learned it from the registry (its heartbeat)
    passed: bool


@dataclass
class Report:
    gpus: int
    cpu_workers: int
    hold_seconds: float
    workers: list[WorkerResult]
    total_slots: int
    total_calls: int
    all_slots_filled: bool
    single_gpu_capacity: int | None  # the calls one GPU holds: --single-gpu-capacity, the baseline's calls,
    single_gpu_capacity_from: str | None  # else GPU 0's slots here; which of these it is
    gpu_calls: int
    gpu_capacity_ratio: float | None  # gpu_calls / (gpus x single_gpu_capacity)
    capacity_passed: bool | None
    baseline: WorkerResult | None = None  # --baseline: one GPU worker alone, filled the same way
    drain: DrainResult | None = None
    refusals: list[str] = field(default_factory=list)  # non-503 refusals met while filling

    @property
    def passed(self) -> bool:
        return self.all_slots_filled and self.capacity_passed is not False and bool(self.drain and self.drain.passed)


# -- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> AbstractContextManager[subprocess.Popen]:
    """A child process run from the repository, writing to `log`, stopped on exit (30 s to shut down)."""
    return child(args, log, grace=30, cwd=ROOT, env=env)


def start_redis(stack: ExitStack, executable: str, folder: Path, log: Path) -> str:
    path = shutil.which(executable)
    if path is None:
        raise SetupFailed(f"no redis-server at {executable!r} (--redis-server or PLEXLINE_REDIS_SERVER)")
    port = free_port()
    server = stack.enter_context(process(
        [path, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        log))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupFailed(f"redis-server exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SetupFailed("redis-server did not answer PING within 10 s")


def plexline(python: str, args: list[str]) -> list[str]:
    return [python, "-m", "plexline", *args]


@dataclass(frozen=True)
class Started:
    name: str
    url: str
    child: subprocess.Popen
    log: Path
    at: float  # time.monotonic() when it was started


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_up(started: list[Started], timeout: float) -> dict[str, float]:
    """Seconds from each one's start until its /healthz answered."""
    ready: dict[str, float] = {}
    while len(ready) < len(started):
        for s in started:
            if s.name in ready:
                continue
            if s.child.poll() is not None:
                raise SetupFailed(f"{s.name} exited with status {s.child.returncode} (log: {s.log})")
            if answers(s.url):
                ready[s.name] = time.monotonic() - s.at
                print(f"scale-out: {s.name} ready after {ready[s.name]:.1f} s", flush=True)
            elif time.monotonic() - s.at > timeout:
                raise SetupFailed(f"{s.name} did not come up within {timeout:.0f} s (log: {s.log})")
        time.sleep(0.2)
    return ready


# -- the set-up -------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """The host's GPUs as CUDA_VISIBLE_DEVICES entries, one per worker."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_specs(gpus: int, cpu_workers: int, gpu_slots: str, cpu_slots: str, cpu_threads: int) -> list[WorkerSpec]:
    devices = visible_gpus() if gpus else []
    if gpus > len(devices):
        raise SetupFailed(f"{gpus} GPU workers asked for, {len(devices)} GPUs visible")
    specs = [WorkerSpec(f"gpu{i}", f"cuda:{i}", "dummy:full", gpu_slots, {"CUDA_VISIBLE_DEVICES": devices[i]})
             for i in range(gpus)]
    threads = str(cpu_threads)
    specs += [WorkerSpec(f"cpu{i}", "cpu", "dummy:tiny", cpu_slots,
                         {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
              for i in range(cpu_workers)]
    return specs


def write_tenant(root: Path) -> None:
    """One tenant with one line, and no limit on its calls that the workers would not reach first."""
    folder = root / TENANT
    folder.mkdir(parents=True)
    tenant = {"name": "Scale-out check", "addresses": [ADDRESS],
              "limits": {"max_concurrent_calls": 100_000, "max_call_seconds": 86_400}}
    line = {"answers": [ADDRESS], "persona": {"role": ROLE, "voice": "NATF2"}, "max_call_seconds": 86_400}
    (folder / "tenant.yaml").write_text(yaml.safe_dump(tenant, sort_keys=False))
    (folder / "support.yaml").write_text(yaml.safe_dump(line, sort_keys=False))


@dataclass
class Fleet:
    plane: str  # the control plane's URL
    operator: str
    worker_secret: str
    workers: dict[str, str]  # id -> URL
    ready_seconds: dict[str, float]
    specs: dict[str, WorkerSpec]


def start_fleet(stack: ExitStack, args: argparse.Namespace, specs: list[WorkerSpec], folder: Path,
                logs: Path) -> Fleet:
    """Redis, the workers and the control plane, up and registered; Redis's files and log go to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    redis_url = start_redis(stack, args.redis_server, folder, folder / "redis.log")
    personas = folder / "tenants"
    write_tenant(personas)
    operator, worker_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "PLEXLINE_REDIS_URL": redis_url,
                        "PLEXLINE_REDIS_PREFIX": "scale-out:", "PLEXLINE_OPERATOR_TOKEN": operator,
                        "PLEXLINE_WORKER_SECRET": worker_secret, "PLEXLINE_PERSONAS_DIR": str(personas),
                        "PLEXLINE_SHUTDOWN_GRACE": "0",
                        "PLEXLINE_WORKER_TIMEOUT": "30"}  # a GPU's first call may compile: not a refusal here
    started = []
    for spec in specs:
        port = free_port()
        log = logs / f"worker-{spec.id}.log"
        device = "cuda" if spec.device.startswith("cuda") else "cpu"
        child = stack.enter_context(process(plexline(args.python, [
            "worker", "--port", str(port), "--worker-id", spec.id, "--model", spec.model, "--device", device,
            "--slots", spec.slots, "--voices-dir", str(personas)]), log, env | spec.env))
        started.append(Started(spec.id, f"http://127.0.0.1:{port}", child, log, time.monotonic()))
    port = free_port()
    log = logs / "control-plane.log"
    child = stack.enter_context(process(plexline(args.python, [
        "control-plane", "--http-port", str(port), "--sip-port", str(free_port())]), log, env))
    plane = Started("control-plane", f"http://127.0.0.1:{port}", child, log, time.monotonic())
    ready = wait_until_up([plane, *started], args.startup_timeout)
    fleet = Fleet(plane.url, operator, worker_secret, {s.name: s.url for s in started},
                  {s.name: ready[s.name] for s in started}, {s.id: s for s in specs})
    wait_for_registration(fleet, timeout=30)
    return fleet


# -- talking to the control plane and the workers -----------------------------------------------------


def operator(fleet: Fleet) -> dict[str, str]:
    return {"Authorization": f"Bearer {fleet.operator}"}


def registered_workers(fleet: Fleet) -> dict[str, dict]:
    response = httpx.get(fleet.plane + "/workers", headers=operator(fleet), timeout=30)
    response.raise_for_status()
    return {w["id"]: w for w in response.json()}


def wait_for_registration(fleet: Fleet, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(fleet.workers) <= {w for w, s in registered_workers(fleet).items() if s["alive"]}:
            return
        time.sleep(0.2)
    raise SetupFailed(f"not every worker registered within {timeout:.0f} s: {sorted(registered_workers(fleet))}")


def worker_state(fleet: Fleet, worker_id: str) -> dict:
    response = httpx.get(fleet.workers[worker_id] + "/worker", timeout=30,
                         headers={"Authorization": f"Bearer {fleet.worker_secret}"})
    response.raise_for_status()
    return response.json()


def place_calls_until_full(fleet: Fleet, limit: int, refusals: list[str]) -> tuple[list[dict], bool]:
    """Calls placed one after another until the control plane answers 503 three times in a row (full:
    True) or `limit` calls are placed (False)."""
    placed, full_answers = [], 0
    with httpx.Client(base_url=fleet.plane, headers=operator(fleet), timeout=60) as client:
        while len(placed) < limit and full_answers < 3:
            response = client.post("/calls", json={"to": ADDRESS, "from": f"+1555{len(placed):07d}"})
            if response.status_code == 201:
                placed.append(response.json())
                full_answers = 0
            elif response.status_code == 503:
                full_answers += 1
                time.sleep(0.3)  # a slot freed by an end still in flight is counted by then
            else:
                refusals.append(f"{response.status_code}: {response.text[:200]}")
                if len(refusals) > 10:
                    raise SetupFailed(f"calls refused: {refusals[-3:]}")
    return placed, full_answers == 3


def end_call(fleet: Fleet, call_id: str) -> None:
    response = httpx.delete(fleet.plane + f"/tenants/{TENANT}/calls/{call_id}", headers=operator(fleet), timeout=30)
    response.raise_for_status()


def gpu_memory_used_mib() -> dict[str, int]:
    """nvidia-smi's memory.used per GPU index, where nvidia-smi exists."""
    if shutil.which("nvidia-smi") is None:
        return {}
    result = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True)
    rows = (line.split(",") for line in result.stdout.splitlines() if "," in line)
    return {index.strip(): int(used) for index, used in rows}


# -- the measurements ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def step_times(before: dict, after: dict) -> StepTimes | None:
    """The steps between two reads of a worker's clock (the last 1000 at most)."""
    n = after["clock"]["steps"] - before["clock"]["steps"]
    window = after["clock"]["step_seconds"][-n:] if n > 0 else []
    if not window:
        return None
    ms = [s * 1000 for s in window]
    return StepTimes(len(ms), round(percentile(ms, 0.5), 2), round(percentile(ms, 0.99), 2), round(max(ms), 2),
                     after["clock"]["overruns"] - before["clock"]["overruns"])


def fill_and_hold(fleet: Fleet, hold: float) -> tuple[list[WorkerResult], list[dict], list[str]]:
    registered = registered_workers(fleet)
    refusals: list[str] = []
    start = time.monotonic()
    calls, _ = place_calls_until_full(fleet, sum(w["slots"] for w in registered.values()) + 1, refusals)
    print(f"scale-out: {len(calls)} calls placed in {time.monotonic() - start:.1f} s, holding them {hold:.0f} s",
          flush=True)
    before = {w: worker_state(fleet, w) for w in fleet.workers}
    time.sleep(hold)
    after = {w: worker_state(fleet, w) for w in fleet.workers}
    memory = gpu_memory_used_mib()
    per_worker = Counter(c["worker"] for c in calls)
    results = []
    for worker_id, spec in fleet.specs.items():
        gpu = spec.env["CUDA_VISIBLE_DEVICES"] if spec.device != "cpu" else None
        results.append(WorkerResult(worker_id, spec.device, registered[worker_id]["model"],
                                    registered[worker_id]["slots"], per_worker[worker_id],
                                    round(fleet.ready_seconds[worker_id], 1),
                                    step_times(before[worker_id], after[worker_id]),
                                    memory.get(gpu) if gpu is not None else None))
    return results, calls, refusals


def drain_one(fleet: Fleet, calls: list[dict], end_per_worker: int) -> DrainResult:
    """Drain the first worker, end calls on every worker, and place calls until full again."""
    drained = next(iter(fleet.workers))
    response = httpx.patch(fleet.plane + f"/workers/{drained}", json={"draining": True}, headers=operator(fleet),
                           timeout=30)
    response.raise_for_status()
    ended: Counter[str] = Counter()
    for call in calls:
        if ended[call["worker"]] < end_per_worker:
            end_call(fleet, call["call_id"])
            ended[call["worker"]] += 1
    placed, refused_after = place_calls_until_full(fleet, sum(ended.values()) + 1, [])
    placed_on = Counter(c["worker"] for c in placed)
    expected = sum(n for w, n in ended.items() if w != drained)
    saw = wait_for(lambda: worker_state(fleet, drained)["draining"], timeout=10)
    passed = placed_on[drained] == 0 and len(placed) == expected and refused_after
    return DrainResult(drained, dict(ended), len(placed), dict(placed_on), expected, refused_after, saw, passed)


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not (ok := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return bool(ok)


def single_gpu_capacity(given: int | None, baseline: WorkerResult | None,
                        gpu_results: list[WorkerResult]) -> tuple[int | None, str | None]:
    """One GPU's capacity and where it comes from: given, measured alone (--baseline), or GPU 0's slots here."""
    if given:
        return given, "given"
    if baseline is not None:
        return baseline.calls, "measured alone"
    if gpu_results:
        return gpu_results[0].slots, f"{gpu_results[0].id}'s slots"
    return None, None


def build_report(args: argparse.Namespace, results: list[WorkerResult], refusals: list[str],
                 baseline: WorkerResult | None) -> Report:
    gpu_results = [r for r in results if r.device != "cpu"]
    single, source = single_gpu_capacity(args.single_gpu_capacity, baseline, gpu_results)
    gpu_calls = sum(r.calls for r in gpu_results)
    ratio = gpu_calls / (len(gpu_results) * single) if gpu_results and single else None
    total_slots, total_calls = sum(r.slots for r in results), sum(r.calls for r in results)
    return Report(args.gpus, args.cpu_workers, args.hold, results, total_slots, total_calls,
                  total_calls == total_slots, single, source, gpu_calls, round(ratio, 4) if ratio is not None else None,
                  abs(ratio - 1) <= CAPACITY_TOLERANCE if ratio is not None else None, baseline=baseline,
                  refusals=refusals)


# -- output -------------------------------------------------------------------------------------------


def table(report: Report) -> str:
    def ms(step: StepTimes | None, key: str) -> str:
        return f"{getattr(step, key):.1f}" if step else "-"

    rows = [f"{'worker':8} {'device':7} {'slots':>5} {'calls':>5} {'step p50 ms':>11} {'p99 ms':>7} "
            f"{'max ms':>7} {'steps':>5} {'overruns':>8} {'GPU MiB':>8} {'ready s':>7}  model"]
    alone = [replace(report.baseline, id="alone")] if report.baseline else []
    for r in [*alone, *report.workers]:
        rows.append(f"{r.id:8} {r.device:7} {r.slots:5d} {r.calls:5d} {ms(r.step, 'p50_ms'):>11} "
                    f"{ms(r.step, 'p99_ms'):>7} {ms(r.step, 'max_ms'):>7} {r.step.steps if r.step else 0:5d} "
                    f"{r.step.overruns if r.step else 0:8d} {r.gpu_memory_used_mib or '-':>8} "
                    f"{r.ready_seconds:7.1f}  {r.model}")
    rows.append(f"{'total':16} {report.total_slots:5d} {report.total_calls:5d}"
                f"   (every slot filled: {'yes' if report.all_slots_filled else 'NO'})")
    if report.gpu_capacity_ratio is not None:
        n = len([r for r in report.workers if r.device != "cpu"])
        rows.append(f"capacity: {report.gpu_calls} calls on {n} GPUs = {report.gpu_capacity_ratio * n:.2f} x one "
                    f"GPU's {report.single_gpu_capacity} ({report.single_gpu_capacity_from}; target {n} x within "
                    f"{CAPACITY_TOLERANCE:.0%}): "
                    f"{'ok' if report.capacity_passed else 'FAILED'}")
    if report.drain is not None:
        d = report.drain
        where = ", ".join(f"{n} on {w}" for w, n in sorted(d.placed_on.items())) or "none"
        rows.append(f"drain: {d.drained} drained; ended {sum(d.ended_per_worker.values())} calls "
                    f"({', '.join(f'{n} on {w}' for w, n in sorted(d.ended_per_worker.items()))}); "
                    f"{d.placed} new calls ({where}), expected {d.expected} off {d.drained}; "
                    f"next call refused: {'yes' if d.refused_after else 'NO'}; "
                    f"{d.drained} saw draining: {'yes' if d.worker_saw_draining else 'no'}: "
                    f"{'ok' if d.passed else 'FAILED'}")
    return "\n".join(rows)


def print_log_ends(folder: Path, since: float, name: str = "*.log", lines: int = 30) -> None:
    """The last lines of the logs written since `since` (a time.time()): this run's, not an earlier one's."""
    for log in sorted(log for log in folder.rglob(name) if log.stat().st_mtime >= since):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(text)} lines)\n" + "\n".join(text), file=sys.stderr)


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=None, help="GPU workers (default: one per visible GPU)")
    p.add_argument("--cpu-workers", type=int, default=None,
                   help="CPU workers on the tiny dummy model (default 0, or 2 when no GPU is used)")
    p.add_argument("--slots", default="auto", help="slots of each GPU worker (default auto: as GPU memory holds)")
    p.add_argument("--cpu-slots", default="4", help="slots of each CPU worker (default 4)")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads of each CPU worker (default 1)")
    p.add_argument("--hold", type=float, default=30.0, help="seconds the full load is held and timed (default 30)")
    p.add_argument("--end-per-worker", type=int, default=2, help="calls ended on each worker after draining one")
    p.add_argument("--baseline", action="store_true",
                   help="first fill and time one GPU worker alone: one GPU's capacity, measured the same way")
    p.add_argument("--single-gpu-capacity", type=int, default=None,
                   help="the calls one GPU holds alone, measured elsewhere (default: the baseline's, else GPU 0's "
                        "slots here)")
    p.add_argument("--redis-server", default=os.environ.get("PLEXLINE_REDIS_SERVER", "redis-server"),
                   help="the redis-server executable (PLEXLINE_REDIS_SERVER; default redis-server on PATH)")
    p.add_argument("--python", default=sys.executable, help="the Python that runs plexline (default this one)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds for every process to come up")
    p.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here (default: a temp folder)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.gpus is None:
        args.gpus = len(visible_gpus())
    if args.cpu_workers is None:
        args.cpu_workers = 0 if args.gpus else 2
    if args.gpus + args.cpu_workers < 1:
        p.error("no workers: give --gpus or --cpu-workers")
    if args.baseline and not args.gpus:
        p.error("--baseline needs a GPU worker")
    return args


def measure_alone(args: argparse.Namespace, folder: Path) -> WorkerResult:
    """One GPU worker alone behind the control plane, filled and timed as the fleet is."""
    specs = worker_specs(1, 0, args.slots, args.cpu_slots, args.cpu_threads)
    print("scale-out: baseline: redis-server, one control plane and gpu0 alone", flush=True)
    with ExitStack() as stack:
        fleet = start_fleet(stack, args, specs, folder / "baseline", args.logs / "baseline")
        results, _, _ = fill_and_hold(fleet, args.hold)
        print("scale-out: baseline: stopping", flush=True)
    return results[0]


def run(args: argparse.Namespace, folder: Path) -> Report:
    specs = worker_specs(args.gpus, args.cpu_workers, args.slots, args.cpu_slots, args.cpu_threads)
    baseline = measure_alone(args, folder) if args.baseline else None
    print(f"scale-out: starting redis-server, one control plane and {len(specs)} workers "
          f"({', '.join(f'{s.id} {s.model}' for s in specs)})", flush=True)
    with ExitStack() as stack:
        fleet = start_fleet(stack, args, specs, folder / "fleet", args.logs)
        results, calls, refusals = fill_and_hold(fleet, args.hold)
        report = build_report(args, results, refusals, baseline)
        report.drain = drain_one(fleet, calls, args.end_per_worker)
        print("scale-out: stopping", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale-out-") as temp:
        folder = Path(temp)
        args.logs = args.logs or folder / "logs"
        started = time.time()
        try:
            report = run(args, folder)
        except (SetupFailed, httpx.HTTPError) as error:
            print(f"scale-out: set-up failed: {error}", file=sys.stderr)
            print_log_ends(args.logs, started)
            print_log_ends(folder, started, "redis.log")
            return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report) | {"passed": report.passed}, indent=2) + "\n")
    print(table(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
