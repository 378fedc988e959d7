"""Media-stream calls: the carrier's signed webhook gets TwiML, then streams the call over a WebSocket.

The service runs as `plexline serve` does (control plane and echo worker in one app) under uvicorn
on loopback; the carrier is played by httpx and a `websockets` client sending what Twilio sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import uvicorn
import websockets
from pydantic import SecretStr

from agent.media.media_stream import StreamMessage
from agent.worker import Worker, echo_model
from bench.echo_latency import echo_lag, speech_8k
from personas.store import TenantStore
from plexline.embedded import LocalWorkerClient, create_embedded_app
from plexline.http_server import server_config
from plexline.settings import ListenSettings
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.settings import Settings
from telephony.control.twiml import stream_url, twilio_signature
from telephony.control.worker_client import HttpWorkerClient

pytestmark = pytest.mark.anyio
TOKEN = "carrier-auth-token-0123456789"
PERSONA = "persona:\n  role: You answer the phone.\n  voice: NATF2\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def base_url(tmp_path: Path):
    root = tmp_path / "tenants"
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "tenant.yaml").write_text(
        f'name: Acme\naddresses: ["+15555550100", "+15555550101"]\nmedia_streams: {{auth_token: {TOKEN}}}\n')
    (root / "acme" / "support.yaml").write_text('answers: ["+15555550100"]\n' + PERSONA)
    port = free_port()
    registry = MemoryRegistry()
    settings = Settings(personas_dir=root, operator_token=SecretStr("o" * 32), worker_secret=SecretStr("w" * 32),
                        shutdown_grace=0)
    worker = Worker(echo_model(2), worker_id="w1", address=f"http://127.0.0.1:{port}", version="test",
                    registry=registry)
    plane = ControlPlane(settings, TenantStore(root), registry, LocalWorkerClient(worker, HttpWorkerClient("w" * 32)),
                         local_worker=worker)
    listen = ListenSettings(host="127.0.0.1", http_port=port)
    server = uvicorn.Server(server_config(create_embedded_app(plane, worker), listen))  # as `plexline serve` runs it
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def call_webhook(base_url: str, to: str, token: str = TOKEN) -> httpx.Response:
    form = {"CallSid": "CA123", "AccountSid": "AC1", "From": "+15555550999", "To": to, "CallStatus": "ringing"}
    url = base_url + "/twilio/voice"
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers={"X-Twilio-Signature": twilio_signature(token, url, form)})


def mulaw_chunks(pcm: np.ndarray) -> list[str]:
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.format, codec.layout, codec.sample_rate = "s16", "mono", 8000
    chunks = []
    for i in range(pcm.size // 160):
        frame = av.AudioFrame.from_ndarray(pcm[None, i * 160:(i + 1) * 160], format="s16", layout="mono")
        frame.sample_rate = 8000
        chunks.append(base64.b64encode(b"".join(bytes(p) for p in codec.encode(frame))).decode())
    return chunks


def decode(payloads: list[str]) -> np.ndarray:
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.format, codec.layout, codec.sample_rate = "s16", "mono", 8000
    return np.concatenate([f.to_ndarray().reshape(-1) for p in payloads
                           for f in codec.decode(av.Packet(base64.b64decode(p)))])


async def test_a_streamed_call_gets_twiml_then_hears_its_speech_back(base_url):
    answer = await call_webhook(base_url, "+15555550100")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
    url = re.search(r'<Stream url="([^"]+)">', answer.text)[1]
    token = re.search(r'<Parameter name="token" value="([^"]+)"/>', answer.text)[1]
    assert url.startswith("ws://127.0.0.1:") and "/worker/streams/" in url
    pcm = speech_8k(3.0)
    received: list[dict] = []
    async with websockets.connect(url) as ws:
        async def listen():
            async for text in ws:
                received.append(json.loads(text))

        listener = asyncio.ensure_future(listen())
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
            "streamSid": "MZ1", "callSid": "CA123", "tracks": ["inbound"], "customParameters": {"token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, chunk in enumerate(mulaw_chunks(pcm)):
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(i + 2), "streamSid": "MZ1", "media": {
                "track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20), "payload": chunk}}))
            if i == 50:
                await ws.send(json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track",
                                                                                          "digit": "5"}}))
        await asyncio.sleep(0.5)
        await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA123"}}))
        await asyncio.wait_for(listener, 5)  # the worker closes the stream when the call ends
    media = [m for m in received if m["event"] == "media"]
    assert {m["streamSid"] for m in media} == {"MZ1"}
    assert len(media) >= 3 * 50
    lag, peak = echo_lag(pcm, decode([m["media"]["payload"] for m in media]))
    assert 0.1 <= lag <= 0.45 and peak > 0.5, (lag, peak)


async def test_unsigned_or_unknown_calls_are_refused(base_url):
    assert (await call_webhook(base_url, "+15555550100", token="wrong-token-wrong-token")).status_code == 403
    assert (await call_webhook(base_url, "+15555550101")).status_code == 403  # no line answers it


async def test_a_stream_without_the_calls_token_is_closed(base_url):
    answer = await call_webhook(base_url, "+15555550100")
    url = re.search(r'<Stream url="([^"]+)">', answer.text)[1]
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"event": "start", "streamSid": "MZ2", "start": {"customParameters": {"token": "x"}}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 1008


def start_message(token: object, media_format: object = None) -> str:
    start = {"streamSid": "MZ3", "customParameters": token if not isinstance(token, str) else {"token": token}}
    if media_format is not None:
        start["mediaFormat"] = media_format
    return json.dumps({"event": "start", "streamSid": "MZ3", "start": start})


@pytest.mark.parametrize("first,code", [
    (b"\x00" * (1 << 20), 1009),  # a megabyte before the token was checked: refused, not buffered
    ("x" * (1 << 20), 1009),
    (start_message(["not", "a", "mapping"]), 1008),
    (start_message("x", media_format="mulaw"), 1008),
    (b"binary start", 1008),
])
async def test_a_stream_that_does_not_begin_with_a_valid_start_is_closed_cleanly(base_url, first, code):
    answer = await call_webhook(base_url, "+15555550100")
    url = re.search(r'<Stream url="([^"]+)">', answer.text)[1]
    async with websockets.connect(url, max_size=None) as ws:
        try:
            await ws.send(first)
        except websockets.ConnectionClosed:
            pass
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_bad_frames_during_a_call_are_ignored_and_the_call_goes_on(base_url):
    answer = await call_webhook(base_url, "+15555550100")
    url = re.search(r'<Stream url="([^"]+)">', answer.text)[1]
    token = re.search(r'<Parameter name="token" value="([^"]+)"/>', answer.text)[1]
    chunks = mulaw_chunks(speech_8k(2.0))
    hostile = [json.dumps({"event": "media", "media": ["payload"]}),
               json.dumps({"event": "media", "media": {"payload": "", "timestamp": "0"}}),
               json.dumps({"event": "media", "media": {"payload": chunks[0], "timestamp": 1e30}}),
               json.dumps({"event": "media", "media": {"payload": chunks[0], "timestamp": "-5"}}),
               json.dumps({"event": "media", "media": {"payload": chunks[0], "track": ["inbound"]}}),
               json.dumps({"event": "dtmf", "dtmf": "5"}), json.dumps({"event": "dtmf", "dtmf": {"digit": ["5"]}}),
               json.dumps({"event": "mark", "mark": 7}), b"\x80\x00binary", "[]", "null"]
    received: list[dict] = []
    async with websockets.connect(url) as ws:
        async def listen():
            async for text in ws:
                received.append(json.loads(text))

        listener = asyncio.ensure_future(listen())
        await ws.send(start_message(token))
        for i, chunk in enumerate(chunks):
            await ws.send(json.dumps({"event": "media", "media": {"timestamp": str(i * 20), "payload": chunk}}))
            if i == 20:
                for frame in hostile:
                    await ws.send(frame)
            await asyncio.sleep(0.02)
        heard_before_stop = len(received)
        await ws.send(json.dumps({"event": "stop"}))
        await asyncio.wait_for(listener, 5)
    assert heard_before_stop >= 80  # the agent kept speaking after the bad frames (2 s of 20 ms packets)


def test_messages_and_urls():
    message = StreamMessage.parse('{"event": "media", "media": {"payload": "AAEC", "timestamp": "40"}}')
    assert (message.media_payload(), message.media_timestamp()) == (b"\x00\x01\x02", 40)
    for bad, reason in (("[]", "unknown event"), ('{"event": "nope"}', "unknown event 'nope'"), ("{", "not JSON"),
                        ('{"event": "media", "media": {"payload": "!!"}}', "not base64")):
        with pytest.raises(ValueError, match=reason):
            StreamMessage.parse(bad).media_payload()
    assert stream_url("https://w1.example:8443/", "c1") == "wss://w1.example:8443/worker/streams/c1"
    assert stream_url("http://10.0.0.5:8081", "c1") == "ws://10.0.0.5:8081/worker/streams/c1"
