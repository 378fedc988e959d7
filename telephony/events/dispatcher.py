"""Delivering the outbox: claim due events, send each to its tenant's webhook, record how it went.

Every control plane runs one dispatcher; in distributed mode they share the Redis outbox, so
they share the work. An attempt that fails is retried with exponential backoff and jitter
(see `RetryPolicy`, and a receiver's Retry-After) until `max_age` after the event was made,
then dead-lettered; `410 Gone` dead-letters at once, as Standard Webhooks advises. A tenant
without a webhook (or no longer known) has its events dropped. The tenant's webhook settings
are read at each attempt, so a fixed URL or a rotated secret applies to the retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from agent.contracts.errors import describe
from agent.contracts.tasks import cancel_and_wait
from personas.tenant import Webhook
from telephony.events.outbox import Claim, Outbox, RetryPolicy
from telephony.events.webhook_client import Attempt, WebhookClient

log = logging.getLogger(__name__)

DELAY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

WebhookOf = Callable[[str], Webhook | None]  # a tenant id -> its webhook now, if any


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.attempts = Counter("plexline_webhook_attempts", "Webhook attempts by result (delivered, failed)",
                                ["tenant", "result"], registry=registry)
        self.dead = Counter("plexline_webhook_dead_letters", "Events given up on", ["tenant"], registry=registry)
        self.first_attempt = Histogram("plexline_webhook_first_attempt_seconds",
                                       "From an event's making to its first attempt", buckets=DELAY_BUCKETS,
                                       registry=registry)


class WebhookDispatcher:
    def __init__(self, outbox: Outbox, webhook_of: WebhookOf, client: WebhookClient, policy: RetryPolicy,
                 concurrency: int = 32, metrics: WebhookMetrics | None = None, claim_wait: float = 1.0):
        """`claim_wait`: the longest a claim waits (a retry due sooner than that may wait that long)."""
        self.outbox = outbox
        self.webhook_of = webhook_of
        self.client = client
        self.policy = policy
        self.concurrency = concurrency
        self.metrics = metrics or WebhookMetrics(CollectorRegistry())
        self.claim_wait = claim_wait
        self._loop: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run(), name="webhook-dispatcher")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let attempts in flight finish for `grace` seconds (the rest are retried later)."""
        if self._loop is not None:
            await cancel_and_wait(self._loop)
            self._loop = None
        if self._deliveries:
            _, late = await asyncio.wait(list(self._deliveries), timeout=grace)
            await cancel_and_wait(*late)

    async def _run(self) -> None:
        failures = 0
        while True:
            if len(self._deliveries) >= self.concurrency:
                await asyncio.wait(list(self._deliveries), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claims = await self.outbox.claim(self.concurrency - len(self._deliveries), self.claim_wait)
                failures = 0
            except Exception as error:  # the outbox (Redis) is unreachable: keep trying
                failures += 1
                log.warning("cannot claim webhook events", extra={"error": describe(error)})
                await asyncio.sleep(min(0.2 * 2 ** failures, 5.0))
                continue
            for claim in claims:
                task = asyncio.get_running_loop().create_task(self._deliver(claim), name=f"webhook-{claim.event.id}")
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, claim: Claim) -> None:
        event, now = claim.event, time.time()
        if claim.attempts == 0:
            self.metrics.first_attempt.observe(max(0.0, now - claim.created_at))
        webhook = self.webhook_of(event.tenant)
        try:
            if webhook is None:
                log.info("webhook event dropped: the tenant has no webhook", extra={"tenant": event.tenant,
                                                                                  "event": event.id})
                await self.outbox.delivered(claim)
                return
            attempt = await self.client.send(webhook, event.id, event.body)
            await self._record(claim, attempt)
        except Exception as error:  # the outbox could not be told: the lease runs out, it is tried again
            log.warning("webhook outcome not recorded", extra={"event": event.id, "error": describe(error)})

    async def _record(self, claim: Claim, attempt: Attempt) -> None:
        event = claim.event
        if attempt.delivered:
            self.metrics.attempts.labels(event.tenant, "delivered").inc()
            await self.outbox.delivered(claim, attempt.status)
            return
        self.metrics.attempts.labels(event.tenant, "failed").inc()
        attempts = claim.attempts + 1
        due = time.time() + self.policy.delay(attempts, attempt.retry_after)
        if attempt.status == 410 or due > claim.created_at + self.policy.max_age:
            why = "the receiver answered 410 Gone" if attempt.status == 410 else \
                f"{attempt.error} (attempt {attempts}; no retry within {self.policy.max_age:g} s of the event)"
            log.warning("webhook event dead-lettered", extra={"tenant": event.tenant, "event": event.id, "why": why})
            self.metrics.dead.labels(event.tenant).inc()
            await self.outbox.dead_letter(claim, why)
            return
        log.info("webhook attempt failed", extra={"tenant": event.tenant, "event": event.id, "attempt": attempts,
                                                  "error": attempt.error, "retry_in_s": round(due - time.time(), 2)})
        await self.outbox.retry_later(claim, due, attempt.error)
