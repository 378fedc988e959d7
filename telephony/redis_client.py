"""Every Redis client of plexline (registry, outbox, call records) is made here, with deadlines.

A Redis that stops answering (its host gone, packets dropped, the process stopped) must fail an
operation, not hang it: a control plane would stop routing calls, a worker could not stop. So a
connection is given up after `timeout` seconds, and so is a command's send or its reply; a
connection idle for HEALTH_CHECK_SECONDS is PINGed before it is used again (a restarted Redis
dropped it), and TCP keepalive is on. A command whose connection was closed is sent again on a
new one, a few times; one that timed out is not (it may have run, and a script such as the
registry's reserve would then answer "duplicate"). redis-py's own defaults have changed between
versions (no timeouts at all before 8.0), hence all of them explicit.

A blocking read (the outbox's XREADGROUP BLOCK) is timed like any reply: it must ask Redis to wait
less than the client's timeout, `block_limit` says how long. Options in the URL
(`redis://host/0?socket_timeout=10`) override these.
"""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

TIMEOUT = 5.0  # seconds: connecting, sending a command, its reply
HEALTH_CHECK_SECONDS = 15
RECONNECTS = 3  # a command whose connection was closed: sent again up to this many times, 0.1 s to 1 s apart


def redis_client(url: str, timeout: float = TIMEOUT) -> redis.Redis:
    """A client that decodes replies (every plexline store reads strings)."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=timeout, socket_timeout=timeout,
        health_check_interval=HEALTH_CHECK_SECONDS, socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RECONNECTS, supported_errors=(RedisConnectionError,)))


def block_limit(client: redis.Redis) -> float | None:
    """The longest a blocking command of `client` may ask Redis to wait (None: no limit), seconds."""
    timeout = client.get_connection_kwargs().get("socket_timeout")
    return timeout / 2 if timeout else None


def redis_address(client: redis.Redis) -> str:
    """Where `client` connects, as a log line may say it: host:port/db or the socket's path, never
    the credentials of its URL."""
    kwargs = client.get_connection_kwargs()
    place = f"unix:{kwargs['path']}" if kwargs.get("path") else f"{kwargs.get('host')}:{kwargs.get('port')}"
    return f"{place}/{kwargs.get('db', 0)}"
