"""The campaign's hostile-input and limits rows, against `plexline serve`'s app (embedded: control
plane and an echo worker in one process, under uvicorn as `plexline serve` runs it, on loopback).

Each row attacks one limit and asserts its outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvicorn
import yaml
from pydantic import SecretStr

from agent.worker import Worker, echo_model
from bench.campaign.row import Row
from personas import EXAMPLE_TENANTS
from personas.store import TenantStore
from personas.tokens import hash_token
from plexline.embedded import LocalWorkerClient, create_embedded_app
from plexline.http_server import server_config
from plexline.settings import ListenSettings
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient

OPERATOR, ACME, GLOBEX = "campaign-operator", "campaign-acme-token", "campaign-globex-token"
FIRST_MEDIA_TIMEOUT = 2.0


def tenants(root: Path) -> Path:
    shutil.copytree(EXAMPLE_TENANTS / "acme", root / "acme")
    acme = yaml.safe_load((root / "acme" / "tenant.yaml").read_text())
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(acme | {"admin_token_hash": hash_token(ACME)}))
    (root / "globex").mkdir()
    (root / "globex" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Globex", "addresses": ["+15555550200"], "admin_token_hash": hash_token(GLOBEX)}))
    (root / "globex" / "desk.yaml").write_text(yaml.safe_dump({
        "answers": ["+15555550200"], "persona": {"role": "You answer for Globex.", "voice": "NATF2"}}))
    return root


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def slowloris(url: str, host: str, port: int, count: int) -> Row:
    """`count` connections from one address that never finish their headers; /healthz from another."""
    held = []
    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.5", 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            held.append((reader, writer))
        except OSError:
            break
    await asyncio.sleep(0.3)
    alive = sum(1 for r, _ in held if not r.at_eof())
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        ok = (await client.get(url + "/healthz", timeout=5)).status_code == 200
        healthz_ms = (time.monotonic() - started) * 1000
    await asyncio.sleep(1.2)  # past the header deadline of the campaign's server (1 s)
    left = sum(1 for r, _ in held if not r.at_eof())
    for _, writer in held:
        writer.close()
    return Row("slowloris (one source)", f"{count} connections, headers never finished",
               f"{alive} kept open, {left} after the deadline; /healthz {healthz_ms:.0f} ms from elsewhere",
               ok and alive <= 100 and left == 0)


async def huge_body(host: str, port: int) -> Row:
    """Bodies of 50 MB without a token, over raw sockets (a client that reads while it sends)."""
    before = rss_bytes()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"PUT /tenants/acme/lines/support HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 52428800\r\n\r\n")
    announced = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"PUT /tenants/acme/lines/support HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    sent, chunk = 0, b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
    answer = b""
    try:
        while sent < 50 << 20 and not answer:
            writer.write(chunk)
            await writer.drain()
            sent += 1 << 16
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.001)
            except TimeoutError:
                pass
        answer = answer or await asyncio.wait_for(reader.read(4096), 5)
    except ConnectionError:
        answer = answer or await reader.read(4096)
    writer.close()
    seconds = time.monotonic() - started
    grown = (rss_bytes() - before) / 2**20
    return Row("50 MB bodies, no token", "Content-Length 50 MB (no body sent); a chunked body",
               f"{announced[9:12].decode()} at once; chunked: {answer[9:12].decode()} after {sent >> 10} KiB sent; "
               f"{seconds:.2f} s, peak RSS +{grown:.0f} MiB",
               announced.startswith(b"HTTP/1.1 413") and answer.startswith(b"HTTP/1.1 413") and sent < 4 << 20)


async def wrong_tokens(url: str, count: int) -> Row:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.6")) as attacker, \
            httpx.AsyncClient() as admin:
        answers = [(await attacker.get(url + "/tenants/globex", headers={"Authorization": f"Bearer guess-{n}"})
                    ).status_code for n in range(count)]
        await admin.get(url + "/tenants/globex", headers={"Authorization": f"Bearer {GLOBEX}"})  # remembered
        started = time.monotonic()
        for _ in range(20):
            assert (await admin.get(url + "/tenants/globex", headers={"Authorization": f"Bearer {GLOBEX}"})
                    ).status_code == 200
        good_ms = (time.monotonic() - started) * 1000 / 20
    return Row("wrong admin tokens (one source)", f"{count} guesses",
               f"{answers.count(401)} checked (401), {answers.count(429)} refused unchecked (429); the admin's "
               f"requests {good_ms:.1f} ms each", answers.count(429) >= count // 2 and good_ms < 50)


async def cross_tenant(url: str) -> Row:
    paths = ["/tenants/globex", "/tenants/globex/lines", "/tenants/globex/lines/desk", "/tenants/globex/calls",
             "/tenants/globex/call-records", "/tenants/globex/voices", "/tenants/globex/webhooks/deliveries",
             "/tenants/nosuch", "/calls", "/workers"]
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(url + p, headers={"Authorization": f"Bearer {ACME}"})).status_code
                    for p in paths]
    return Row("another tenant's token", f"acme's token on {len(paths)} of globex's and the operator's paths",
               f"statuses {sorted(set(statuses))}", all(s in (401, 403) for s in statuses))


async def bad_offers(url: str, plane: ControlPlane) -> Row:
    offers = ["hello", "v=0\r\n\x00\x01", "v=0\r\nm=video 9 RTP/AVP 96\r\n", "v=0\r\n" + "a=x\r\n" * 3000,
              "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\n"]
    admitted = plane.metrics.calls_admitted.labels(tenant="acme")._value.get()
    async with httpx.AsyncClient() as client:
        statuses = [(await client.post(url + "/tenants/acme/lines/support/whip", content=o.encode(),
                                       headers={"Authorization": f"Bearer {ACME}",
                                                "Content-Type": "application/sdp"})).status_code for o in offers]
    placed = plane.metrics.calls_admitted.labels(tenant="acme")._value.get() - admitted
    return Row("garbage WHIP offers", f"{len(offers)} offers", f"statuses {statuses}, {placed:g} calls placed",
               all(s in (400, 413) for s in statuses) and placed == 0)


async def silent_calls(url: str, worker: Worker) -> Row:
    async with httpx.AsyncClient() as client:  # one call of each tenant: one tenant is held to its fair share
        placed = [(await client.post(url + "/calls", json={"to": to, "from": "+15555550900"},
                                     headers={"Authorization": f"Bearer {token}"}))
                  for to, token in (("+15555550100", ACME), ("+15555550200", GLOBEX))]
        full = worker.free_slots
        await asyncio.sleep(FIRST_MEDIA_TIMEOUT + 1.0)
        call = placed[0].json()
        ended = (await client.get(url + f"/tenants/acme/calls/{call['call_id']}",
                                  headers={"Authorization": f"Bearer {ACME}"})).json()
    return Row("calls that never send audio", "2 calls placed with POST /calls (one a tenant), no media",
               f"free slots {full} -> {worker.free_slots} after {FIRST_MEDIA_TIMEOUT:g} s; reason: {ended.get('reason')}",
               worker.free_slots == 2 and "no audio" in str(ended.get("reason")))


async def place(client: httpx.AsyncClient, url: str, to: str, token: str) -> httpx.Response:
    return await client.post(url + "/calls", json={"to": to, "from": "+15555550900"},
                             headers={"Authorization": f"Bearer {token}"})


async def hang_up(client: httpx.AsyncClient, url: str, tenant: str, token: str, answers: list[httpx.Response]) -> None:
    for answer in answers:
        if answer.status_code == 201:
            await client.delete(url + f"/tenants/{tenant}/calls/{answer.json()['call_id']}",
                                headers={"Authorization": f"Bearer {token}"})


def local(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address))


async def tenant_burst(url: str, slots: int) -> Row:
    """acme's calls at once, more than the cluster has slots, from addresses of their own; then globex's."""
    async with local("127.0.0.9") as acme, local("127.0.0.10") as globex:
        burst = await asyncio.gather(*(place(acme, url, "+15555550100", ACME) for _ in range(slots + 2)))
        other = await place(globex, url, "+15555550200", GLOBEX)
        await hang_up(acme, url, "acme", ACME, list(burst))
        await hang_up(globex, url, "globex", GLOBEX, [other])
    statuses = sorted(r.status_code for r in burst)
    refused = [r for r in burst if r.status_code == 503]
    fair = all("fair share" in r.json()["detail"] and r.headers.get("Retry-After") for r in refused)
    return Row("one tenant's burst", f"acme: {len(burst)} POST /calls at once on {slots} slots, then globex: 1",
               f"acme {statuses.count(201)} admitted, {len(refused)} refused 503 (fair share); globex "
               f"{other.status_code}", statuses.count(201) == slots - 1 and fair and other.status_code == 201)


async def source_flood(url: str, attempts: int, per_minute: int) -> Row:
    """POST /calls one after another from one address (each admitted call hung up), then one from another."""
    async with local("127.0.0.7") as flooder, local("127.0.0.8") as elsewhere:
        flood = []
        for _ in range(attempts):
            flood.append(answer := await place(flooder, url, "+15555550200", GLOBEX))
            await hang_up(flooder, url, "globex", GLOBEX, [answer])
        other = await place(elsewhere, url, "+15555550200", GLOBEX)
        await hang_up(elsewhere, url, "globex", GLOBEX, [other])
    statuses = [r.status_code for r in flood]
    retry = flood[-1].headers.get("Retry-After")
    return Row("one source's flood", f"{attempts} POST /calls from one address, then 1 from another",
               f"{statuses.count(201)} admitted, {statuses.count(429)} refused 429 (Retry-After {retry}); "
               f"the other address {other.status_code}",
               statuses == [201] * per_minute + [429] * (attempts - per_minute) and other.status_code == 201)


async def yaml_bombs(root: Path, plane: ControlPlane, url: str) -> Row:
    (root / "globex" / "deep.yaml").write_text("answers: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "globex" / "aliases.yaml").write_text(
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n")
    (root / "globex" / "huge.yaml").write_text("# " + "x" * (5 << 20) + "\n")
    started = time.monotonic()
    await asyncio.to_thread(plane.store.reload)
    seconds = time.monotonic() - started
    async with httpx.AsyncClient() as client:
        served = (await client.get(url + "/tenants/acme/lines/support",
                                   headers={"Authorization": f"Bearer {ACME}"})).status_code
    problems = plane.store.catalog.problems.get("globex", ())
    return Row("YAML bombs in one tenant", "5000-deep nesting, an alias bomb, a 5 MB file",
               f"reload {seconds:.2f} s, {len(problems)} problems kept to globex, acme answers {served}",
               served == 200 and len(problems) == 3)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slowloris", type=int, default=300, help="connections that never finish their headers")
    parser.add_argument("--wrong-tokens", type=int, default=40, help="admin token guesses from one source")


async def run(args: argparse.Namespace) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="plexline-campaign-"))
    root = tenants(folder / "tenants")
    registry = MemoryRegistry()
    settings = Settings(personas_dir=root, operator_token=SecretStr(OPERATOR), worker_secret=SecretStr("w" * 32),
                        shutdown_grace=0, data_dir=folder / "data")
    listen = ListenSettings(host="127.0.0.1", http_port=0, http_header_timeout=1.0)
    worker = Worker(echo_model(2), worker_id="w1", address="http://127.0.0.1:9", version="campaign",
                    registry=registry, first_media_timeout=FIRST_MEDIA_TIMEOUT)
    plane = ControlPlane(settings, TenantStore(root), registry, LocalWorkerClient(worker, HttpWorkerClient("w" * 32)),
                         local_worker=worker)
    server = uvicorn.Server(server_config(create_embedded_app(plane, worker), listen))
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    attacks: list[Callable[[], Awaitable[Row]]] = [
        lambda: slowloris(url, "127.0.0.1", port, args.slowloris), lambda: huge_body("127.0.0.1", port),
        lambda: wrong_tokens(url, args.wrong_tokens), lambda: cross_tenant(url), lambda: bad_offers(url, plane),
        lambda: silent_calls(url, worker), lambda: tenant_burst(url, worker.free_slots),
        lambda: source_flood(url, settings.source_calls_per_minute + 10, settings.source_calls_per_minute),
        lambda: yaml_bombs(root, plane, url)]
    rows = []
    try:
        for attack in attacks:
            rows.append(await attack())
    finally:
        server.should_exit = True
        await task
        shutil.rmtree(folder, ignore_errors=True)
    return rows
