"""A real redis-server of a test's own on loopback, returned once it answers PING."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def start_redis(folder: Path, port: int, *options: str) -> subprocess.Popen:
    """No snapshots; its files and log in `folder`; `options` are redis-server's (`--appendonly`, `yes`)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: scripts/test.sh installs it (Debian package redis-server)")
    server = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(folder),
         "--logfile", str(folder / "redis.log"), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_pong(port, server)
    return server


def _wait_for_pong(port: int, server: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"redis-server exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    server.kill()
    server.wait()
    pytest.fail(f"redis-server did not answer PING within {timeout:g} s")
