"""Headless Chromium driven over the DevTools protocol: open a page, run JavaScript in it, read the results."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import websockets

from bench.processes import child

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain",
]


class JavaScriptError(Exception):
    pass


class Page:
    def __init__(self, socket: websockets.ClientConnection, devtools: str):
        self._socket = socket
        self._ids = itertools.count(1)
        self.devtools = devtools  # the browser's DevTools HTTP address, for more tabs

    @asynccontextmanager
    async def new_tab(self) -> AsyncIterator[Page]:
        """Another tab of the same browser (same profile), closed on exit."""
        async with httpx.AsyncClient() as client:
            target = (await client.put(f"{self.devtools}/json/new?about:blank")).json()
        try:
            async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
                yield Page(socket, self.devtools)
        finally:
            async with httpx.AsyncClient() as client:
                await client.get(f"{self.devtools}/json/close/{target['id']}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self._socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise JavaScriptError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` (awaited if it is a promise), as JSON."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True, userGesture=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise JavaScriptError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, interval: float = 0.1) -> Any:
        """Evaluate until the value is truthy; returns it (or the last falsy value after `timeout`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value or loop.time() > deadline:
                return value
            await asyncio.sleep(interval)


@asynccontextmanager
async def chromium(profile: Path, fake_microphone: Path, log: Path) -> AsyncIterator[Page]:
    """A headless Chromium whose microphone plays `fake_microphone` (a WAV, looped); its one page."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise RuntimeError("chromium is not installed: scripts/test.sh installs it (Debian package chromium)")
    with child([executable, *FLAGS, f"--use-file-for-fake-audio-capture={fake_microphone}",
                f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"], log, grace=10) as process:
        port = await _devtools_port(profile, process, log)
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            yield Page(socket, f"http://127.0.0.1:{port}")


async def _devtools_port(profile: Path, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> int:
    """Chromium writes the port it chose to DevToolsActivePort in its profile folder."""
    active = profile / "DevToolsActivePort"
    for _ in range(int(timeout / 0.1)):
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if active.exists() and active.read_text().strip():
            return int(active.read_text().split()[0])
        await asyncio.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port in {timeout} s:\n{log.read_text()[-3000:]}")
