"""Stopping asyncio tasks for sure, as the control plane and the workers both do on their way out.

One cancellation can be lost: Python 3.11's `asyncio.wait_for` returns the result of what it
waits on when that is done by the time the cancellation arrives, so the task goes on as if never
cancelled (fixed in 3.12). redis-py sends every command through `wait_for` once it has a socket
timeout (redis/redis-py#2028), so a loop that talks to Redis, stopped with one `cancel()`, may run
for ever and whoever awaits it hangs: one stop in thirty of the webhook dispatcher's, claiming
every 0.1 s from a local Redis, never returned.
"""

from __future__ import annotations

import asyncio

RECANCEL_SECONDS = 0.5


async def cancel_and_wait(*tasks: asyncio.Task, again_after: float = RECANCEL_SECONDS) -> None:
    """Cancel the tasks, again every `again_after` seconds while any still runs, until all have
    ended (a task with last words to say when cancelled needs `again_after` longer than they take).
    What they raised is theirs (read it from the tasks); nothing is raised here."""
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=again_after)
