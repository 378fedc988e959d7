"""`plexline`: one command, a subcommand per role. Heavy imports happen inside each subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plexline.logs import setup_logging

DEFAULT_CACHE = Path.home() / ".cache" / "plexline"


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="dummy",
                        help="dummy (random weights: tiny on CPU, full size on CUDA), dummy:tiny, dummy:full, "
                             "local:DIR (a folder with the released files) or hf[:REPO] (HF_TOKEN)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where voice prompts made from WAV files are kept")


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", choices=("bf16", "fp8"), default="bf16",
                        help="the LM's linear layers: as loaded, or quantised to FP8 at load (Hopper: torch._scaled_mm)")
    parser.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16",
                        help="the KV ring: the LM's dtype, or FP8 e4m3 with a scale per key and head (half the bytes)")


def load_models(args: argparse.Namespace, mimi_codebooks: int | None = None):
    """`mimi_codebooks`: what Mimi encodes (default the agent's 8; 32 for the recogniser)."""
    from agent.model.hub import ModelFilesError
    from agent.model.lm import AGENT_CODEBOOKS
    from agent.model.loading import ModelSpecError
    from agent.model.loading import load_models as load
    try:
        return load(args.model, args.device, mimi_codebooks=mimi_codebooks or AGENT_CODEBOOKS,
                    weights=getattr(args, "weights", "bf16"))
    except (ModelFilesError, ModelSpecError) as error:
        raise CommandError(str(error)) from error


def offline(args: argparse.Namespace) -> None:
    from agent.audio_file import AudioFileError
    from agent.engine.prefix import PromptTooLong
    from agent.model.stt import STT_CODEBOOKS
    from agent.offline import run_offline
    from personas.loader import PersonaError
    from voices.catalog import VoiceError

    for path, what in ((args.persona, "persona"), (args.input, "input")):
        if not path.is_file():
            raise CommandError(f"{path}: no such {what} file")
    models = load_models(args, mimi_codebooks=STT_CODEBOOKS if args.stt else None)
    recogniser = load_recogniser(args.stt, args.device) if args.stt else None
    voices_dir = args.voices_dir or args.persona.parent / "voices"
    try:
        result = run_offline(models, args.persona, args.input, args.output, args.transcript, voices_dir,
                             args.cache_dir, seed=args.seed, progress=not args.quiet, recogniser=recogniser)
    except (AudioFileError, PersonaError, VoiceError, PromptTooLong) as error:
        raise CommandError(str(error)) from error
    note = " -- DUMMY MODEL, RANDOM WEIGHTS: the audio is noise" if models.dummy else ""
    heard = f", the caller's {result.caller_words} words" if recogniser is not None else ""
    print(f"wrote {args.output} ({result.seconds:.1f} s, {result.words} words{heard}){note}")


def load_recogniser(spec: str, device: str | None):
    from agent.model.hub import ModelFilesError
    from agent.model.loading import ModelSpecError
    from agent.model.stt_loading import load_stt
    try:
        return load_stt(spec, device)
    except (ModelFilesError, ModelSpecError) as error:
        raise CommandError(str(error)) from error


def eval_precision(args: argparse.Namespace) -> None:
    from agent.audio_file import AudioFileError
    from agent.engine.prefix import PromptTooLong
    from agent.precision_eval import compare_precisions, table, write_json
    from personas.loader import PersonaError
    from voices.catalog import VoiceError

    for path, what in ((args.persona, "persona"), (args.input, "input")):
        if not path.is_file():
            raise CommandError(f"{path}: no such {what} file")
    models = load_models(args)
    voices_dir = args.voices_dir or args.persona.parent / "voices"
    try:
        report = compare_precisions(models, args.persona, args.input, voices_dir, args.cache_dir, seed=args.seed,
                                    seconds=args.seconds)
    except (AudioFileError, PersonaError, VoiceError, PromptTooLong) as error:
        raise CommandError(str(error)) from error
    if args.json is not None:
        write_json(report, args.json)
    print(table(report) + (" -- DUMMY MODEL, RANDOM WEIGHTS" if models.dummy else ""))


def eval_long_call(args: argparse.Namespace) -> None:
    import dataclasses
    import json

    from agent.audio_file import AudioFileError, read_audio
    from agent.contracts.audio import SAMPLE_RATE
    from agent.engine.prefix import PromptTooLong
    from agent.long_call import generated_caller, run_long_call, table
    from agent.model.checkpoint import dummy_lm
    from personas.loader import PersonaError
    from voices.catalog import VoiceError

    if not args.persona.is_file():
        raise CommandError(f"{args.persona}: no such persona file")
    models = load_models(args)
    if args.context is not None:
        if not models.dummy:
            raise CommandError("--context shortens the ring of a dummy model only")
        weight = models.lm.text_linear.weight
        models.lm = dummy_lm(dataclasses.replace(models.lm.config, context=args.context), weight.device, weight.dtype)
    try:
        caller = read_audio(args.input, SAMPLE_RATE) if args.input else generated_caller(args.minutes * 60)
        result = run_long_call(models, args.persona, caller, args.voices_dir or args.persona.parent / "voices",
                               args.cache_dir, period_seconds=args.period, recent_seconds=args.recent)
    except (AudioFileError, PersonaError, VoiceError, PromptTooLong, ValueError) as error:
        raise CommandError(str(error)) from error
    args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    print(table(result))


def bench_engine(args: argparse.Namespace) -> None:
    from bench.engine import bench_engine as run
    from bench.engine import table, write_json

    models = load_models(args)
    if models.device.type != "cuda":
        raise CommandError("the engine benchmark needs a CUDA device")
    result = run(models, args.batches, args.steps, args.warmup, kv_dtype=args.kv_dtype)
    write_json(result, args.json)
    print(table(result))


def bench_churn(args: argparse.Namespace) -> None:
    from bench.churn import bench_churn as run
    from bench.churn import table, write_json

    models = load_models(args)
    if models.device.type != "cuda":
        raise CommandError("the churn benchmark needs a CUDA device")
    result = run(models, args.calls, args.seconds, args.mean_call_seconds, args.cold_share, args.kv_dtype,
                 args.seed)
    write_json(result, args.json)
    print(table(result))


def _settings(cls, args: argparse.Namespace):
    """`cls` (a pydantic-settings class) from the environment, with the flags that were given on top."""
    from pydantic import ValidationError

    from plexline.settings import read

    try:
        return read(cls, args)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        raise CommandError(f"invalid settings: {reasons}") from error


def _worker_model(engine, voices_root: Path):
    from agent.model.hub import ModelFilesError
    from agent.model.loading import ModelSpecError
    from agent.worker import load_worker_model

    try:
        return load_worker_model(engine.model, engine.slots, engine.device, voices_root, engine.cache_dir,
                                 stt=engine.stt, capacity_file=engine.capacity_file, weights=engine.weights,
                                 kv_dtype=engine.kv_dtype, pin_personas=engine.pin_personas)
    except (ModelFilesError, ModelSpecError) as error:
        raise CommandError(str(error)) from error


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plexline")
    except PackageNotFoundError:
        return "0+unknown"


def _announce_when_up(app, lines) -> None:
    """Print `lines()` once the app has started (its SIP server is listening and the tenants are loaded)."""
    from contextlib import asynccontextmanager

    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        async with started(app):
            print("\n".join(lines()), file=sys.stderr, flush=True)
            yield

    app.router.lifespan_context = lifespan


def where_to_call(catalog, http_url: str, sip_host: str, sip_port: int, model: str) -> list[str]:
    """What `plexline serve` says when it is up: the addresses a newcomer calls, line by line."""
    host = "127.0.0.1" if sip_host in ("0.0.0.0", "::", "") else sip_host
    host = f"[{host}]" if ":" in host else host
    said = [f"plexline: up: admin API {http_url}/docs, dialer {http_url}/dialer (a browser call)",
            f"plexline: SIP on udp and tcp {host}:{sip_port}; the lines and their SIP addresses:"]
    for tenant_id, entry in sorted(catalog.tenants.items()):
        takes_sip = entry.tenant.sip is not None and bool(entry.tenant.sip.allow or entry.tenant.sip.digest)
        for line_id, line in sorted(entry.lines.items()):
            note = "" if takes_sip else "  (no SIP calls: the tenant has no sip: allow or digest)"
            addresses = ", ".join(f"sip:{address}@{host}:{sip_port}" for address in line.answers)
            said.append(f"plexline:   {tenant_id}/{line_id}: {addresses}{note}")
    if model == "echo":
        said.append("plexline: --model echo: each caller hears itself, 80 ms later")
    return said


def _control_plane(settings, registry, workers, history, http_host: str, local_worker=None):
    """The control plane with its SIP server (UDP and TCP on --sip-port, TLS where a certificate is
    set), sharing one router."""
    from personas.store import TenantStore
    from telephony.control.control_plane import ControlPlane
    from telephony.control.metrics import Metrics
    from telephony.control.routing import Admission, CallRouter
    from telephony.sip.server import SipConfig, SipServer

    store = TenantStore(settings.personas_dir)
    router = CallRouter(registry, workers, Metrics(), settings.route_attempts, refusals=history,
                        admission=Admission.of(settings, store))
    tls = None
    if settings.sip_tls_certificate is not None:
        from telephony.sip.transport import server_tls_context

        tls = server_tls_context(settings.sip_tls_certificate, settings.sip_tls_key, settings.sip_tls_client_ca)
    config = SipConfig(host=settings.sip_host or http_host, port=settings.sip_port,
                       advertised_host=settings.sip_advertised_host, rtp_timeout=settings.rtp_timeout,
                       jitter_packets=settings.rtp_jitter_packets,
                       jitter_max_packets=settings.rtp_jitter_max_packets, realm=settings.sip_realm,
                       retry_after_seconds=settings.retry_after_seconds, tls=tls, tls_port=settings.sip_tls_port,
                       drain_timeout=settings.sip_drain_timeout)
    sip = SipServer(config, store, router, workers, registry)
    return ControlPlane(settings, store, registry, workers, router=router, history=history, sip=sip,
                        local_worker=local_worker)


def open_registry(redis_url: str | None, prefix: str = "plexline:"):
    """Redis when a URL is given, else an in-memory registry for this process alone."""
    if redis_url is None:
        from telephony.control.memory_registry import MemoryRegistry

        return MemoryRegistry()
    from telephony.control.redis_registry import RedisRegistry

    return RedisRegistry.from_url(redis_url, prefix=prefix)


def _call_history(settings):
    """Call records, recordings and the webhook outbox: in Redis, or files in the data folder."""
    from datetime import timedelta

    from telephony.events.call_history import open_call_history

    return open_call_history(settings.redis_url, settings.redis_prefix, settings.recordings_folder,
                             data_dir=settings.data_dir,
                             record_retention=timedelta(days=settings.call_record_retention_days),
                             recording_retention=timedelta(days=settings.recording_retention_days),
                             lease=2 * settings.webhook_timeout + 1)


def _rtp_legs(host: str, settings):
    from agent.media.rtp_legs import RtpLegs

    low, high = settings.rtp_port_min, settings.rtp_port_max
    if high <= low:
        raise CommandError(f"the RTP port range {low}-{high} is empty")
    return RtpLegs(host, range(low, high + 1), settings.media_advertised_host)


def serve_http(app, listen, sock) -> None:
    from plexline.http_server import serve_http as serve

    serve(app, listen, sock)


def _listen(args: argparse.Namespace, default_port: int):
    """The role's HTTP address and port, the port's default filled in."""
    from plexline.settings import ListenSettings

    listen = _settings(ListenSettings, args)
    return listen.model_copy(update={"http_port": default_port}) if listen.http_port is None else listen


def _bind(listen):
    """The role's HTTP socket, and `listen` with the port it bound (the one chosen when it is 0)."""
    from plexline.http_server import bind

    try:
        sock = bind(listen)
    except OSError as error:
        raise CommandError(f"cannot listen on {listen.host}:{listen.http_port}: {error.strerror}") from error
    return listen.model_copy(update={"http_port": sock.getsockname()[1]}), sock


def serve(args: argparse.Namespace) -> None:
    import secrets
    import socket
    import tempfile

    from pydantic import SecretStr

    from agent.call_reporter import CallReporter
    from agent.worker import Worker
    from agent.worker_settings import EngineSettings
    from plexline.embedded import LocalWorkerClient, create_embedded_app
    from telephony.control.settings import Settings
    from telephony.control.worker_client import HttpWorkerClient

    settings = _settings(Settings, args)
    engine = _settings(EngineSettings, args)
    listen, sock = _bind(_listen(args, 8080))
    if not settings.distributed:  # embedded: secrets for this run only, and a data folder of its own
        generated = {name: SecretStr(secrets.token_urlsafe(24)) for name in ("operator_token", "worker_secret")
                     if getattr(settings, name) is None}
        if "data_dir" not in settings.model_fields_set:
            generated["data_dir"] = Path(tempfile.mkdtemp(prefix="plexline-"))
            print(f"plexline: data folder for this run: {generated['data_dir']} (calls, recordings, webhooks "
                  "waiting; --data-dir or PLEXLINE_DATA_DIR keeps them across runs)", file=sys.stderr)
        settings = settings.model_copy(update=generated)
        if "operator_token" in generated:
            print(f"plexline: operator token for this run: {settings.operator_token.get_secret_value()}",
                  file=sys.stderr)
    model = _worker_model(engine, settings.personas_dir)
    registry = open_registry(settings.redis_url, settings.redis_prefix)
    address = engine.advertise_url or f"http://{listen.host}:{listen.http_port}"
    history = _call_history(settings)
    worker = Worker(model, worker_id=engine.worker_id or f"{socket.gethostname()}-{listen.http_port}", address=address,
                    version=_version(), registry=registry, heartbeat_ttl=settings.heartbeat_ttl,
                    reporter=CallReporter(history), recordings=settings.recordings_folder,
                    ice_servers=settings.ice_servers(), first_media_timeout=settings.first_media_timeout)
    secret = settings.worker_secret.get_secret_value()
    media_host = settings.media_host or settings.sip_host or listen.host
    legs = _rtp_legs(media_host, settings)
    workers = LocalWorkerClient(worker, HttpWorkerClient(secret, settings.worker_timeout), legs)
    plane = _control_plane(settings, registry, workers, history, listen.host, local_worker=worker)
    app = create_embedded_app(plane, worker, legs)
    http_host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
    _announce_when_up(app, lambda: where_to_call(plane.store.catalog, f"http://{http_host}:{listen.http_port}",
                                                 plane.sip.config.public_host, plane.sip.port, engine.model))
    serve_http(app, listen, sock)


def control_plane(args: argparse.Namespace) -> None:
    from telephony.control.app import create_app
    from telephony.control.settings import Settings
    from telephony.control.worker_client import HttpWorkerClient

    settings = _settings(Settings, args)
    if not settings.distributed:
        raise CommandError("the control plane needs a Redis URL (--redis-url or PLEXLINE_REDIS_URL); "
                           "for one machine without Redis, use `plexline serve`")
    listen, sock = _bind(_listen(args, 8080))
    registry = open_registry(settings.redis_url, settings.redis_prefix)
    workers = HttpWorkerClient(settings.worker_secret.get_secret_value(), settings.worker_timeout)
    plane = _control_plane(settings, registry, workers, _call_history(settings), listen.host)
    serve_http(create_app(plane), listen, sock)


def worker(args: argparse.Namespace) -> None:
    import socket
    from datetime import timedelta

    from agent.call_reporter import CallReporter
    from agent.worker import Worker
    from agent.worker_api import create_worker_app
    from agent.worker_settings import EngineSettings, WorkerSettings
    from telephony.events.call_history import open_call_history

    settings = _settings(WorkerSettings, args)
    engine = _settings(EngineSettings, args)
    listen, sock = _bind(_listen(args, 8081))
    model = _worker_model(engine, settings.voices_dir)
    address = engine.advertise_url or f"http://{listen.host}:{listen.http_port}"
    registry = open_registry(settings.redis_url, settings.redis_prefix)
    history = open_call_history(settings.redis_url, settings.redis_prefix, settings.recordings_dir,
                                record_retention=timedelta(days=settings.call_record_retention_days))
    worker = Worker(model, worker_id=engine.worker_id or f"{socket.gethostname()}-{listen.http_port}", address=address,
                    version=_version(), registry=registry, heartbeat_ttl=settings.heartbeat_ttl,
                    reporter=CallReporter(history), recordings=settings.recordings_dir,
                    ice_servers=settings.ice_servers(), first_media_timeout=settings.first_media_timeout)
    legs = _rtp_legs(settings.media_host or listen.host, settings)
    app = create_worker_app(worker, settings.worker_secret.get_secret_value(), settings.shutdown_grace, legs)
    serve_http(app, listen, sock)


def drain_worker(args: argparse.Namespace) -> None:
    import os

    import httpx

    from plexline.drain import drain

    secret = os.environ.get("PLEXLINE_WORKER_SECRET")
    if not secret:
        raise CommandError("PLEXLINE_WORKER_SECRET is not set")
    url = args.url or f"http://127.0.0.1:{_listen(args, 8081).http_port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as client:
            left = drain(client, args.wait, args.poll)
    except httpx.HTTPError as error:
        raise CommandError(f"cannot drain the worker at {url}: {error}") from error
    if left:
        print(f"plexline drain: {left} call(s) still in progress after {args.wait:.0f} s", file=sys.stderr)


def tenant_token(args: argparse.Namespace) -> None:
    from personas.tokens import hash_token, new_token

    token = new_token()
    print(f"token (give it to the tenant's admins; it is not stored): {token}")
    print(f"tenant.yaml line: admin_token_hash: {hash_token(token)}")


def add_serving_commands(commands) -> None:
    """serve, control-plane, worker, drain and tenant-token; the roles' flags are the settings of `plexline.settings`."""
    from plexline.settings import add_flags

    echo = "--model echo runs no model: each caller hears itself 80 ms later (tests, transport checks)."
    roles = {"serve": ("control plane and one worker in one process (no Redis needed)", serve, echo),
             "control-plane": ("admin API, SIP and call routing, with workers found in Redis", control_plane, None),
             "worker": ("one engine on one device, registered in Redis", worker, echo)}
    for role, (summary, run, description) in roles.items():
        p = commands.add_parser(role, help=summary, description=description)
        add_flags(p, role)
        p.set_defaults(run=run)

    p = commands.add_parser("drain", help="stop a worker taking calls and wait for its calls to end (preStop)")
    p.add_argument("--url", default=None, help="the worker (default http://127.0.0.1:PLEXLINE_HTTP_PORT, else 8081); "
                                               "the secret is PLEXLINE_WORKER_SECRET")
    p.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for the calls to end (default 3600)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks (default 1)")
    p.set_defaults(run=drain_worker)

    p = commands.add_parser("tenant-token", help="make a tenant admin token and the hash to put in tenant.yaml")
    p.set_defaults(run=tenant_token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plexline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("offline", help="run a WAV of a caller through the model, write the agent's audio")
    p.add_argument("--persona", type=Path, required=True, help="a persona YAML file")
    p.add_argument("--input", type=Path, required=True, help="the caller's audio (any rate, mono or stereo)")
    p.add_argument("--output", type=Path, required=True, help="the agent's audio (24 kHz WAV, same duration)")
    p.add_argument("--transcript", type=Path, default=None,
                   help="the agent's words with times (JSON); with --stt the caller's too")
    p.add_argument("--stt", default=None, help="the caller's recogniser, for both sides in the transcript: hf "
                                               "(kyutai/stt-1b-en_fr), hf:kyutai/stt-2.6b-en, local:DIR or dummy")
    p.add_argument("--voices-dir", type=Path, default=None,
                   help="folder of the persona's voice files (default: voices/ beside the persona)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the persona's, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_flag(p)
    p.set_defaults(run=offline)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("engine", help="whole-frame latency per batch size, time to ready (GPU)")
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 16, 24, 32, 40, 48])
    p.add_argument("--steps", type=int, default=500, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--json", type=Path, default=Path("bench-engine.json"))
    add_model_flag(p)
    add_precision_flags(p)
    p.set_defaults(run=bench_engine, model="dummy:full")

    p = bench.add_parser("churn", help="the engine with calls joining and leaving: frame and join times, "
                                       "the calls it holds in real time (GPU)")
    p.add_argument("--calls", type=lambda s: [c if c == "auto" else int(c) for c in s.split(",")],
                   default=[32, 64, 72, 80, "auto"], help="engine sizes; auto: what memory holds (default "
                                                          "32,64,72,80,auto)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of traffic measured per size")
    p.add_argument("--mean-call-seconds", type=float, default=120.0,
                   help="mean call length: N / this many calls join (and leave) per second")
    p.add_argument("--cold-share", type=float, default=0.5, help="share of joins with a persona never seen")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench-churn.json"),
                   help="the result; a worker's --capacity-file reads its rated calls")
    add_model_flag(p)
    add_precision_flags(p)
    p.set_defaults(run=bench_churn, model="dummy:full")

    evaluate = commands.add_parser("eval", help="evaluations").add_subparsers(dest="eval", required=True)
    p = evaluate.add_parser("precision", help="a caller's WAV through the model in bf16 and the 8-bit settings: "
                                              "text token agreement and the agent audio's difference")
    p.add_argument("--persona", type=Path, required=True, help="a persona YAML file")
    p.add_argument("--input", type=Path, required=True, help="the caller's audio (any rate, mono or stereo)")
    p.add_argument("--voices-dir", type=Path, default=None,
                   help="folder of the persona's voice files (default: voices/ beside the persona)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every precision (default 0)")
    p.add_argument("--seconds", type=float, default=None, help="only the first SECONDS of the input")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    add_model_flag(p)
    p.set_defaults(run=eval_precision)

    p = evaluate.add_parser("long-call", help="a call past the context, persona pinned and window, per minute: "
                                           "text agreement with a fresh session, speaker similarity, step time")
    p.add_argument("--persona", type=Path, required=True, help="a persona YAML file")
    caller = p.add_mutually_exclusive_group()
    caller.add_argument("--input", type=Path, default=None, help="the caller's audio (any rate; default: generated)")
    caller.add_argument("--minutes", type=float, default=6.0, help="length of the generated caller")
    p.add_argument("--period", type=float, default=60.0, help="seconds per reported period")
    p.add_argument("--recent", type=float, default=60.0,
                   help="seconds of caller audio the fresh session of each period hears before it")
    p.add_argument("--context", type=int, default=None,
                   help="frames of the ring of a dummy model (a short one wraps in seconds: a smoke test)")
    p.add_argument("--voices-dir", type=Path, default=None,
                   help="folder of the persona's voice files (default: voices/ beside the persona)")
    p.add_argument("--json", type=Path, default=Path("long-call.json"))
    add_model_flag(p)
    p.set_defaults(run=eval_long_call)

    try:
        add_serving_commands(commands)
    except ModuleNotFoundError as missing:  # a GPU host with torch alone still runs the benchmarks
        add_unavailable_commands(commands, missing)
    return parser


def add_unavailable_commands(commands, missing: ModuleNotFoundError) -> None:
    """The serving roles, each saying why it cannot run here."""
    def unavailable(args: argparse.Namespace) -> None:
        raise CommandError(f"`plexline {args.command}` needs {missing.name}, which is not installed "
                           f"(pip install plexline installs it)")

    for role in ("serve", "control-plane", "worker", "drain", "tenant-token"):
        # No option prefix: whatever follows (flags too) is taken, and the command says what is missing.
        p = commands.add_parser(role, help=f"(needs {missing.name})", add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs="*")
        p.set_defaults(run=unavailable)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.run(args)
    except CommandError as error:
        print(f"plexline: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
