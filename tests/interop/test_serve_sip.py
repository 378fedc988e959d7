"""End to end: `plexline serve` on the tiny dummy model answers a sipp call with its own audio over RTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sip_service import (
    LoopbackCapture,
    free_udp_port,
    run_sipp,
    speech,
    write_rtp_pcap,
    write_tenants,
)
from test_sipp import capturing, check_stream, mulaw, rtp_to

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parents[2]


async def test_plexline_serve_on_the_dummy_model_answers_a_sip_call(tmp_path):
    http, sip = free_udp_port(), free_udp_port()
    env = os.environ | {"PLEXLINE_OPERATOR_TOKEN": "o" * 32, "PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_REDIS_URL": "",
                        "PLEXLINE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "plexline", "-v", "serve", "--model", "dummy", "--slots", "1",
                                  "--http-port", str(http), "--sip-port", str(sip),
                                  "--personas", str(write_tenants(tmp_path / "tenants"))],
                                 cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        await _wait_up(f"http://127.0.0.1:{http}", serve, log)
        pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech(4.0))
        media_port = free_udp_port(pair=True)
        capture = LoopbackCapture()
        run = await capturing(capture, run_sipp(sip, "uac_pcap.xml", tmp_path / "sipp", "+15555550100",
                                                media_port=media_port,
                                                substitutions={"PCAP_FILE": pcap, "TALK_MS": 4600}))
        run.check()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    returned = rtp_to(capture.packets, media_port)
    assert len(returned) >= 4 * 50
    check_stream(returned)
    audio = mulaw([p.payload for _, p, _ in returned]).astype(np.float64)
    # The model's delay fills with silence; then the random-weight model speaks (noise, but sound).
    assert np.sqrt(np.mean(audio[-2 * 8000:] ** 2)) > 100, log.read_text()[-3000:]
    assert "call ended" in log.read_text() and "the caller hung up" in log.read_text()


async def _wait_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"plexline serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if (await client.get(url + "/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"plexline serve did not come up:\n{log.read_text()}")


async def test_the_readmes_first_call_plexline_serve_with_echo_then_sipp(tmp_path):
    """As the README has a newcomer do it: default ports, the example tenant, sipp's built-in caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXLINE_")} | {
        "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "PLEXLINE_SHUTDOWN_GRACE": "0"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "plexline", "serve", "--model", "echo"], cwd=ROOT, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        await _wait_up("http://127.0.0.1:8080", serve, log)
        said = log.read_text()
        assert "acme/support: sip:+15555550100@127.0.0.1:5060" in said, said
        token = said.split("operator token for this run: ")[1].split()[0]
        sipp = await asyncio.create_subprocess_exec(
            "sipp", "-sn", "uac", "-s", "+15555550100", "-i", "127.0.0.1", "-m", "1", "127.0.0.1:5060",
            "-nostdin", "-timeout", "30s", "-timeout_error", cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(sipp.communicate(), 40)
        assert sipp.returncode == 0, output.decode(errors="replace")[-2000:]
        async with httpx.AsyncClient(base_url="http://127.0.0.1:8080",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(100):
                records = (await client.get("/tenants/acme/call-records")).json()
                if records:
                    break
                await asyncio.sleep(0.1)
        assert [(r["to"], r["outcome"]) for r in records] == [("+15555550100", "caller_hung_up")]
    finally:
        serve.terminate()
        serve.wait(timeout=30)
