"""`plexline drain`: tell a worker to take no new calls and wait until its calls have ended.

It is the worker's preStop hook in Kubernetes (deploy/kubernetes): the pod stops only after its
calls end by themselves, so a rolling upgrade or a scale-down never cuts a call. The worker stays
fully up meanwhile (hang-ups, media, its heartbeat); its readiness turns false at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def drain(client: httpx.Client, wait: float, poll: float = 1.0, say: Callable[[str], None] = print) -> int:
    """Drain the worker `client` talks to (its base URL and secret set); returns the calls left after
    `wait` seconds at most (0: it is idle and may stop)."""
    client.put("/worker/draining", json={"draining": True}).raise_for_status()
    deadline = time.monotonic() + wait
    reported = None
    while True:
        response = client.get("/worker/sessions")
        response.raise_for_status()
        left = len(response.json())
        if left != reported:
            say(f"plexline drain: {left} call(s) in progress")
            reported = left
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
